"""The detector stage's work on a batch of frames: decode, detect, align, gate, encode. No Kafka here.

An overloaded pool must catch up rather than lag forever, so a frame older than `max_frame_age_ms` when
it reaches the detector is not read: it is published as `status="stale"` without faces (every frame stays
accounted for) and counted. Quality gates drop faces the embedder would only get wrong: too small, too
unsure, too blurred (variance of the Laplacian of the aligned crop under `min_sharpness`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from shared import metrics
from shared.stage import InvalidMessage, Output, Result
from shared.vision.images import decode_jpeg as decode_image, encode_jpeg
from shared.schemas import DetectedFace, Frame, FrameFaces

STAGE = "detector"


@dataclass(frozen=True, slots=True)
class Gates:
    min_face_size: float  # shorter side of the box, pixels
    min_prob: float
    min_sharpness: float  # variance of the Laplacian of the aligned crop
    max_faces: int  # per frame, largest first

    def reason(self, face) -> str | None:
        """Why a face is rejected, or None when it passes (the name becomes a metric label)."""
        if face.face_size < self.min_face_size:
            return "size"
        if face.prob < self.min_prob:
            return "probability"
        if face.blur < self.min_sharpness:
            return "blur"
        return None


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    """JPEG bytes to HxWx3 uint8 RGB; a corrupt image is an invalid message (dead-lettered)."""
    rgb = decode_image(jpeg)
    if rgb is None:
        raise InvalidMessage(f"frame payload is not a decodable JPEG ({len(jpeg)} bytes)")
    return rgb


def encode_crop(crop_rgb: np.ndarray, quality: int) -> bytes:
    return encode_jpeg(crop_rgb, quality)


def detect_frame(frame: Frame, detect: Callable[[np.ndarray], list], gates: Gates, crop_quality: int) -> FrameFaces:
    """Every face of one frame that passes the gates, with its aligned crop as JPEG."""
    rgb = decode_jpeg(frame.jpeg)
    kept = []
    for face in sorted(detect(rgb), key=lambda f: -f.face_size):
        why = gates.reason(face)
        if why is None and len(kept) >= gates.max_faces:
            why = "max_faces"
        if why:
            metrics.FACES_REJECTED.labels(why).inc()
            continue
        kept.append(DetectedFace(face.box, face.prob, tuple(float(v) for v in face.landmarks.ravel()),
                                 encode_crop(face.crop, crop_quality), float(face.face_size), float(face.blur)))
    metrics.FACES_PER_FRAME.labels(STAGE).observe(len(kept))
    return FrameFaces(frame.camera_id, frame.seq, frame.capture_ts, frame.width, frame.height, tuple(kept),
                      detect_ts=time.time())


def make_process(detect: Callable[[np.ndarray], list], gates: Gates, faces_topic: str, max_frame_age_s: float,
                 crop_quality: int = 95, clock: Callable[[], float] = time.time):
    """The stage's batch function: one FrameFaces output per input frame, stale or not, or the reason a
    frame can never be read (an InvalidMessage in its place: the loop dead-letters it)."""

    def process(frames: list[Frame]) -> list[Result]:
        out: list[Result] = []
        for frame in frames:
            if max_frame_age_s > 0 and clock() - frame.capture_ts > max_frame_age_s:
                metrics.STALE_DROPPED.labels(STAGE).inc()
                result = FrameFaces(frame.camera_id, frame.seq, frame.capture_ts, frame.width, frame.height, (),
                                    detect_ts=clock(), status="stale")
            else:
                try:
                    result = detect_frame(frame, detect, gates, crop_quality)
                except InvalidMessage as e:
                    out.append(e)
                    continue
            out.append([Output(faces_topic, frame.camera_id.encode(), result.encode())])
        return out

    return process
