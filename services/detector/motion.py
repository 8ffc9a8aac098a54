"""Motion gating: per camera, whether a frame needs MTCNN at all. Pure logic, no Kafka.

A fixed camera over an empty corridor sends the same picture for minutes; detecting every frame of it is
most of what a detector pool spends. Frigate detects only where there is motion; this gate is the
per-frame version of that rule: a frame is compared, as a 64x36 grey thumbnail (area-averaged, so sensor
and JPEG noise average out: 0.1-0.25 grey levels on this repo's clips, against 2-25 for a person moving
at 5 fps), with the camera's last *detected* frame, and it is detected when
- the camera has no detected frame yet (a new camera, or a worker that just took over its partition), or
- more than `min_changed` of the thumbnail's pixels moved by more than `pixel_delta` grey levels, or
- `force_every_s` passed since the camera's last detection (a face that walks in slowly, a light that
  drifts: nothing waits longer than that; 2 s), or `faces_every_s` (0.6 s) while the last detection found
  faces: a person standing still is seen often enough that one missed face does not end the matcher's
  track (its `track_max_gap_s`, 2 s), or
- the last detection found faces that appeared less than `track_hold_s` ago (more faces than the detection
  before counts as appearing): a track that the
  matcher is still voting on gets every frame (it decides on its first faces).
Comparing with the last detected frame, not the previous one, means a slow drift adds up until it counts.
A frame it passes is published as `status="unchanged"` without faces (every frame is accounted for) and
counted per camera in `facestream_frames_unchanged_total`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB = (64, 36)  # width, height: 16:9 at 1/10 of 640x360


@dataclass(frozen=True, slots=True)
class MotionSettings:
    """One camera's gate. `min_changed` 0 turns gating off: every frame is detected."""
    min_changed: float = 0.003  # fraction of thumbnail pixels that must change (0.003: 7 of 2,304)
    pixel_delta: float = 10.0   # grey levels (0-255) by which a thumbnail pixel must move to count
    force_every_s: float = 2.0
    track_hold_s: float = 3.0
    faces_every_s: float = 0.6

    @property
    def enabled(self) -> bool:
        return self.min_changed > 0


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A frame's 64x36 grey thumbnail, int16 (so that differences do not wrap)."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.int16)


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_delta: float) -> float:
    return float((np.abs(a - b) > pixel_delta).mean())


@dataclass
class _Camera:
    thumb: np.ndarray
    detected_ts: float
    faces: int
    faces_since: float | None  # when the current faces appeared (capture time); None: no faces


class MotionGate:
    """`needs_detection(camera, ts, thumb)` before a frame is detected; `detected(camera, ts, thumb, faces)`
    after. Settings per camera, `default` for the rest. State is per worker: a camera's partition has one
    worker at a time, and a worker that takes one over starts by detecting."""

    def __init__(self, default: MotionSettings | None = None, per_camera: dict[str, MotionSettings] | None = None,
                 max_cameras: int = 100_000):
        self.default, self.per_camera = default or MotionSettings(), dict(per_camera or {})
        self.max_cameras = max_cameras
        self._cams: dict[str, _Camera] = {}

    def settings(self, camera: str) -> MotionSettings:
        return self.per_camera.get(camera, self.default)

    def enabled(self, camera: str) -> bool:
        return self.settings(camera).enabled

    def needs_detection(self, camera: str, ts: float, thumb: np.ndarray) -> bool:
        s, c = self.settings(camera), self._cams.get(camera)
        if not s.enabled or c is None or c.thumb.shape != thumb.shape:
            return True
        every = s.faces_every_s if c.faces else s.force_every_s
        if ts - c.detected_ts >= every or ts < c.detected_ts:  # a clock that went back: look again
            return True
        if c.faces_since is not None and ts - c.faces_since < s.track_hold_s:
            return True
        return changed_fraction(thumb, c.thumb, s.pixel_delta) > s.min_changed

    def detected(self, camera: str, ts: float, thumb: np.ndarray, faces: int) -> None:
        c = self._cams.get(camera)
        settled = c is not None and c.faces_since is not None and faces <= c.faces
        since = (c.faces_since if settled else ts) if faces else None
        if c is None and len(self._cams) >= self.max_cameras:  # forged camera ids must not grow memory
            self._cams.pop(next(iter(self._cams)))
        self._cams[camera] = _Camera(thumb, ts, faces, since)
