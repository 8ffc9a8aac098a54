"""The detector under overload: is the pool still doing useful work when cameras send more than it can detect?

One run, two measurements on the same frames (640x360 frames of the Hamilton clip), one torch thread:
  capacity      the detector stage through the real shared loop on the broker, on a backlog of frames that
                must each be detected (newest_only off): frames detected per second, C;
  overload      cameras publishing in real time at 3 x C in all (capture time = now), through the real shared
                loop on the broker with the service's settings (keep the newest frame per camera and the
                older ones within the shed grace, 5 s stale rule, max_batch_size 16), for a fixed time:
                frames detected per second, D.
useful_ratio = D / C: 1.0 means the overloaded pool detects as many frames per second as it can at all,
and sheds the rest cheaply (status "skipped" or "stale", counted). Goal >= 0.9.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import torch

from bench.common import Settings
from bench.inputs import frame_messages, video_frames
from bench.kafka_util import Topics, delete_groups, run_id
from bench.loop_runner import LoopRig
from services.detector.main import DetectorConfig
from shared import kafka_loop, metrics
from shared.schemas import Frame, FrameFaces
from shared.stage import Stage

SIZE = "640x360"
BATCH = 16  # the detector service's default max_batch_size
CAMERAS = 2
OVERLOAD = 3.0
SHED_GRACE_S = DetectorConfig().shed_grace_ms / 1000  # the service's default


def _stage(detector, frames_topic: str, faces_topic: str, newest_only: bool, max_frame_age_s: float = 5.0):
    from services.detector.stage import Gates, make_process

    process = make_process(detector.detect, Gates(40, 0.95, 15.0, 32), faces_topic, max_frame_age_s=max_frame_age_s,
                           newest_only=newest_only, shed_grace_s=SHED_GRACE_S)
    return process, Stage("detector", frames_topic, Frame.decode, process)


def capacity(settings: Settings, detector, frames, rounds: int) -> float:
    """Frames per second the detector stage detects through the loop when every frame must be detected."""
    with Topics(settings.kafka) as topics:
        frames_topic, faces_topic = topics.make("bench-cap-frames", 1), topics.make("bench-cap-faces", 1)
        # every frame detected: no shedding and no stale rule (a backlog outlives 5 s; stale frames cost nothing)
        _, stage = _stage(detector, frames_topic, faces_topic, newest_only=False, max_frame_age_s=0)
        rig = LoopRig(settings.kafka, stage, max_batch_size=BATCH)
        try:
            rig.run([m.encode() for m in frame_messages(frames[:2], "warm-up")])
            msgs = [m for r in range(rounds) for m in frame_messages(frames, "cap", r * len(frames))]
            return len(msgs) / rig.run([m.encode() for m in msgs], [m.camera_id.encode() for m in msgs])
        finally:
            rig.close()


def _feed(bootstrap: str, topic: str, frames, rate: float, seconds: float, sent) -> None:
    """CAMERAS cameras, `rate` frames/s in all, real-time capture stamps, for `seconds`. Runs in a process of
    its own, as cameras do: a feeder thread would share the detector's interpreter lock."""
    producer = kafka_loop.make_producer(bootstrap, "bench-overload-feed")
    t0, k = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        due = t0 + k / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        cam = f"cam-{k % CAMERAS}"
        f = frames[(k // CAMERAS) % len(frames)]
        h, w = f.rgb.shape[:2]
        producer.send(topic, key=cam.encode(), value=Frame(cam, k // CAMERAS, time.time(), w, h, f.jpeg).encode())
        k += 1
    producer.flush()
    producer.close()
    sent.value = k


def run(settings: Settings, detector) -> dict[str, Any]:
    torch.set_num_threads(1)
    seconds = 8.0 if settings.quick else 30.0
    frames = video_frames(SIZE, 16 if settings.quick else 48)  # many, so that which ones get detected averages out
    cap = capacity(settings, detector, frames, 1 if settings.quick else 2)
    rate = OVERLOAD * cap
    with Topics(settings.kafka) as topics:
        frames_topic = topics.make("bench-overload-frames", 1)
        faces_topic = topics.make("bench-overload-faces", 1)
        _, stage = _stage(detector, frames_topic, faces_topic, newest_only=True)
        group = f"bench-overload-{run_id()}"
        consumer = kafka_loop.make_consumer(settings.kafka, group, "bench-overload", max_poll_records=BATCH)
        producer = kafka_loop.make_producer(settings.kafka, "bench-overload")
        ctx = multiprocessing.get_context("spawn")
        sent = ctx.Value("q", 0)
        loop_stop = kafka_loop.StopFlag()
        counts = {"ok": 0, "skipped": 0, "stale": 0}
        first: list[float] = []  # the clock starts at the first detection: the group join is not the detector's

        busy = [0.0]  # seconds inside the stage's batch function (decode, detect, encode): the rest is the loop

        def counting(items: list) -> list:
            t = time.monotonic()
            out = stage.process(items)
            if first:
                busy[0] += time.monotonic() - t
            for r in out:
                if isinstance(r, list) and r:
                    status = FrameFaces.decode(r[0].value).status
                    counts[status] += 1
                    if status == "ok" and not first:
                        first.append(t)
            return out

        counted = Stage(stage.name, stage.input_topic, stage.decode, counting)
        feeder = ctx.Process(target=_feed, args=(settings.kafka, frames_topic, frames, rate, seconds, sent),
                             daemon=True)
        timer = threading.Timer(seconds, loop_stop.set)
        feeder.start()
        timer.start()
        try:
            kafka_loop.run_stage(counted, consumer, producer, max_batch_size=BATCH, max_batch_wait_ms=20,
                                 health=metrics.Health("detector"), stop=loop_stop)
            elapsed = time.monotonic() - first[0] if first else float("nan")
        finally:
            timer.cancel()
            feeder.join(30)
            if feeder.is_alive():
                feeder.kill()
            kafka_loop.close(consumer, producer)
            delete_groups(settings.kafka, [group])
    detected_per_s = counts["ok"] / elapsed
    return {
        "config": {"frame_size": SIZE, "cameras": CAMERAS, "overload": OVERLOAD, "seconds": seconds,
                   "max_batch_size": BATCH, "torch_threads": 1, "stale_after_s": 5.0,
                   "shed_grace_s": SHED_GRACE_S},
        "method": "capacity: the stage through the shared loop detecting every frame of a backlog; overload: cameras at "
                  f"{OVERLOAD:g} x capacity in real time (a feeder process) through the same loop, same frames; "
                  "useful_ratio = frames detected per second under overload / capacity",
        "capacity_frames_per_s": cap, "offered_frames_per_s": rate, "frames_sent": sent.value,
        "outcomes": counts, "measured_s": elapsed,
        "batch_function_share": busy[0] / elapsed if first else None,
        "ms_per_detected_frame_in_batch_function": 1000 * busy[0] / max(1, counts["ok"]), "detected_frames_per_s": detected_per_s,
        "useful_ratio": detected_per_s / cap if cap else None,
    }
