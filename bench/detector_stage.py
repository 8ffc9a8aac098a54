"""Detector stage against MTCNN alone, on the same decoded frames, in one run.

Contenders, interleaved per repeat, one torch thread each (as the service runs, `--threads 1`):
  mtcnn         the shipped MTCNN driver (shared/vision/mtcnn.py) on frames already decoded, one by one:
                the raw component;
  mtcnn_batch   the same, all frames in one call;
  baseline      what the detector was before: facenet-pytorch's MTCNN, then the whole cascade again on each
                aligned crop (refine="cascade", runtime="facenet");
  detect_align  FaceDetector.detect() as shipped: MTCNN, ONet's landmark refinement, alignment to every
                template, the blur measure (the pure vision part);
  batch_fn      the stage's real batch function (make_process): JPEG decode, detect, align, gate, crop
                JPEG encode, msgpack, in batches of the service's max_batch_size;
  loop          the same through the real shared loop on the broker: consume, decode, process, produce
                (acks=all), commit.
The ratio of a contender is MTCNN's time over its time for the same frames (1.0: no overhead);
`loop_ratio` is the loop's, `speedup_vs_baseline` the baseline's time over detect_align's.

`motion` (bench/detector_stage.motion): the batch function with motion gating on and off over footage with
still periods, made from the 640x360 clip at 5 fps by holding one frame for 6 s after every 3 s of motion,
each held copy with fresh sensor noise (Gaussian, sigma 2 grey levels) before its JPEG encoding, as a
still camera sends it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator

import numpy as np
import torch

from bench.common import Settings, interleaved, ratio, stats
from bench.inputs import frame_messages, video_frames
from bench.kafka_util import Topics
from bench.loop_runner import LoopRig
from shared.stage import Stage
from shared.schemas import Frame

SIZE = "640x360"  # what the pipeline benchmark feeds (ingest --max-width 640)
BATCH = 16  # the detector service's default max_batch_size


def make_stage(detector, faces_topic: str, frames_topic: str):
    """The detector service's batch function with its default gates; stale dropping and load shedding off
    (frames are timestamped when the benchmark makes them, and every frame is to be detected here: the
    detector under overload is bench/overload.py)."""
    from services.detector.stage import Gates, make_process

    process = make_process(detector.detect, Gates(40, 0.95, 15.0, 32), faces_topic, max_frame_age_s=0,
                           newest_only=False, detect_many=detector.detect_many)
    return process, Stage("detector", frames_topic, Frame.decode, process)


def run(settings: Settings, detector) -> dict[str, Any]:
    from shared.vision.detect import FaceDetector

    torch.set_num_threads(1)
    baseline_det = FaceDetector(detector.templates, min_face_size=detector.min_face_size, refine="cascade",
                                runtime="facenet")
    n = 4 if settings.quick else 8
    repeats = 2 if settings.quick else 5
    frames = video_frames(SIZE, n)
    with Topics(settings.kafka) as topics:
        frames_topic, faces_topic = topics.make("bench-det-frames", 1), topics.make("bench-det-faces", 1)
        process, stage = make_stage(detector, faces_topic, frames_topic)
        rig = LoopRig(settings.kafka, stage, max_batch_size=BATCH)
        seq = [0]

        def fresh() -> list[Frame]:
            msgs = frame_messages(frames, "bench-cam", seq[0])
            seq[0] += len(msgs)
            return msgs

        rgbs = [np.ascontiguousarray(f.rgb) for f in frames]

        def mtcnn() -> None:
            for rgb in rgbs:
                detector.mtcnn.detect([rgb])

        def mtcnn_batch() -> None:
            detector.mtcnn.detect(rgbs)

        def baseline() -> None:
            for rgb in rgbs:
                baseline_det.detect(rgb)

        def detect_align() -> None:
            for f in frames:
                detector.detect(f.rgb)

        def batch_fn() -> float:
            msgs = fresh()
            t0 = time.perf_counter()
            for i in range(0, len(msgs), BATCH):
                process(msgs[i:i + BATCH])
            return time.perf_counter() - t0

        def loop() -> float:
            msgs = fresh()
            return rig.run([m.encode() for m in msgs], [m.camera_id.encode() for m in msgs])

        try:
            times = interleaved({"mtcnn": mtcnn, "mtcnn_batch": mtcnn_batch, "baseline": baseline,
                                 "detect_align": detect_align, "batch_fn": batch_fn, "loop": loop}, repeats)
        finally:
            rig.close()
    faces = sum(len(detector.detect(f.rgb)) for f in frames)
    per_frame = {k: stats([t / n * 1000 for t in v]) for k, v in times.items()}
    return {
        "config": {"frame_size": SIZE, "frames_per_repeat": n, "repeats": repeats, "torch_threads": 1,
                   "max_batch_size": BATCH, "faces_found_per_frame": faces / n,
                   "jpeg_bytes_mean": float(np.mean([len(f.jpeg) for f in frames]))},
        "method": "contenders interleaved per repeat after one warm-up round; per-frame ms = repeat time / "
                  "frames; figures are medians over repeats; ratio = median over repeats of "
                  "mtcnn time / contender time (same frames)",
        "per_frame_ms": per_frame,
        "frames_per_s": {k: 1000 / v["median"] for k, v in per_frame.items()},
        "ratio_to_raw": {k: ratio(times["mtcnn"], times[k]) for k in ("detect_align", "batch_fn", "loop")},
        "raw_component": "mtcnn",
        "loop_ratio": ratio(times["mtcnn"], times["loop"]),
        "speedup_vs_baseline": ratio(times["baseline"], times["detect_align"]),
        "speedup_vs_baseline_loop": ratio(times["baseline"], times["loop"]),
        "mtcnn_batch_speedup": ratio(times["mtcnn"], times["mtcnn_batch"]),
        "refine": detector.refine,
        "motion": motion(detector, 45 if settings.quick else 135),
    }


def still_footage(n: int, seed: int = 0) -> list:
    """n frames at 5 fps: 3 s of the clip, then its last frame held for 6 s with fresh noise, and again."""
    import cv2

    from bench.inputs import VideoFrame

    rng = np.random.default_rng(seed)
    moving = video_frames(SIZE, n, step=6)  # 30 fps clip, every 6th frame: 5 fps
    out, k = [], 0
    while len(out) < n:
        for f in moving[k:k + 15]:  # 3 s moving
            out.append(f)
        k += 15
        held = out[-1].rgb
        for _ in range(30):  # 6 s held
            noisy = np.clip(held.astype(np.float32) + rng.normal(0, 2, held.shape), 0, 255).astype(np.uint8)
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
            out.append(VideoFrame(noisy, jpeg.tobytes()))
        if k >= len(moving):
            k = 0
    return out[:n]


def motion(detector, n: int) -> dict[str, Any]:
    """The batch function over still_footage with motion gating (the service's defaults) and without."""
    from services.detector.motion import MotionGate
    from services.detector.stage import Gates, make_process
    from shared.schemas import FrameFaces

    frames = still_footage(n)
    out: dict[str, Any] = {}
    for name, gate in (("off", None), ("on", MotionGate())):
        process = make_process(detector.detect, Gates(40, 0.95, 15.0, 32), "unused", max_frame_age_s=0,
                               detect_many=detector.detect_many, motion=gate)
        # 5 fps capture times, so that the gate's clocks mean what they say
        msgs = [replace(m, capture_ts=1000.0 + i / 5) for i, m in enumerate(frame_messages(frames, "still-cam"))]
        t0 = time.perf_counter()
        results = [process([m]) for m in msgs]  # one frame per batch, as a live camera's frames arrive
        seconds = time.perf_counter() - t0
        decoded = [FrameFaces.decode(r[0][0].value) for r in results]
        out[name] = {"seconds": seconds, "frames": len(msgs),
                     "detected": sum(d.status == "ok" for d in decoded),
                     "unchanged": sum(d.status == "unchanged" for d in decoded),
                     "faces": sum(len(d.faces) for d in decoded)}
    out["speedup"] = out["off"]["seconds"] / out["on"]["seconds"]
    out["detected_fraction"] = out["on"]["detected"] / out["on"]["frames"]
    out["footage"] = ("640x360 at 5 fps: 3 s of the clip, then its last frame held 6 s with fresh Gaussian noise "
                      "(sigma 2) before each JPEG encoding, repeated")
    return out


@contextmanager
def profile_target(settings: Settings, detector, loop: bool) -> Iterator[Callable[[], object]]:
    """A callable for cProfile: the batch function over 4 frames, or (`loop`) 8 frames through the shared
    loop on a topic of its own (which shows where the loop waits: poll, flush, commit)."""
    frames = video_frames(SIZE, 8 if loop else 4)
    if not loop:
        process, _ = make_stage(detector, "unused", "unused")
        msgs = frame_messages(frames, "bench-cam")
        yield lambda: process(msgs)
        return
    with Topics(settings.kafka) as topics:
        frames_topic, faces_topic = topics.make("bench-prof-frames", 1), topics.make("bench-prof-faces", 1)
        rig = LoopRig(settings.kafka, make_stage(detector, faces_topic, frames_topic)[1], max_batch_size=BATCH)
        seq = [0]

        def run_loop() -> float:
            msgs = frame_messages(frames, "bench-cam", seq[0])
            seq[0] += len(msgs)
            return rig.run([m.encode() for m in msgs], [m.camera_id.encode() for m in msgs])

        try:
            yield run_loop
        finally:
            rig.close()
