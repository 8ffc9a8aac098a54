"""The vision core in a few calls, in the spirit of face_recognition's `api.py`:

    from shared.vision import api
    rec = api.Recognizer.load()                         # the default checkpoint, its template and threshold
    faces = rec.detect(api.load_image("group.jpg"))     # every face, aligned, highest probability first
    vecs = rec.embed(faces)                             # (N, D) unit vectors
    api.compare(known_vecs, vecs[0], rec.threshold)     # which known faces are this person
    matches = rec.identify(rgb, index)                  # names, boxes, scores against a gallery index

`gallery`, `recognize`, the benchmarks and the API build on `Recognizer`, so that a photo is detected,
aligned and embedded exactly as the pipeline's detector and embedder do it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from shared.vision.images import load_rgb

__all__ = ["Match", "Recognizer", "compare", "load_image", "similarity"]


def load_image(path: str | Path) -> np.ndarray:
    """A photo as HxWx3 uint8 RGB, EXIF rotation applied."""
    return load_rgb(path)


def similarity(known: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each known unit vector (N, D) with one candidate (D,): (N,) float."""
    known = np.asarray(known, np.float32).reshape(-1, np.asarray(candidate).shape[-1])
    return known @ np.asarray(candidate, np.float32)


def compare(known: np.ndarray, candidate: np.ndarray, threshold: float) -> np.ndarray:
    """Which known faces are the candidate's person: cosine similarity at or above `threshold`, (N,) bool."""
    return similarity(known, candidate) >= threshold


class Index(Protocol):
    """What `identify` needs of a gallery: the best name and score of each vector."""

    def search(self, vectors: np.ndarray) -> tuple[list, np.ndarray]: ...


@dataclass(frozen=True)
class Match:
    """One face of an image, named (`name`) when its best match scores at or above the threshold."""
    name: str | None
    best_match: str | None
    score: float
    box: tuple[float, float, float, float]
    prob: float


class Recognizer:
    """A detector and an embedding model that agree on the alignment template, and the threshold."""

    def __init__(self, detector, model, threshold: float | None = None):
        self.detector, self.model = detector, model
        self.threshold = model.threshold if threshold is None else float(threshold)

    @classmethod
    def load(cls, model_path: str | Path | None = None, *, device: str = "cpu", min_face_size: int = 40,
             threshold: float | None = None, refine: str | bool = "onet") -> "Recognizer":
        """The checkpoint (default models/facestream.pt or $FACESTREAM_MODEL) and an MTCNN detector aligned
        to its template (`refine`: "onet", "cascade" or "off", as `FaceDetector`; True means "onet")."""
        from shared.vision.detect import FaceDetector
        from shared.vision.embed import EmbeddingModel

        model = EmbeddingModel.load(model_path, device=device)
        detector = FaceDetector(model.templates, min_face_size=min_face_size, refine=refine)
        return cls(detector, model, threshold)

    def detect(self, rgb: np.ndarray) -> list:
        """Every face in the image (`shared.vision.detect.Face`), largest first."""
        return self.detector.detect(rgb)

    def embed(self, faces: Sequence) -> np.ndarray:
        """(N, D) unit vectors of the faces' aligned crops."""
        return self.model.embed_faces(faces)

    def identify(self, rgb: np.ndarray, index: Index) -> list[Match]:
        """Every face of the image against `index`: a name where the score reaches the threshold."""
        if self.threshold is None:
            raise ValueError("the model has no calibrated threshold: pass one")
        faces = self.detect(rgb)
        names, scores = index.search(self.embed(faces))
        return [Match(n if s >= self.threshold else None, n, float(s), tuple(float(v) for v in f.box), float(f.prob))
                for f, n, s in zip(faces, names, scores)]
