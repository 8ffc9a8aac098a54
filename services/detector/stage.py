"""The detector stage's work on a batch of frames: decode, detect, align, gate, encode. No Kafka here.

Load is shed by keeping the newest frame of each camera, not by age alone. A batch that holds several
frames of one camera means the pool is behind that camera: only its newest frame is detected, and the
older ones are published as `status="skipped"` without faces (every frame stays accounted for; counted
per camera, once per batch). So a pool at capacity always detects the freshest frame it has, and a
camera's tracks keep gathering faces, where a rule by age alone let a pool that fell behind detect one
frame, fall behind again, and skip all the rest. An older frame younger than `shed_grace_s` is detected
too: two frames of a camera in one batch are as often a pool briefly late (one slow batch, a busy
neighbour process) as one that is behind, and shedding those lost 6.5% of the frames of 3 cameras on a
detector 61% busy (`make bench`, pipeline). Past the grace the pool is behind, and sheds: its lag stays
near the grace. A frame older than `max_frame_age_ms` is still never read (`status="stale"`): a backlog
after an outage is worth nothing to a live view.

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
from services.detector.motion import MotionGate, thumbnail

STAGE = "detector"
MAX_FRAME_PIXELS = 3840 * 2160  # 4K: the default limit of a frame's size, checked on its header
MAX_CLOCK_AHEAD_S = 60.0  # cameras' clocks drift; a frame further ahead than this is refused
BATCH_PIXELS = 4 * 1920 * 1080  # frames detected in one MTCNN call: at most about four 1080p frames
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


def faces_message(frame: Frame, faces: list, gates: Gates, crop_quality: int) -> FrameFaces:
    """The faces of one detected frame that pass the gates, with their aligned crops as JPEG."""
    kept, size = [], 0
    for face in sorted(faces, key=lambda f: -f.face_size):
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


def detect_frame(frame: Frame, detect: Callable[[np.ndarray], list], gates: Gates, crop_quality: int,
                 max_pixels: int = MAX_FRAME_PIXELS) -> FrameFaces:
    """Every face of one frame that passes the gates, with its aligned crop as JPEG."""
    return faces_message(frame, detect(decode_jpeg(frame.jpeg, max_pixels)), gates, crop_quality)


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
                 max_pixels: int = MAX_FRAME_PIXELS,
                 detect_many: Callable[[list[np.ndarray]], list[list]] | None = None,
                 motion: MotionGate | None = None, shed_grace_s: float = 0.0):
    """The stage's batch function: one FrameFaces output per input frame (detected, skipped, unchanged or
    stale), or the reason a frame can never be read (an InvalidMessage in its place: the loop dead-letters it).

    `detect_many` (the service's FaceDetector.detect_many) detects the batch's chosen frames in one call,
    frames of one size through MTCNN together; if it raises, each frame is detected alone with `detect`, so
    that a frame that breaks the detector is refused alone. `motion` gates each camera's chosen frame
    (`services.detector.motion`); a camera's older frames younger than `shed_grace_s` are detected too,
    without the motion gate (it follows each camera forward in time, from its newest frame)."""

    def marked(frame: Frame, status: str) -> FrameFaces:
        return FrameFaces(frame.camera_id, frame.seq, frame.capture_ts, frame.width, frame.height, (),
                          detect_ts=clock(), status=status, session=frame.session)

    def detect_all(images: list[np.ndarray]) -> list:
        if detect_many is not None and len(images) > 1:
            got = per_item(lambda: detect_many(images))
            if not isinstance(got, InvalidMessage) and len(got) == len(images):
                return got
        return [per_item(lambda: detect(im)) for im in images]

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
        # Per camera (or per frame without shedding), rows newest first. Each round takes, from every group
        # still open, its next frame that decodes; those are gated, then detected together. A group is done
        # with its first frame that is read and its older frames past the grace (those are skipped); one whose
        # frame failed tries the next.
        groups = list((newest_first_by_camera(frames, live) if newest_only else {str(i): [i] for i in live}).values())
        cursor = [0] * len(groups)
        read = [False] * len(groups)

        def flush(chosen: list[tuple[int, int, np.ndarray, np.ndarray | None]]) -> None:
            for (g, i, rgb, thumb), faces in zip(chosen, detect_all([c[2] for c in chosen])):
                f = frames[i]
                if not isinstance(faces, InvalidMessage):
                    faces = per_item(lambda: faces_message(f, faces, gates, crop_quality))
                result[i] = faces
                if isinstance(faces, InvalidMessage):
                    continue  # the group tries its next frame
                read[g] = True
                if thumb is not None:
                    motion.detected(f.camera_id, f.capture_ts, thumb, len(faces.faces))

        open_ = list(range(len(groups)))
        while open_:
            chosen: list[tuple[int, int, np.ndarray, np.ndarray | None]] = []
            pixels = 0
            for g in open_:
                rows = groups[g]
                while cursor[g] < len(rows):
                    i = rows[cursor[g]]
                    if read[g] and (shed_grace_s <= 0 or now - frames[i].capture_ts > shed_grace_s):
                        cursor[g] = len(rows)  # this and every older frame of the camera: shed
                        break
                    cursor[g] += 1
                    rgb = per_item(lambda: decode_jpeg(frames[i].jpeg, max_pixels))
                    if isinstance(rgb, InvalidMessage):
                        result[i] = rgb
                        continue
                    f = frames[i]
                    thumb = None
                    if motion is not None and not read[g] and motion.enabled(f.camera_id):
                        thumb = per_item(lambda: thumbnail(rgb))
                        thumb = None if isinstance(thumb, InvalidMessage) else thumb  # no gate: detect it
                    if thumb is not None and not motion.needs_detection(f.camera_id, f.capture_ts, thumb):
                        result[i] = marked(f, "unchanged")
                        metrics.FRAMES_UNCHANGED.labels(STAGE, f.camera_id).inc()
                        cursor[g] = len(rows)
                    else:
                        chosen.append((g, i, rgb, thumb))
                        pixels += rgb.shape[0] * rgb.shape[1]
                    break
                if pixels >= BATCH_PIXELS:  # decoded frames held at once stay bounded (16 4K frames: 400 MB)
                    flush(chosen)
                    chosen, pixels = [], 0
            flush(chosen)
            open_ = [g for g in open_ if cursor[g] < len(groups[g])]
        for rows in groups:
            shed = 0
            for i in rows:  # the older frames of a camera whose newer frame was read
                if result[i] is None:
                    result[i] = marked(frames[i], "skipped")
                    shed += 1
            if shed:
                metrics.FRAMES_SHED.labels(STAGE, frames[rows[0]].camera_id).inc(shed)
        return [r if isinstance(r, InvalidMessage) else [Output(faces_topic, f.camera_id.encode(), r.encode())]
                for f, r in zip(frames, result)]

    return process
