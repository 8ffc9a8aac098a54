"""The fault matrix, restart rows: a detector SIGKILLed and restarted at once, ten times in a row, while two
cameras keep publishing. Every time, frames flow again within the stated bound: the old member's session
timeout (10 s, shared/kafka_loop.make_consumer) + the rebalance + the process's start (torch, MTCNN).
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from services.local_pipeline import LocalPipeline
from shared.kafka_admin import create_topics, delete_topics
from shared.kafka_loop import make_consumer, make_producer
from shared.schemas import Frame, FrameFaces
from tests.fuzz_messages import jpeg

pytestmark = pytest.mark.integration
RESTARTS = 10
BOUND_S = 45.0  # session timeout 10 s + rebalance + start-up (~5-8 s here), with a wide margin for a loaded box


def feed(bootstrap: str, topic: str, stop: threading.Event) -> None:
    """Two cameras at 5 frames/s each, until stopped."""
    producer = make_producer(bootstrap, "restart-feeder")
    payload, seq = jpeg(64, 48), 0
    while not stop.is_set():
        for cam in ("cam-a", "cam-b"):
            producer.send(topic, key=cam.encode(), value=Frame(cam, seq, time.time(), 64, 48, payload).encode())
        seq += 1
        time.sleep(0.2)
    producer.flush()
    producer.close()


def first_output_after(bootstrap: str, topic: str, since: float, limit_s: float) -> float | None:
    """Seconds after `since` at which the faces topic got a frame detected after `since`; None if none came."""
    c = make_consumer(bootstrap, f"restart-watch-{uuid.uuid4().hex[:6]}", "restart-watch", auto_offset_reset="latest")
    c.subscribe([topic])
    try:
        while time.time() - since < limit_s:
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    ff = FrameFaces.decode(r.value)
                    if ff.detect_ts > since:
                        return time.time() - since
    finally:
        c.close()
    return None


def test_a_detector_killed_and_restarted_ten_times_always_comes_back(kafka_bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    frames, faces = f"rs-frames-{run}", f"rs-faces-{run}"
    create_topics(kafka_bootstrap, {frames: 4, faces: 4})
    pipe = LocalPipeline(tmp_path, env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap})
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(kafka_bootstrap, frames, stop), daemon=True)
    feeder.start()
    args = ("--frames-topic", frames, "--faces-topic", faces, "--group-id", f"rs-{run}", "--max-frame-age-ms", "0")
    took = []
    try:
        det = pipe.start("detector", *args)
        assert first_output_after(kafka_bootstrap, faces, time.time() - 30, 60) is not None, det.log_tail()
        for i in range(RESTARTS):
            pipe.kill(det)
            t0 = time.time()
            det = pipe.start("detector", *args, wait_ready=False, label=f"detector-r{i}")
            got = first_output_after(kafka_bootstrap, faces, t0, BOUND_S)
            assert got is not None, f"restart {i}: no frame detected within {BOUND_S:.0f} s\n{det.log_tail()}"
            took.append(round(got, 1))
            assert det.get("/readyz")[0] == 200 and det.metric("facestream_assigned_partitions") == 4
        print(f"\nrestart -> first detected frame, s: {took} (max {max(took)})")
    finally:
        stop.set()
        feeder.join(10)
        pipe.stop()
        delete_topics(kafka_bootstrap, [frames, faces])
    assert len(took) == RESTARTS
