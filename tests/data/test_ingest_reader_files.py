"""The camera reader over real video files (../shared/data/videos)."""

from __future__ import annotations

import threading
import time
import uuid

import cv2
import numpy as np
import pytest

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


def test_a_file_camera_publishes_every_frame_in_order_then_ends(data_dir):
    path = data_dir / "videos" / "faceapi_test_5frames.mp4"
    cam = CameraSpec(f"f-{uuid.uuid4().hex[:6]}", str(path), "file", realtime=False)
    reader, frames = run_camera(cam)
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    assert reader.error is None and reader.fatal is None and state(cam.id, "ended") == 1
    cap = cv2.VideoCapture(str(path))
    for f in frames:
        ok, bgr = cap.read()
        img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert ok and img.shape == bgr.shape == (460, 820, 3) and (f.width, f.height) == (820, 460)
        assert np.abs(img.astype(int) - bgr).mean() < 4
    assert metrics.FRAMES_CAPTURED.labels(cam.id)._value.get() == 5


def test_a_realtime_file_plays_at_its_frame_rate(data_dir):
    cam = CameraSpec(f"rt-{uuid.uuid4().hex[:6]}", str(data_dir / "videos" / "obama_whcd2016_4s.mp4"), "file")
    t0 = time.monotonic()
    _, frames = run_camera(cam, max_frames=30)
    ts = [f.capture_ts for f in frames]
    assert len(frames) == 30 and all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[-1] - ts[0] == pytest.approx(29 / 15, abs=0.15)  # a 15 fps clip, not as fast as it decodes
    assert time.monotonic() - t0 < 5


def test_the_fps_cap_skips_frames_without_gaps_in_seq(data_dir):
    cam = CameraSpec(f"cap-{uuid.uuid4().hex[:6]}", str(data_dir / "videos" / "obama_whcd2016_4s.mp4"), "file",
                     fps=5, realtime=False)
    _, frames = run_camera(cam)
    assert [f.seq for f in frames] == list(range(20))  # 60 frames at 15 fps capped to 5 fps
    assert metrics.FRAMES_SKIPPED.labels(cam.id)._value.get() == 40
