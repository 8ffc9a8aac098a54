"""A camera thread on real files and a dead URL, publishing into a list instead of Kafka."""

from __future__ import annotations

import threading
import time
import uuid

from services.ingest.cameras import Backoff
from services.ingest.config import CameraSpec
from services.ingest.reader import CameraReader
from shared import metrics
from shared.schemas import Frame


def run_camera(spec: CameraSpec, timeout_s: float = 30, **kw) -> tuple[CameraReader, list[Frame]]:
    out: list[Frame] = []
    reader = CameraReader(spec, out.append, threading.Event(), backoff=Backoff(0.05, 0.2, 0.5),
                          max_frame_bytes=900_000, **kw)
    reader.start()
    reader.join(timeout_s)
    assert not reader.is_alive(), "the camera thread did not end"
    return reader, out


def state(cam_id: str, s: str) -> float:
    return metrics.CAMERA_STATE.labels(cam_id, s)._value.get()


def test_an_unreadable_file_ends_with_an_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    cam = CameraSpec(f"bad-{uuid.uuid4().hex[:6]}", str(bad), "file")
    reader, frames = run_camera(cam)
    assert frames == [] and reader.error == f"cannot read video file {bad}"


def test_a_dead_stream_backs_off_and_retries_until_stopped():
    cam = CameraSpec(f"dead-{uuid.uuid4().hex[:6]}", "rtsp://127.0.0.1:1/nothing", "rtsp")
    stop = threading.Event()
    reader = CameraReader(cam, lambda f: None, stop, backoff=Backoff(0.05, 0.2, 0.5), max_frame_bytes=900_000,
                          open_timeout_s=1.0)
    reader.start()
    deadline = time.monotonic() + 10
    while metrics.CAMERA_RECONNECTS.labels(cam.id)._value.get() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics.CAMERA_RECONNECTS.labels(cam.id)._value.get() >= 3
    assert reader.state in ("backoff", "connecting") and reader.seq == 0
    stop.set()
    reader.join(5)
    assert not reader.is_alive() and state(cam.id, "ended") == 1 and reader.error is None
