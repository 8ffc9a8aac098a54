"""The detector stage's work on a batch of frames: decode, detect, align, gate, encode. No Kafka here.

Load is shed by keeping the newest frame of each camera, not by age alone. A batch that holds several
frames of one camera means the pool is behind that camera: only its newest frame is detected, and the
older ones are published as `status="skipped"` without faces (every frame stays accounted for; counted
per camera, once per batch). So a pool at capacity always detects the freshest frame it has, and a
camera's tracks keep gathering faces, where a rule by age alone let a pool that fell behind detect one
frame, fall behind again, and skip all the rest. A frame older than `max_frame_age_ms` is still never
read (`status="stale"`): a backlog after an outage is worth nothing to a live view.

Every frame is measured by its JPEG header before it is decoded (a frame over `max_frame_pixels` is
refused unread), and any exception while one frame is detected is that frame's fault: it gets an
InvalidMessage (dead-lettered), the others go on. Quality gates drop faces the embedder would only get
wrong: too small, too unsure, too blurred (variance of the Laplacian of the aligned crop).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from shared import metrics
from shared.schemas import DetectedFace, Frame, FrameFaces
from shared.stage import InvalidMessage, Output, Result, per_item
from shared.vision.images import ImageRefused, decode_jpeg as decode_image, encode_jpeg

STAGE = "detector"
MAX_FRAME_PIXELS = 3840 * 2160  # 4K: the default limit of a frame's size, checked on its header
MAX_CLOCK_AHEAD_S = 60.0  # cameras' clocks drift; a frame further ahead than this is refused
MAX_OUTPUT_BYTES = 900_000  # a frame's faces message stays under the producer's 1 MiB request limit


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


def decode_jpeg(jpeg: bytes, max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """JPEG bytes to HxWx3 uint8 RGB, the header checked first; a corrupt image or one over the pixel
    limit is an invalid message (dead-lettered)."""
    try:
        rgb = decode_image(jpeg, max_pixels=max_pixels)
    except ImageRefused as e:
        if str(e).startswith("not a JPEG"):
            raise InvalidMessage(f"frame payload is not a decodable JPEG: {e}") from None
        raise InvalidMessage(f"frame refused before decoding: {e}") from None
    if rgb is None:
        raise InvalidMessage(f"frame payload is not a decodable JPEG ({len(jpeg)} bytes)")
    return rgb


def encode_crop(crop_rgb: np.ndarray, quality: int) -> bytes:
    return encode_jpeg(crop_rgb, quality)


def detect_frame(frame: Frame, detect: Callable[[np.ndarray], list], gates: Gates, crop_quality: int,
                 max_pixels: int = MAX_FRAME_PIXELS) -> FrameFaces:
    """Every face of one frame that passes the gates, with its aligned crop as JPEG."""
    rgb = decode_jpeg(frame.jpeg, max_pixels)
    kept, size = [], 0
    for face in sorted(detect(rgb), key=lambda f: -f.face_size):
        why = gates.reason(face)
        if why is None and len(kept) >= gates.max_faces:
            why = "max_faces"
        if why:
            metrics.FACES_REJECTED.labels(why).inc()
            continue
        crop = encode_crop(face.crop, crop_quality)
        # a fused model's further towers get their own crops, aligned from the same landmarks
        more = tuple(encode_crop(c, crop_quality) for c in getattr(face, "crops", (face.crop,))[1:])
        cost = len(crop) + sum(len(c) for c in more)
        if size + cost > MAX_OUTPUT_BYTES:  # a crowd at max_faces 1000 must not make an unsendable message
            metrics.FACES_REJECTED.labels("output_size").inc()
            continue
        size += cost
        kept.append(DetectedFace(face.box, face.prob, tuple(float(v) for v in face.landmarks.ravel()),
                                 crop, float(face.face_size), float(face.blur), more))
    metrics.FACES_PER_FRAME.labels(STAGE).observe(len(kept))
    return FrameFaces(frame.camera_id, frame.seq, frame.capture_ts, frame.width, frame.height, tuple(kept),
                      detect_ts=time.time(), session=frame.session)


def newest_first_by_camera(frames: list[Frame], rows: list[int]) -> dict[str, list[int]]:
    """The rows of each camera, newest frame first (capture time, then seq)."""
    by_cam: dict[str, list[int]] = {}
    for i in rows:
        by_cam.setdefault(frames[i].camera_id, []).append(i)
    for rows_of in by_cam.values():
        rows_of.sort(key=lambda i: (frames[i].capture_ts, frames[i].seq), reverse=True)
    return by_cam


def make_process(detect: Callable[[np.ndarray], list], gates: Gates, faces_topic: str, max_frame_age_s: float,
                 crop_quality: int = 95, clock: Callable[[], float] = time.time, newest_only: bool = True,
                 max_pixels: int = MAX_FRAME_PIXELS):
    """The stage's batch function: one FrameFaces output per input frame (detected, skipped or stale), or
    the reason a frame can never be read (an InvalidMessage in its place: the loop dead-letters it)."""

    def marked(frame: Frame, status: str) -> FrameFaces:
        return FrameFaces(frame.camera_id, frame.seq, frame.capture_ts, frame.width, frame.height, (),
                          detect_ts=clock(), status=status, session=frame.session)

    def process(frames: list[Frame]) -> list[Result]:
        now = clock()
        result: list[FrameFaces | InvalidMessage | None] = [None] * len(frames)
        live = []
        for i, frame in enumerate(frames):
            if frame.capture_ts > now + MAX_CLOCK_AHEAD_S:  # would sort newest forever and never go stale
                result[i] = InvalidMessage(f"captured {frame.capture_ts - now:.0f} s in the future: the camera's "
                                           "clock is wrong, or the frame is forged")
            elif max_frame_age_s > 0 and now - frame.capture_ts > max_frame_age_s:
                result[i] = marked(frame, "stale")
            else:
                live.append(i)
        stale = sum(1 for r in result if isinstance(r, FrameFaces))
        if stale:
            metrics.STALE_DROPPED.labels(STAGE).inc(stale)
        groups = newest_first_by_camera(frames, live) if newest_only else {str(i): [i] for i in live}
        for rows in groups.values():
            done = False
            for i in rows:  # the newest frame that can be read is detected; the older ones are skipped
                if done:
                    result[i] = marked(frames[i], "skipped")
                    continue
                got = per_item(lambda: detect_frame(frames[i], detect, gates, crop_quality, max_pixels))
                result[i] = got
                done = not isinstance(got, InvalidMessage)
            shed = sum(1 for i in rows if isinstance(result[i], FrameFaces) and result[i].status == "skipped")
            if shed:
                metrics.FRAMES_SHED.labels(STAGE, frames[rows[0]].camera_id).inc(shed)
        return [r if isinstance(r, InvalidMessage) else [Output(faces_topic, f.camera_id.encode(), r.encode())]
                for f, r in zip(frames, result)]

    return process
