"""Real inputs for the benchmarks, made once and cached under .run/bench-cache/.

Frames are real video frames encoded the way ingest encodes them; face crops are real LFW faces through
the pipeline's own detector and alignment (shared.vision.detect.FaceDetector), so that every stage
sees the payload sizes and content it sees in production.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.common import CACHE, DATA
from shared.schemas import DetectedFace, Frame, FrameFaces

# Real clips at the two sizes the issue names: 640x360 and 1280x720 are their native sizes.
CLIPS = {"640x360": "hamilton_lin_manuel_miranda_9s.mp4", "1280x720": "biden_2021_7s.mp4",
         "1920x1080": "crowd_royal_opera_house_unlabeled_4s.mp4"}


@dataclass(frozen=True)
class VideoFrame:
    rgb: np.ndarray  # HxWx3 uint8, the decoded frame as the detector sees it after its own decode
    jpeg: bytes  # as ingest publishes it (quality 85)


def video_frames(size: str, count: int, step: int = 5, quality: int = 85) -> list[VideoFrame]:
    """`count` frames of the clip for `size` (every `step`-th frame, so that faces move), JPEG-encoded
    with ingest's own encoder and decoded back, so that MTCNN sees exactly what the detector decodes."""
    from services.ingest.cameras import encode_to_fit

    width = int(size.split("x")[0])
    cap = cv2.VideoCapture(str(DATA / "videos" / CLIPS[size]))
    out: list[VideoFrame] = []
    i = 0
    try:
        while len(out) < count:
            ok, bgr = cap.read()
            if not ok:
                if i == 0:
                    raise RuntimeError(f"cannot read {CLIPS[size]}")
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # a short clip: wrap around
                continue
            if i % step == 0:
                enc = encode_to_fit(bgr, quality, width, 900_000)
                rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(enc.jpeg, np.uint8), cv2.IMREAD_COLOR),
                                   cv2.COLOR_BGR2RGB)
                out.append(VideoFrame(rgb, enc.jpeg))
            i += 1
    finally:
        cap.release()
    return out


def frame_messages(frames: list[VideoFrame], camera_id: str, start_seq: int = 0) -> list[Frame]:
    now = time.time()
    return [Frame(camera_id, start_seq + i, now, f.rgb.shape[1], f.rgb.shape[0], f.jpeg) for i, f in enumerate(frames)]


def aligned_crops(detector, count: int = 64) -> np.ndarray:
    """(count, S, S, 3) uint8 aligned crops of real LFW faces, one per person, through `detector`
    (a FaceDetector); cached by the detector's settings so that a template change remakes them."""
    key = hashlib.sha1(detector.settings_key().encode()).hexdigest()[:10]
    path = CACHE / f"crops-{key}-{count}.npy"
    if path.exists():
        return np.load(path)
    from shared.vision.detect import pick_face
    from shared.vision.images import load_rgb

    people = sorted(p for p in (DATA / "lfw" / "images").iterdir() if p.is_dir())
    crops = []
    for person in people:
        img = sorted(person.glob("*.jpg"))[0]
        rgb = load_rgb(img)
        face = pick_face(detector.detect(rgb), rgb.shape, "center")
        if face is not None and face.prob >= 0.95:
            crops.append(face.crop)
        if len(crops) == count:
            break
    arr = np.stack(crops)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def aligned_crop_sets(detector, count: int = 64) -> tuple[np.ndarray, ...]:
    """`aligned_crops` for every template of the detector (a fused model's towers), row for row: the first
    template's crops, then each further one's, aligned from the same landmarks."""
    if len(detector.templates) == 1:
        return (aligned_crops(detector, count),)
    key = hashlib.sha1((detector.settings_key() + str([t.to_dict() for t in detector.templates])).encode()
                       ).hexdigest()[:10]
    path = CACHE / f"crop-sets-{key}-{count}.npz"
    if path.exists():
        z = np.load(path)
        return tuple(z[f"t{k}"] for k in range(len(detector.templates)))
    from shared.vision.detect import pick_face
    from shared.vision.images import load_rgb

    rows = []
    for person in sorted(p for p in (DATA / "lfw" / "images").iterdir() if p.is_dir()):
        rgb = load_rgb(sorted(person.glob("*.jpg"))[0])
        face = pick_face(detector.detect(rgb), rgb.shape, "center")
        if face is not None and face.prob >= 0.95:
            rows.append(face.crops)
        if len(rows) == count:
            break
    sets = tuple(np.stack([r[k] for r in rows]) for k in range(len(detector.templates)))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"t{k}": v for k, v in enumerate(sets)})
    return sets


def take(sets: tuple[np.ndarray, ...], idx) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(c)[idx] for c in sets)


def model_crops(model, sets: tuple[np.ndarray, ...]):
    """What `EmbeddingModel.embed` takes for these crop sets: one batch, or one per tower of a fused model."""
    return sets if model.fused else sets[0]


def default_detector(model_path=None):
    """The detector the pipeline runs for a checkpoint (default: the pipeline's): every template of its
    towers, min face size 40."""
    from shared.vision import checkpoint, meta

    from shared.vision.detect import FaceDetector

    return FaceDetector(checkpoint.templates_of(meta.read_meta(model_path or meta.default_path())), min_face_size=40)


def crop_jpegs(crops: np.ndarray, quality: int = 95) -> list[bytes]:
    """Crops as the detector publishes them (its default crop quality)."""
    from services.detector.stage import encode_crop

    return [encode_crop(c, quality) for c in crops]


def frame_faces(jpegs: list[bytes], n_frames: int, faces_per_frame: int, camera_ids: list[str],
                start_seq: int = 0, more_jpegs: list[bytes] | None = None) -> list[FrameFaces]:
    """Synthetic detector output around real crops: frame i of camera i % len(camera_ids), seq per camera;
    `more_jpegs`: the same faces' crops for a fused model's second tower (faces/v3 `more_crops`)."""
    out, seqs, k = [], {c: start_seq for c in camera_ids}, 0
    now = time.time()
    for i in range(n_frames):
        cam = camera_ids[i % len(camera_ids)]
        faces = []
        for j in range(faces_per_frame):
            x = 40.0 + 160 * j
            more = (more_jpegs[k % len(more_jpegs)],) if more_jpegs else ()
            faces.append(DetectedFace((x, 40.0, x + 120, 180.0), 0.999, tuple(float(v) for v in range(10)),
                                      jpegs[k % len(jpegs)], 120.0, 100.0, more))
            k += 1
        out.append(FrameFaces(cam, seqs[cam], now, 640, 360, tuple(faces), detect_ts=now))
        seqs[cam] += 1
    return out


def looped_clip(name: str, plays: int) -> Path:
    """A video file that is `plays` back-to-back copies of a clip (same size and frame rate): a file camera
    long enough for the lag to settle, which ingest then plays at its real frame rate."""
    path = CACHE / f"{Path(name).stem}-x{plays}.mp4"
    if path.exists():
        return path
    src = DATA / "videos" / name
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(plays):
        for bgr in frames:
            out.write(bgr)
    out.release()
    tmp.rename(path)
    return path
