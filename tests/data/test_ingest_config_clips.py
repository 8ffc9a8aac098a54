"""Camera settings that name a real clip (../shared/data/videos)."""

from __future__ import annotations

import pytest

from services.ingest.config import IngestConfig, load_cameras
from shared.config import load


@pytest.fixture
def clip(data_dir):
    return data_dir / "videos" / "faceapi_test_5frames.mp4"


def cfg(*argv: str) -> IngestConfig:
    return load(IngestConfig, list(argv), {})


def test_flags_give_cameras_with_the_global_defaults(clip):
    c = cfg("--camera", "door=rtsp://10.0.0.7/main", "--camera", f"lobby={clip}", "--fps", "12",
            "--jpeg-quality", "70", "--max-width", "1280", "--no-realtime")
    door, lobby = load_cameras(c)
    assert (door.id, door.source, door.kind, door.live) == ("door", "rtsp://10.0.0.7/main", "rtsp", True)
    assert (door.fps, door.jpeg_quality, door.max_width) == (12.0, 70, 1280)
    assert (lobby.kind, lobby.live, lobby.realtime, lobby.source) == ("file", False, False, str(clip))
    assert c.frames_topic == "frames" and c.max_frame_bytes == 900_000


def test_cameras_file_with_per_camera_settings(tmp_path, clip):
    f = tmp_path / "cameras.yaml"
    f.write_text(f"""\
cameras:
  - id: door
    source: rtsp://10.0.0.7/main
    fps: 5
    jpeg_quality: 60
  - id: usb
    source: 0
  - id: clip
    source: {clip}
    realtime: false
    max_width: 320
""")
    door, usb, clip_cam = load_cameras(cfg("--cameras-file", str(f), "--fps", "25"))
    assert (door.fps, door.jpeg_quality) == (5.0, 60)
    assert (usb.kind, usb.source, usb.fps) == ("device", "0", 25.0)
    assert (clip_cam.realtime, clip_cam.max_width, clip_cam.fps) == (False, 320, 25.0)
