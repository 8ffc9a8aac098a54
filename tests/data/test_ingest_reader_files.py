"""A camera's reader over real video files (../shared/data/videos): in a thread, and in its own process
behind ingest's side of the camera, as `facestream ingest` runs it."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import cv2
import numpy as np
import pytest

from services.ingest.camera import Camera
from services.ingest.cameras import Backoff
from services.ingest.config import CameraSpec
from services.ingest.reader import Captured, CameraReader, Ended, Status
from shared import metrics
from shared.schemas import Frame

BACKOFF = Backoff(0.05, 0.2, 0.5)


def read_camera(spec: CameraSpec, timeout_s: float = 30, **kw) -> tuple[list[Captured], list]:
    events: list = []
    reader = CameraReader(spec, events.append, threading.Event(), backoff=BACKOFF, max_frame_bytes=900_000, **kw)
    t = threading.Thread(target=reader.run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "the reader did not end"
    return [e for e in events if isinstance(e, Captured)], events


def test_a_file_camera_captures_every_frame_in_order_then_ends(data_dir):
    path = data_dir / "videos" / "faceapi_test_5frames.mp4"
    frames, events = read_camera(CameraSpec("f", str(path), "file", realtime=False))
    assert events[-1] == Ended("eof") and events[-2] == Status("ended", 5, 0, 0)
    cap = cv2.VideoCapture(str(path))
    for f in frames:
        ok, bgr = cap.read()
        img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert ok and img.shape == bgr.shape == (460, 820, 3) and (f.width, f.height) == (820, 460)
        assert np.abs(img.astype(int) - bgr).mean() < 4
    assert len(frames) == 5


def test_a_realtime_file_plays_at_its_frame_rate(data_dir):
    cam = CameraSpec("rt", str(data_dir / "videos" / "obama_whcd2016_4s.mp4"), "file")
    t0 = time.monotonic()
    frames, events = read_camera(cam, max_frames=30)
    ts = [f.capture_ts for f in frames]
    assert len(frames) == 30 and events[-1] == Ended("max_frames") and all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[-1] - ts[0] == pytest.approx(29 / 15, abs=0.15)  # a 15 fps clip, not as fast as it decodes
    assert time.monotonic() - t0 < 5


def test_the_fps_cap_skips_frames(data_dir):
    cam = CameraSpec("cap", str(data_dir / "videos" / "obama_whcd2016_4s.mp4"), "file", fps=5, realtime=False)
    frames, events = read_camera(cam)
    assert len(frames) == 20  # 60 frames at 15 fps capped to 5 fps
    assert events[-2] == Status("ended", 60, 40, 0)


def test_in_its_own_process_a_file_camera_publishes_every_frame_of_one_session(data_dir):
    path = data_dir / "videos" / "faceapi_test_5frames.mp4"
    spec = CameraSpec(f"proc-{uuid.uuid4().hex[:6]}", str(path), "file", realtime=False)
    out: list[Frame] = []
    ctx = multiprocessing.get_context("forkserver")
    cam = Camera(spec, out.append, threading.Event(), ctx=ctx, backoff=BACKOFF,
                 reader_kw={"backoff": BACKOFF, "max_frame_bytes": 900_000, "max_frames": 0})
    cam.start()
    cam.join(60)
    assert not cam.is_alive() and cam.error is None and cam.fatal is None
    assert [f.seq for f in out] == [0, 1, 2, 3, 4] and {f.session for f in out} == {cam.session}
    assert cam.pid is not None and cam.pid != multiprocessing.current_process().pid
    assert metrics.FRAMES_CAPTURED.labels(spec.id)._value.get() == 5
    assert metrics.CAMERA_STATE.labels(spec.id, "ended")._value.get() == 1
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    img = cv2.imdecode(np.frombuffer(out[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert ok and np.abs(img.astype(int) - bgr).mean() < 4
