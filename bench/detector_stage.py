"""Detector stage against MTCNN alone, on the same decoded frames, in one run.

Contenders, interleaved per repeat, one torch thread each (as the service runs, `--threads 1`):
  mtcnn         MTCNN's detect() on frames already decoded: the raw component;
  detect_align  FaceDetector.detect(): MTCNN, alignment and the blur measure (the pure vision part);
  batch_fn      the stage's real batch function (make_process): JPEG decode, detect, align, gate, crop
                JPEG encode, msgpack, in batches of the service's max_batch_size;
  loop          the same through the real shared loop on the broker: consume, decode, process, produce
                (acks=all), commit.
The ratio of a contender is MTCNN's time over its time for the same frames (1.0: no overhead).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
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
                           newest_only=False)
    return process, Stage("detector", frames_topic, Frame.decode, process)


def run(settings: Settings, detector) -> dict[str, Any]:
    torch.set_num_threads(1)
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

        def mtcnn() -> None:
            for f in frames:
                detector._mtcnn.detect(np.ascontiguousarray(f.rgb), landmarks=True)

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
            times = interleaved({"mtcnn": mtcnn, "detect_align": detect_align, "batch_fn": batch_fn, "loop": loop},
                                repeats)
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
    }


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
