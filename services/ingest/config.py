"""Ingest settings, declared once, and the cameras they name (`--camera ID=SOURCE`, `--cameras-file`).

A cameras file is YAML: a list of cameras (or a map with the key `cameras` holding that list), each

    - id: door                      # letters, digits, '.', '_', '-'; the Kafka key of its frames
      source: rtsp://10.0.0.7/main  # rtsp(s)://, http(s)://, a video file, or a device index such as 0
      fps: 10                       # optional cap on frames published per second (default --fps: 5; 0: all)
      jpeg_quality: 80              # optional (default --jpeg-quality)
      max_width: 1280               # optional: downscale wider frames (default --max-width)
      realtime: true                # optional, files only: play at the file's own speed (default --realtime)

Unknown keys, duplicate ids and missing files are refused at start with the camera and the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.redact import mask_url
from shared.config import BaseConfig, ConfigError, setting

SourceKind = Literal["rtsp", "http", "file", "device"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class IngestConfig(BaseConfig):
    """facestream ingest: read cameras and publish their frames as JPEG to Kafka."""
    camera: list[str] = setting([], "a camera as ID=SOURCE (rtsp://, http(s)://, a video file, a device "
                                "index); repeatable", repeat=True)
    cameras_file: Path | None = setting(None, "YAML file listing cameras (id, source, fps, jpeg_quality, "
                                        "max_width, realtime)")
    frames_topic: str = setting("frames", "topic the frames are published to")
    fps: float = setting(5.0, "default cap on frames published per second per camera (5, Frigate's default "
                         "detect rate: a face in view for a second still gives the matcher's 3-face vote 5 frames; "
                         "0: every frame)", ge=0, le=240)
    jpeg_quality: int = setting(85, "default JPEG quality", ge=10, le=100)
    max_width: int = setting(0, "default: downscale frames wider than this, pixels (0: keep the size)",
                             ge=0, le=16384)
    max_frame_bytes: int = setting(900_000, "largest JPEG published; bigger frames are downscaled until "
                                   "they fit (keep under the broker's message.max.bytes, 1 MiB by default)",
                                   ge=10_000, le=64_000_000)
    realtime: bool = setting(True, "play file sources at their own frame rate, like a camera "
                             "(--no-realtime: as fast as they decode)")
    max_frames: int = setting(0, "stop each camera after publishing this many frames (0: no limit)", ge=0)
    rtsp_transport: str = setting("tcp", "RTP transport asked of RTSP cameras", choices=("tcp", "udp"))
    open_timeout_s: float = setting(10.0, "give up opening a stream after this long", ge=0.1, le=300)
    read_timeout_s: float = setting(10.0, "treat a stream as dropped after this long without a frame",
                                    ge=0.1, le=300)
    backoff_initial_s: float = setting(1.0, "first reconnect delay; doubles per failed attempt", ge=0.01, le=600)
    backoff_max_s: float = setting(30.0, "longest reconnect delay", ge=0.01, le=3600)
    backoff_jitter: float = setting(0.5, "share of each delay drawn at random, so that cameras behind one "
                                    "failed switch do not all retry in step", ge=0, le=1)
    metrics_port: int = setting(0, "port of the /metrics, /healthz and /readyz endpoint (0: a free port)",
                                ge=0, le=65535)
    metrics_host: str = setting("0.0.0.0", "address the metrics endpoint binds")
    liveness_timeout_s: float = setting(60.0, "/healthz fails when a camera's process is stuck for this long",
                                        ge=1, le=3600)
    stop_grace_s: float = setting(2.0, "on SIGTERM, how long a camera's process may take to finish its current "
                                  "read or open before it is killed (then the producer is flushed)", ge=0.1, le=60)

    def validate(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(f"backoff_max_s = {self.backoff_max_s} must be >= backoff_initial_s = "
                              f"{self.backoff_initial_s}")


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera: where to read it and how to publish its frames."""
    id: str
    source: str
    kind: SourceKind
    fps: float | None = None        # cap on published frames per second; None: every frame
    jpeg_quality: int = 85
    max_width: int | None = None    # None: keep the camera's size (the byte limit may still shrink it)
    realtime: bool = True           # files only: pace at the file's frame rate

    @property
    def live(self) -> bool:
        """A live source is reconnected when it drops; a file ends when it ends."""
        return self.kind != "file"


def source_kind(source: str) -> SourceKind:
    """What a source string names: a stream URL, a device index, or else a file path."""
    low = source.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if source.isdigit():
        return "device"
    return "file"


_KEYS = {"id", "source", "fps", "jpeg_quality", "max_width", "realtime"}


def camera_spec(entry: dict[str, Any], cfg: IngestConfig, where: str) -> CameraSpec:
    """Check one camera entry (from a flag or the YAML file) and fill its defaults from `cfg`."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a camera must be a map with id and source, got {mask_url(repr(entry))}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(allowed: {', '.join(sorted(_KEYS))})")
    cam_id, source = entry.get("id"), entry.get("source")
    if not isinstance(cam_id, str) or not _ID.match(cam_id):
        raise ConfigError(f"{where}: camera id {cam_id!r} must be 1-100 letters, digits, '.', '_' or '-'")
    where = f"{where} (camera {cam_id})"
    if isinstance(source, int) and not isinstance(source, bool):
        source = str(source)  # YAML reads `source: 0` as a number: a device index
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{where}: source must be a URL, a file path or a device index")
    source = source.strip()
    kind = source_kind(source)
    if kind == "file" and not Path(source).expanduser().is_file():
        raise ConfigError(f"{where}: no such video file {source!r}")

    def number(key: str, default: float, lo: float, hi: float, typ: type) -> Any:
        val = entry.get(key, default)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not lo <= val <= hi:
            raise ConfigError(f"{where}: {key} = {val!r} must be a number in [{lo}, {hi}]")
        if typ is int and val != int(val):
            raise ConfigError(f"{where}: {key} = {val!r} must be a whole number")
        return typ(val)

    fps = number("fps", cfg.fps, 0, 240, float)
    width = number("max_width", cfg.max_width, 0, 16384, int)
    realtime = entry.get("realtime", cfg.realtime)
    if not isinstance(realtime, bool):
        raise ConfigError(f"{where}: realtime = {realtime!r} must be true or false")
    if width and width < 32:
        raise ConfigError(f"{where}: max_width = {width} is too small to hold a face (at least 32, or 0)")
    return CameraSpec(cam_id, str(Path(source).expanduser()) if kind == "file" else source, kind,
                      fps or None, number("jpeg_quality", cfg.jpeg_quality, 10, 100, int), width or None, realtime)


def parse_camera_flag(flag: str, cfg: IngestConfig) -> CameraSpec:
    """`ID=SOURCE` -> a camera with the default settings of `cfg`."""
    cam_id, sep, source = flag.partition("=")
    where = f"--camera {mask_url(repr(flag))}"  # errors name the flag, never its password
    if not sep:
        raise ConfigError(f"{where}: expected ID=SOURCE, e.g. door=rtsp://10.0.0.7/main")
    return camera_spec({"id": cam_id.strip(), "source": source}, cfg, where)


def load_cameras(cfg: IngestConfig) -> list[CameraSpec]:
    """Every camera of the cameras file, then of the flags; refuse none at all and duplicate ids."""
    cams: list[CameraSpec] = []
    if cfg.cameras_file is not None:
        cams += _read_cameras_file(cfg.cameras_file, cfg)
    cams += [parse_camera_flag(f, cfg) for f in cfg.camera]
    if not cams:
        raise ConfigError("no camera: give --camera ID=SOURCE (repeatable) or --cameras-file FILE")
    seen: set[str] = set()
    for c in cams:
        if c.id in seen:
            raise ConfigError(f"camera id {c.id!r} is given twice: ids key the frames and must be unique")
        seen.add(c.id)
    return cams


def _read_cameras_file(path: Path, cfg: IngestConfig) -> list[CameraSpec]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cameras file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cameras file {path}: not valid YAML: {e}") from None
    if isinstance(doc, dict) and set(doc) == {"cameras"}:
        doc = doc["cameras"]
    if not isinstance(doc, list):
        raise ConfigError(f"cameras file {path}: expected a list of cameras (or a map with the key 'cameras')")
    return [camera_spec(e, cfg, f"cameras file {path}, entry {i + 1}") for i, e in enumerate(doc)]
