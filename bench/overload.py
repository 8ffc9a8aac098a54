"""The detector under overload: is the pool still doing useful work when cameras send more than it can detect?

One run, two measurements on the same frames (640x360 frames of the Hamilton clip), one torch thread:
  capacity      the detector's batch function on frames handed over as fast as it takes them, each one
                detected (newest_only off): frames detected per second, C;
  overload      cameras publishing in real time at 3 x C in all (capture time = now), through the real shared
                loop on the broker with the service's settings (keep the newest frame per camera, 5 s stale
                rule, max_batch_size 16), for a fixed time: frames detected per second, D.
useful_ratio = D / C: 1.0 means the overloaded pool detects as many frames per second as it can at all,
and sheds the rest cheaply (status "skipped" or "stale", counted). Goal >= 0.9.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import torch

from bench.common import Settings
from bench.inputs import frame_messages, video_frames
from bench.kafka_util import Topics, delete_groups, run_id
from shared import kafka_loop, metrics
from shared.schemas import Frame, FrameFaces
from shared.stage import Stage

SIZE = "640x360"
BATCH = 16  # the detector service's default max_batch_size
CAMERAS = 2
OVERLOAD = 3.0


def _stage(detector, frames_topic: str, faces_topic: str, newest_only: bool):
    from services.detector.stage import Gates, make_process

    process = make_process(detector.detect, Gates(40, 0.95, 15.0, 32), faces_topic, max_frame_age_s=5.0,
                           newest_only=newest_only)
    return process, Stage("detector", frames_topic, Frame.decode, process)


def capacity(detector, frames, seconds: float) -> float:
    """Frames per second the batch function detects when every frame is detected (one camera each)."""
    process, _ = _stage(detector, "unused", "unused", newest_only=False)
    process(frame_messages(frames[:1], "warm-up"))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        msgs = [Frame("cap", n + i, time.time(), f.width, f.height, f.jpeg) for i, f in enumerate(frames)]
        for i in range(0, len(msgs), BATCH):
            process(msgs[i:i + BATCH])
        n += len(msgs)
    return n / (time.perf_counter() - t0)


def _feed(bootstrap: str, topic: str, frames, rate: float, seconds: float, stop: threading.Event,
          sent: list[int]) -> None:
    """CAMERAS cameras, `rate` frames/s in all, real-time capture stamps, for `seconds`."""
    producer = kafka_loop.make_producer(bootstrap, "bench-overload-feed")
    t0, k = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - t0 < seconds:
        due = t0 + k / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        cam = f"cam-{k % CAMERAS}"
        f = frames[(k // CAMERAS) % len(frames)]
        producer.send(topic, key=cam.encode(),
                      value=Frame(cam, k // CAMERAS, time.time(), f.width, f.height, f.jpeg).encode())
        k += 1
    producer.flush()
    producer.close()
    sent[0] = k


def run(settings: Settings, detector) -> dict[str, Any]:
    torch.set_num_threads(1)
    seconds = 8.0 if settings.quick else 30.0
    frames = video_frames(SIZE, 8)
    cap = capacity(detector, frames, 3.0 if settings.quick else 10.0)
    rate = OVERLOAD * cap
    with Topics(settings.bootstrap) as topics:
        frames_topic = topics.make("bench-overload-frames", 1)
        faces_topic = topics.make("bench-overload-faces", 1)
        _, stage = _stage(detector, frames_topic, faces_topic, newest_only=True)
        group = f"bench-overload-{run_id()}"
        consumer = kafka_loop.make_consumer(settings.bootstrap, group, "bench-overload", max_poll_records=BATCH)
        producer = kafka_loop.make_producer(settings.bootstrap, "bench-overload")
        stop, sent = threading.Event(), [0]
        loop_stop = kafka_loop.StopFlag()
        counts = {"ok": 0, "skipped": 0, "stale": 0}
        first: list[float] = []  # the clock starts at the first detection: the group join is not the detector's

        def counting(items: list) -> list:
            t = time.monotonic()
            out = stage.process(items)
            for r in out:
                if isinstance(r, list) and r:
                    status = FrameFaces.decode(r[0].value).status
                    counts[status] += 1
                    if status == "ok" and not first:
                        first.append(t)
            return out

        counted = Stage(stage.name, stage.input_topic, stage.decode, counting)
        feeder = threading.Thread(target=_feed, args=(settings.bootstrap, frames_topic, frames, rate, seconds,
                                                      stop, sent), daemon=True)
        timer = threading.Timer(seconds, loop_stop.set)
        feeder.start()
        timer.start()
        try:
            kafka_loop.run_stage(counted, consumer, producer, max_batch_size=BATCH, max_batch_wait_ms=20,
                                 health=metrics.Health("detector"), stop=loop_stop)
            elapsed = time.monotonic() - first[0] if first else float("nan")
        finally:
            stop.set()
            timer.cancel()
            feeder.join(30)
            kafka_loop.close(consumer, producer)
            delete_groups(settings.bootstrap, [group])
    detected_per_s = counts["ok"] / elapsed
    return {
        "config": {"frame_size": SIZE, "cameras": CAMERAS, "overload": OVERLOAD, "seconds": seconds,
                   "max_batch_size": BATCH, "torch_threads": 1, "stale_after_s": 5.0},
        "method": "capacity: the batch function detecting every frame, back to back; overload: cameras at "
                  f"{OVERLOAD:g} x capacity in real time through the shared loop on the broker, same process "
                  "and frames; useful_ratio = frames detected per second under overload / capacity",
        "capacity_frames_per_s": cap, "offered_frames_per_s": rate, "frames_sent": sent[0],
        "outcomes": counts, "measured_s": elapsed, "detected_frames_per_s": detected_per_s,
        "useful_ratio": detected_per_s / cap if cap else None,
    }
