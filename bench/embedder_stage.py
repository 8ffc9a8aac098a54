"""Embedder stage against the bare model forward, at batch 1, 16, 64 and 128, in one run.

Contenders per batch size B, interleaved per repeat, one torch thread (as the pipeline runs the embedder):
  forward       net(x) on a B-face tensor already normalized and channels-last: the raw component;
  forward_flip  net(x) and net(flip(x)): the same arithmetic as the checkpoint asks for when it averages
                each face with its mirror image (flip_average); only when the checkpoint does;
  embed         EmbeddingModel.embed(): normalize, forward(s), L2-normalize (the model API);
  batch_fn      the stage's real batch function: decode B crop JPEGs, embed, msgpack B outputs.
Then `loop`: the batch function through the real shared loop on the broker, at 32 frames per batch.
Ratios are the raw contender's time over the stage's for the same faces.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from bench.common import Settings, interleaved, ratio, stats
from bench.inputs import aligned_crop_sets, crop_jpegs, frame_faces, model_crops, take
from bench.kafka_util import Topics
from bench.loop_runner import LoopRig
from shared.stage import Stage
from shared.schemas import FrameFaces

BATCHES = (1, 16, 64, 128)
QUICK_BATCHES = (1, 16)  # batch 64 and 128 cost costs ~15 s a round on this loaded 2-core machine
LOOP_BATCH = 32


def _process(model, topic: str, batch: int):
    from services.embedder.stage import make_process

    sizes = [t.size for t in model.inputs] if model.fused else model.input_size
    return make_process(lambda c: model.embed(c, batch_size=batch), sizes, model.model_version, topic)


def net_forward(model, x, flip: bool = False) -> None:
    """The bare network on prepared input: a fused pair runs both towers (and their mirrors with `flip`)."""
    if model.fused:
        model.net(x, flip=flip)
    else:
        model.net(x)
        if flip:
            model.net(torch.flip(x, dims=[3]))


def jpeg_sets(sets: tuple[np.ndarray, ...]) -> list[list[bytes]]:
    return [crop_jpegs(c) for c in sets]


def frames_of(jsets: list[list[bytes]], idx, n_frames: int, cams: list[str], start_seq: int = 0):
    """Frames of one face each, every tower's crop JPEG on the face (faces/v3 more_crops)."""
    main = [jsets[0][i % len(jsets[0])] for i in idx]
    more = [jsets[1][i % len(jsets[1])] for i in idx] if len(jsets) > 1 else None
    return frame_faces(main, n_frames, 1, cams, start_seq, more_jpegs=more)


def run(settings: Settings, detector, model) -> dict[str, Any]:
    torch.set_num_threads(1)
    repeats = 1 if settings.quick else 3
    work = 8 if settings.quick else 32  # faces per measurement at least: batch 1 runs `work` calls
    sets = aligned_crop_sets(detector)
    jsets = jpeg_sets(sets)
    results: dict[str, Any] = {}
    batches = QUICK_BATCHES if settings.quick else BATCHES
    for b in batches:
        calls = max(1, work // b)
        idx = np.arange(b) % len(sets[0])
        batch_crops = model_crops(model, take(sets, idx))
        x = model_input(model, batch_crops)
        frames = frames_of(jsets, idx, b, [f"bench-cam-{i}" for i in range(4)])
        process = _process(model, "unused", b)

        def forward() -> None:
            with torch.inference_mode():
                for _ in range(calls):
                    net_forward(model, x)

        def forward_flip() -> None:
            with torch.inference_mode():
                for _ in range(calls):
                    net_forward(model, x, flip=True)

        def embed() -> None:
            for _ in range(calls):
                model.embed(batch_crops, batch_size=b)

        def batch_fn() -> None:
            for _ in range(calls):
                process(frames)

        contenders = {"forward": forward, "embed": embed, "batch_fn": batch_fn}
        if model.flip_average:
            contenders["forward_flip"] = forward_flip
        with torch.inference_mode():  # warm-up of this shape (oneDNN makes its kernels per shape)
            net_forward(model, x)
        model.embed(batch_crops, batch_size=b)
        times = interleaved(contenders, repeats, warmup=False)
        faces = calls * b
        results[str(b)] = {
            "faces_per_repeat": faces,
            "faces_per_s": {k: faces / stats(v)["median"] for k, v in times.items()},
            "ms_per_batch": {k: stats([t / calls * 1000 for t in v]) for k, v in times.items()},
            "ratio_to_forward": {k: ratio(times["forward"], times[k]) for k in contenders if k != "forward"},
            "ratio_to_same_work": ratio(times.get("forward_flip", times["forward"]), times["batch_fn"]),
        }
    loop = _loop(settings, model, jsets, sets, repeats)
    return {
        "config": {"batches": list(batches), "repeats": repeats, "min_faces_per_measurement": work,
                   "torch_threads": 1, "flip_average": model.flip_average, "device": str(model.device),
                   "towers": len(sets), "crop_jpeg_bytes_mean": float(np.mean([sum(len(j[i]) for j in jsets)
                                                                            for i in range(len(jsets[0]))]))},
        "method": "contenders interleaved per repeat after one warm-up call per batch shape; faces/s from the "
                  "median repeat time; ratio = median over repeats of raw time / stage time (same faces). "
                  "ratio_to_same_work compares the stage to forward_flip (both forwards the checkpoint asks for)",
        "raw_component": "forward",
        "by_batch": results,
        "loop": loop,
    }


def model_input(model, crops):
    """Crops normalized and laid out exactly as EmbeddingModel.embed feeds the network (a list, one
    batch per tower, for a fused pair)."""
    from shared.vision.pixels import to_input

    if model.fused:
        return [to_input(np.ascontiguousarray(c), t.mean, t.std).contiguous(memory_format=torch.channels_last)
                for c, t in zip(crops, model.inputs)]
    x = to_input(np.ascontiguousarray(crops), model.input_mean, model.input_std)
    return x.contiguous(memory_format=torch.channels_last)


def _loop(settings: Settings, model, jsets: list[list[bytes]], sets, repeats: int) -> dict[str, Any]:
    """The batch function through the shared loop, beside the bare forward of the same faces."""
    n = LOOP_BATCH if settings.quick else 2 * LOOP_BATCH
    with Topics(settings.kafka) as topics:
        faces_topic, emb_topic = topics.make("bench-emb-faces", 1), topics.make("bench-emb-out", 1)
        stage = Stage("embedder", faces_topic, FrameFaces.decode, _process(model, emb_topic, LOOP_BATCH))
        rig = LoopRig(settings.kafka, stage, max_batch_size=LOOP_BATCH)
        seq = [0]
        crops_x = model_input(model, model_crops(model, take(sets, np.arange(LOOP_BATCH) % len(sets[0]))))

        def loop() -> float:
            frames = frames_of(jsets, np.arange(n), n, ["bench-cam"], seq[0])
            seq[0] += n
            return rig.run([f.encode() for f in frames], [f.camera_id.encode() for f in frames])

        def forward() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for _ in range(n // LOOP_BATCH):
                    net_forward(model, crops_x, flip=model.flip_average)
            return time.perf_counter() - t0

        try:
            times = interleaved({"forward_same_work": forward, "loop": loop}, repeats)
        finally:
            rig.close()
    return {"frames": n, "faces_per_frame": 1, "max_batch_size": LOOP_BATCH,
            "faces_per_s": {k: n / stats(v)["median"] for k, v in times.items()},
            "ratio_to_same_work": ratio(times["forward_same_work"], times["loop"])}


def profile_target(settings: Settings, detector, model, batch: int = 32):
    jsets = jpeg_sets(aligned_crop_sets(detector))
    frames = frames_of(jsets, np.arange(batch), batch, ["bench-cam"])
    process = _process(model, "unused", batch)
    return lambda: process(frames)
