"""Photos to gallery embeddings through the same detector, alignment and model as the pipeline.

A photo yields one embedding or a refusal that says which file and why: unreadable, no face, several
faces with no rule to choose, or a face too small or too unsure to trust. Nothing is written for a
refused photo; by default nothing is written for the person at all if any photo is refused.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"}
Pick = Literal["only", "largest"]


@dataclass(frozen=True)
class Accepted:
    path: Path
    embedding_id: str
    embedding: np.ndarray
    box: tuple[float, float, float, float]
    prob: float


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def expand(paths: list[str]) -> tuple[list[Path], list[Refused]]:
    """Files as given and the image files inside given folders (sorted); missing paths are refused."""
    files, refused = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                refused.append(Refused(p, "folder holds no image files"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            refused.append(Refused(p, "no such file or folder"))
    return files, refused


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Phone photos run to 4000 px; MTCNN's time grows with the area while an enrollment face needs only
    the model's 150 px, so large photos are shrunk before detection."""
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def embed_photos(files: list[Path], detector, model, pick: Pick = "only", min_face_size: float = 40.0,
                 min_prob: float = 0.95, max_side: int = 1600) -> list[Accepted | Refused]:
    """One result per file, in order. `detector.detect(rgb)` and `model.embed(crops)` as in the pipeline."""
    from shared.vision.images import load_rgb

    results: list[Accepted | Refused] = []
    for path in files:
        try:
            data = path.read_bytes()
            rgb = load_rgb(path)
        except Exception as e:  # PIL raises many kinds for a file that is not an image
            results.append(Refused(path, f"not a readable image ({type(e).__name__}: {e})"))
            continue
        results.append(embed_image(path, data, rgb, detector, model, pick, min_face_size, min_prob, max_side))
    return results


def embed_image(path: Path, data: bytes, rgb: np.ndarray, detector, model, pick: Pick = "only",
                min_face_size: float = 40.0, min_prob: float = 0.95, max_side: int = 1600) -> Accepted | Refused:
    """One decoded photo (`data`: its file's bytes, which name the embedding) to its embedding or refusal;
    the CLI's files and the API's uploads alike."""
    from shared.vision.detect import pick_face

    rgb = downscale(rgb, max_side)
    faces = [f for f in detector.detect(rgb) if f.prob >= min_prob and f.face_size >= min_face_size]
    if not faces:
        return Refused(path, f"no face found (none of at least {min_face_size:.0f} px with probability >= {min_prob})")
    if len(faces) > 1 and pick == "only":
        return Refused(path, f"{len(faces)} faces found and no rule to choose one: crop the photo to one person, "
                             "or pass --pick largest")
    face = pick_face(faces, rgb.shape, "largest")
    emb = model.embed_faces([face])[0]
    # the same photo and face enrolled twice keeps one embedding
    eid = hashlib.sha1(data + np.round(np.asarray(face.box), 0).tobytes()).hexdigest()[:16]
    return Accepted(path, eid, emb, face.box, face.prob)
