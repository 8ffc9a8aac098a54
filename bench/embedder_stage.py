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
from bench.inputs import aligned_crops, crop_jpegs, frame_faces
from bench.kafka_util import Topics
from bench.loop_runner import LoopRig
from shared.stage import Stage
from shared.schemas import FrameFaces

BATCHES = (1, 16, 64, 128)
QUICK_BATCHES = (1, 16)  # batch 64 and 128 cost costs ~15 s a round on this loaded 2-core machine
LOOP_BATCH = 32


def _process(model, topic: str, batch: int):
    from services.embedder.stage import make_process

    return make_process(lambda c: model.embed(c, batch_size=batch), model.input_size, model.model_version, topic)


def run(settings: Settings, detector, model) -> dict[str, Any]:
    torch.set_num_threads(1)
    repeats = 1 if settings.quick else 3
    work = 8 if settings.quick else 32  # faces per measurement at least: batch 1 runs `work` calls
    crops = aligned_crops(detector)
    jpegs = crop_jpegs(crops)
    results: dict[str, Any] = {}
    batches = QUICK_BATCHES if settings.quick else BATCHES
    for b in batches:
        calls = max(1, work // b)
        idx = np.arange(b) % len(crops)
        batch_crops = crops[idx]
        x = model_input(model, batch_crops)
        frames = frame_faces([jpegs[i] for i in idx], b, 1, [f"bench-cam-{i}" for i in range(4)])
        process = _process(model, "unused", b)

        def forward() -> None:
            with torch.inference_mode():
                for _ in range(calls):
                    model.net(x)

        def forward_flip() -> None:
            with torch.inference_mode():
                for _ in range(calls):
                    model.net(x), model.net(torch.flip(x, dims=[3]))

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
            model.net(x)
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
    loop = _loop(settings, model, jpegs, repeats)
    return {
        "config": {"batches": list(batches), "repeats": repeats, "min_faces_per_measurement": work,
                   "torch_threads": 1, "flip_average": model.flip_average, "device": str(model.device),
                   "crop_jpeg_bytes_mean": float(np.mean([len(j) for j in jpegs]))},
        "method": "contenders interleaved per repeat after one warm-up call per batch shape; faces/s from the "
                  "median repeat time; ratio = median over repeats of raw time / stage time (same faces). "
                  "ratio_to_same_work compares the stage to forward_flip (both forwards the checkpoint asks for)",
        "raw_component": "forward",
        "by_batch": results,
        "loop": loop,
    }


def model_input(model, crops: np.ndarray) -> torch.Tensor:
    """Crops normalized and laid out exactly as EmbeddingModel.embed feeds the network."""
    from shared.vision.pixels import to_input

    x = to_input(np.ascontiguousarray(crops), model.input_mean, model.input_std)
    return x.contiguous(memory_format=torch.channels_last)


def _loop(settings: Settings, model, jpegs: list[bytes], repeats: int) -> dict[str, Any]:
    """The batch function through the shared loop, beside the bare forward of the same faces."""
    n = LOOP_BATCH if settings.quick else 2 * LOOP_BATCH
    with Topics(settings.kafka) as topics:
        faces_topic, emb_topic = topics.make("bench-emb-faces", 1), topics.make("bench-emb-out", 1)
        stage = Stage("embedder", faces_topic, FrameFaces.decode, _process(model, emb_topic, LOOP_BATCH))
        rig = LoopRig(settings.kafka, stage, max_batch_size=LOOP_BATCH)
        seq = [0]
        from services.embedder.stage import decode_crop

        crops_x = model_input(model, np.stack([decode_crop(jpegs[i % len(jpegs)], model.input_size)
                                               for i in range(LOOP_BATCH)]))

        def loop() -> float:
            frames = frame_faces(jpegs, n, 1, ["bench-cam"], seq[0])
            seq[0] += n
            return rig.run([f.encode() for f in frames], [f.camera_id.encode() for f in frames])

        def forward() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for _ in range(n // LOOP_BATCH):
                    model.net(crops_x)
                    if model.flip_average:
                        model.net(torch.flip(crops_x, dims=[3]))
            return time.perf_counter() - t0

        try:
            times = interleaved({"forward_same_work": forward, "loop": loop}, repeats)
        finally:
            rig.close()
    return {"frames": n, "faces_per_frame": 1, "max_batch_size": LOOP_BATCH,
            "faces_per_s": {k: n / stats(v)["median"] for k, v in times.items()},
            "ratio_to_same_work": ratio(times["forward_same_work"], times["loop"])}


def profile_target(settings: Settings, detector, model, batch: int = 32):
    crops = aligned_crops(detector)
    jpegs = crop_jpegs(crops)
    frames = frame_faces(jpegs, batch, 1, ["bench-cam"])
    process = _process(model, "unused", batch)
    return lambda: process(frames)
