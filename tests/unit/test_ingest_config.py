"""Cameras from flags and from a YAML file: kinds, defaults, and clear errors for bad specs."""

from __future__ import annotations

import pytest

from services.ingest.config import IngestConfig, load_cameras, parse_camera_flag, source_kind
from shared.config import ConfigError, load


@pytest.fixture
def clip(data_dir):
    return data_dir / "videos" / "faceapi_test_5frames.mp4"


def cfg(*argv: str) -> IngestConfig:
    return load(IngestConfig, list(argv), {})


@pytest.mark.parametrize("source, kind", [("rtsp://10.0.0.7:554/main", "rtsp"), ("RTSPS://cam/s", "rtsp"),
                                          ("http://cam/mjpeg", "http"), ("https://cam/live.m3u8", "http"),
                                          ("0", "device"), ("12", "device"), ("clips/door.mp4", "file")])
def test_source_kinds(source, kind):
    assert source_kind(source) == kind


def test_a_url_with_an_equals_sign_keeps_it():
    (cam,) = load_cameras(cfg("--camera", "c1=rtsp://h/s?user=a&x=1"))
    assert cam.source == "rtsp://h/s?user=a&x=1"


@pytest.mark.parametrize("flag, message", [
    ("door", r"expected ID=SOURCE"),
    ("=rtsp://h/s", r"camera id '' must be"),
    ("bad id=rtsp://h/s", r"camera id 'bad id' must be"),
    ("door=", r"source must be"),
    ("door=/no/such/clip.mp4", r"camera door\): no such video file '/no/such/clip.mp4'"),
])
def test_bad_flags_say_what_is_wrong(flag, message):
    with pytest.raises(ConfigError, match=message):
        parse_camera_flag(flag, cfg())


@pytest.mark.parametrize("yaml_text, message", [
    ("- id: a\n  source: rtsp://h/s\n  fsp: 5\n", r"entry 1: unknown key\(s\) fsp"),
    ("- id: a\n  source: rtsp://h/s\n  fps: -1\n", r"camera a\): fps = -1 must be a number in \[0, 240\]"),
    ("- id: a\n  source: rtsp://h/s\n  jpeg_quality: high\n", r"jpeg_quality = 'high' must be a number"),
    ("- id: a\n  source: rtsp://h/s\n  max_width: 8\n", r"max_width = 8 is too small"),
    ("- id: a\n  source: rtsp://h/s\n  realtime: maybe\n", r"realtime = 'maybe' must be true or false"),
    ("- id: a\n  source: rtsp://h/1\n- id: a\n  source: rtsp://h/2\n", r"camera id 'a' is given twice"),
    ("- rtsp://h/s\n", r"entry 1: a camera must be a map"),
    ("id: a\nsource: rtsp://h/s\n", r"expected a list of cameras"),
    ("- id: a\n  source: [unclosed\n", r"not valid YAML"),
])
def test_bad_cameras_files_say_which_entry_and_why(tmp_path, yaml_text, message):
    f = tmp_path / "cameras.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_cameras(cfg("--cameras-file", str(f)))


def test_no_camera_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no camera"):
        load_cameras(cfg())
    with pytest.raises(ConfigError, match="cameras file .*nope.yaml: No such file"):
        load_cameras(cfg("--cameras-file", str(tmp_path / "nope.yaml")))


def test_settings_are_bounded():
    with pytest.raises(ConfigError, match="backoff_max_s = 1.0 must be >= backoff_initial_s = 5.0"):
        cfg("--backoff-initial-s", "5", "--backoff-max-s", "1")
    with pytest.raises(ConfigError, match=r"max_frame_bytes = 100 \(from flag --max-frame-bytes\): must be >="):
        cfg("--max-frame-bytes", "100")
    with pytest.raises(ConfigError, match="rtsp_transport .* must be one of tcp, udp"):
        cfg("--rtsp-transport", "sctp")


def test_the_default_cap_is_5_frames_per_second_and_0_keeps_every_frame():
    (cam,) = load_cameras(cfg("--camera", "door=rtsp://h/s"))
    assert cfg().fps == 5.0 and cam.fps == 5.0
    (cam,) = load_cameras(cfg("--camera", "door=rtsp://h/s", "--fps", "0"))
    assert cam.fps is None


def test_configuration_errors_never_echo_a_password(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_camera_flag("bad id=rtsp://admin:hunter22@cam/s", cfg())
    assert "hunter22" not in str(e.value) and "rtsp://admin:***@cam/s" in str(e.value)
    f = tmp_path / "cameras.yaml"
    f.write_text("- rtsp://admin:hunter22@cam/s\n")
    with pytest.raises(ConfigError, match="a camera must be a map") as e:
        load_cameras(cfg("--cameras-file", str(f)))
    assert "hunter22" not in str(e.value)
