"""Face alignment: warp five landmarks onto the template that the embedding network was trained with.

Pure numpy/cv2, no model. The template matters more than anything else for accuracy: the 128-d ResNet
(a port of dlib's) learnt from dlib's 5-point face chips (150 px, padding 0.25), so MTCNN's five points are
mapped onto where those chips put the eyes, nose and mouth. A wrong template (e.g. ArcFace's 112-px one
scaled up) costs over 10 points of LFW accuracy with the very same weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AlignTemplate:
    """Where the five landmarks (MTCNN order: left eye, right eye, nose, mouth left, mouth right) land
    in a `size` x `size` crop, in crop pixels."""
    name: str
    size: int
    points: np.ndarray  # (5, 2) float32

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32).reshape(5, 2)
        pts.setflags(write=False)  # frozen means frozen: the array is shared by every crop
        object.__setattr__(self, "points", pts)
        if self.size < 8:
            raise ValueError(f"template {self.name!r}: size {self.size} is too small")

    def to_dict(self) -> dict:
        """Plain types, for checkpoints and JSON reports."""
        return {"name": self.name, "size": int(self.size), "points": self.points.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "AlignTemplate":
        return cls(name=str(d["name"]), size=int(d["size"]), points=np.asarray(d["points"], np.float32))

    def __eq__(self, other: object) -> bool:  # ndarray fields break the generated __eq__
        return (isinstance(other, AlignTemplate) and self.name == other.name and self.size == other.size
                and np.array_equal(self.points, other.points))

    def __hash__(self) -> int:
        return hash((self.name, self.size, self.points.tobytes()))


# MTCNN's five points as they sit, on average over LFW, in dlib's get_face_chip(size=150, padding=0.25)
# (measured; see shared/notes/face-models.md). The face-api / dlib ResNet expects exactly this framing.
DLIB_150 = AlignTemplate(
    name="dlib_150",
    size=150,
    points=np.array([[48.2, 46.6], [102.6, 46.7], [75.8, 79.0], [51.7, 104.9], [99.1, 105.0]], np.float32),
)


# ArcFace's five points in its 112 x 112 crop (insightface's `arcface_dst`): the framing MobileFaceNet learnt.
ARCFACE_112 = AlignTemplate(
    name="arcface_112",
    size=112,
    points=np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], np.float32),
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation; no reflection) mapping `src` points onto
    `dst` points in the least-squares sense (Umeyama 1991). Both are (N, 2), N >= 2."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("source points are all the same point")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    # Flip the weakest axis when the best orthogonal fit is a reflection: a mirrored face is not a face pose.
    e = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[-1] = -1.0
    rot = u @ np.diag(e) @ vt
    scale = (sig * e).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def align(rgb: np.ndarray, landmarks: np.ndarray, template: AlignTemplate = DLIB_150) -> np.ndarray:
    """Warp `rgb` (HxWx3 uint8) so that `landmarks` (5, 2) land on the template: a size x size x 3 uint8 crop.
    Pixels outside the image are black, as in the crops the network saw in training."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {rgb.shape}")
    m = similarity_transform(landmarks, template.points)
    return cv2.warpAffine(rgb, m, (template.size, template.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def scaled_template(template: AlignTemplate, size: int) -> AlignTemplate:
    """The same framing at another crop size (a 150-px dlib chip resized to `size`)."""
    if size == template.size:
        return template
    r = size / template.size
    # Pixel centres: x' + 0.5 = (x + 0.5) * r, as cv2.resize maps them.
    return AlignTemplate(f"{template.name}@{size}", size, (template.points + 0.5) * r - 0.5)
