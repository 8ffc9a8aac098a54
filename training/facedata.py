"""Training faces in memory: uint8 crops at the tower's input size, with a label per crop.

Three sources: identity folders of photos (detected and aligned like the pipeline does), identity folders
of ready face crops (ORL: resized only), and LFW's people outside one View 2 fold (aligned, cached by
`shared.vision.crop_cache`), so that the model can later be scored on that fold without seeing any of its people.
`load_faces` picks the one a training config names; `split_people` holds some people out to monitor.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import sys

import cv2
import numpy as np

from shared import paths as repo_paths
from shared.vision.align import DLIB_150, AlignTemplate, align, scaled_template
from shared.vision.crop_cache import align_images, align_people
from shared.vision.images import load_rgb
from training.pairs import scan_identity_folders

if TYPE_CHECKING:
    from training.train_config import TrainConfig

Progress = Callable[[Iterable], Iterable] | None


@dataclass(frozen=True)
class FaceSet:
    """crops[i] (S x S x 3 uint8 RGB) shows person names[labels[i]]."""
    crops: np.ndarray
    labels: np.ndarray
    names: list[str]
    source: str
    paths: list[str] | None = None  # image of each crop, relative to its root, when known (feature caches)

    def __len__(self) -> int:
        return len(self.labels)


def realign(paths: list[str], landmarks: np.ndarray, root: Path, template: AlignTemplate) -> np.ndarray:
    """Crops warped straight onto `template` from the detector's landmarks (cached at the 150-px template):
    the very crops the pipeline makes at that template, without running MTCNN again. Resizing 150-px chips
    instead would differ from the pipeline's direct bilinear warp (which aliases when it shrinks)."""
    blank = np.zeros((template.size, template.size, 3), np.uint8)  # rows where no face was found
    return np.stack([align(load_rgb(root / p), lm, template) if np.ptp(lm) > 0 else blank
                     for p, lm in zip(paths, landmarks)])


def _crops_at(s, rows: np.ndarray, root: Path, size: int) -> np.ndarray:
    """Rows of an aligned set (cut at the 150-px template) as crops of `size` px, as the pipeline would cut
    them for the template scaled to that size."""
    if size == DLIB_150.size:
        return np.asarray(s.crops[rows])
    return realign([s.paths[i] for i in rows], s.landmarks[rows], root, scaled_template(DLIB_150, size))


def _square(rgb: np.ndarray) -> np.ndarray:
    """Centre crop to a square (ORL is 92 x 112: this trims forehead and chin a little)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return rgb[y:y + s, x:x + s]


def load_crop_folders(root: str | Path, size: int) -> FaceSet:
    """Identity folders whose images already are face crops: centre-square, resize, no detection."""
    ids = scan_identity_folders(root)
    crops = np.stack([cv2.resize(_square(load_rgb(p)), (size, size), interpolation=cv2.INTER_AREA)
                      for p in ids.paths])
    return FaceSet(crops, ids.labels, ids.names, f"crops:{Path(root).resolve()}")


def load_photo_folders(root: str | Path, size: int, progress: Progress = None) -> FaceSet:
    """Identity folders of photos: MTCNN + the dlib-150 template (the pipeline's detector), the largest
    face of each photo, cached; photos with no face are dropped."""
    from shared.vision.detect import FaceDetector

    root = Path(root)
    ids = scan_identity_folders(root)
    rel = [str(p.relative_to(root)) for p in ids.paths]
    s = align_images(rel, root, FaceDetector(DLIB_150), "largest", progress=progress)
    keep = np.flatnonzero(s.found)
    return FaceSet(_crops_at(s, keep, root, size), ids.labels[keep], ids.names, f"photos:{root.resolve()}")


def load_lfw_other_folds(fold: int, size: int, progress: Progress = None) -> tuple[FaceSet, list[str]]:
    """LFW people of every `people.txt` fold but `fold` (-1: of every fold), aligned like eval aligns LFW
    (face nearest the centre). Returns the set and the sorted list of those people (the checkpoint's
    `trained_people`)."""
    from shared.vision.detect import FaceDetector
    from training import lfw

    root = repo_paths.data_root() / "lfw"
    people = sorted(lfw.people_outside_fold(root / "people.txt", fold))
    s, person_of_row = align_people(people, root / "images", FaceDetector(DLIB_150), "center", progress)
    names = sorted(set(person_of_row))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[n] for n in person_of_row], np.int64)
    crops = _crops_at(s, np.arange(len(s.paths)), root / "images", size)
    source = "lfw-all-people" if fold < 0 else f"lfw-people-outside-fold-{fold}"
    return FaceSet(crops, labels, names, source, list(s.paths)), people


def load_faces(cfg: TrainConfig, size: int) -> tuple[FaceSet, list[str]]:
    """The training faces at `size` px, and every person they come from (the checkpoint's trained_people)."""
    from tqdm import tqdm

    def bar(it):
        return tqdm(it, desc="detect+align", unit="img", file=sys.stderr, disable=cfg.quiet)

    if cfg.lfw_fold is not None:
        return load_lfw_other_folds(cfg.lfw_fold, size, progress=bar)
    faces = (load_crop_folders(cfg.data, size) if cfg.data_kind == "crops"
             else load_photo_folders(cfg.data, size, progress=bar))
    return faces, list(faces.names)


def split_people(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): `share` of the people with two or more images held out, seeded."""
    rows = np.arange(len(labels))
    people, counts = np.unique(labels, return_counts=True)
    multi = people[counts >= 2]
    n_val = int(round(share * len(multi)))
    if n_val < 2:
        return rows, rows[:0]
    held = np.random.default_rng(seed).choice(multi, n_val, replace=False)
    mask = np.isin(labels, held)
    return rows[~mask], rows[mask]
