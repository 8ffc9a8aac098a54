"""dlib's own face pipeline, scored under facestream's protocol: the baseline of `make bench-accuracy`.

dlib's pipeline is what a user would otherwise pick: its HOG detector (upsampled once), its 5-point shape
predictor, `get_face_chip(150, padding 0.25)` and its ResNet descriptor, compared by Euclidean distance.
It runs from PyPI `dlib-bin` and `face_recognition_models` (CC0 model files), installed into the venv on
first use; the `face_recognition` package itself is not used (it exits silently next to setuptools >= 81).
About 100 ms per image for dlib on this CPU: ~13 min for LFW View 2 the first time, cached afterwards.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shared import paths
from training import impostors
from training.eval_protocol import summarize

DLIB_REQUIREMENTS = ("dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0")
DLIB_NO_FACE_SCORE = -10.0  # scores are minus Euclidean distances, which stay above -2 for dlib's vectors
CACHE = paths.CACHE_DIR / "dlib"


def ensure_dlib():
    """Import dlib, pip-installing the two pinned packages into this interpreter's environment if needed.
    Returns (dlib module, folder of face_recognition_models' .dat files)."""
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        print(f"installing {' '.join(DLIB_REQUIREMENTS)} into {sys.prefix}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *DLIB_REQUIREMENTS])
        importlib.invalidate_caches()
    import dlib

    # Not `import face_recognition_models`: its __init__ needs pkg_resources, gone from setuptools >= 81.
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return dlib, models


class DlibPipeline:
    """dlib's detector + 5 landmarks + face chip + ResNet descriptor, one face per image."""

    def __init__(self, rule: str, upsample: int = 1):
        dlib, models = ensure_dlib()
        self.dlib, self.rule, self.upsample = dlib, rule, upsample
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.version = f"dlib-{dlib.__version__}-resnet_v1"

    def describe(self, rgb: np.ndarray) -> np.ndarray | None:
        rects = list(self.detector(rgb, self.upsample))
        if not rects:
            return None
        if self.rule == "center":
            cy, cx = rgb.shape[0] / 2, rgb.shape[1] / 2
            r = min(rects, key=lambda r: ((r.left() + r.right()) / 2 - cx) ** 2 + ((r.top() + r.bottom()) / 2 - cy) ** 2)
        else:
            r = max(rects, key=lambda r: r.width() * r.height())
        chip = self.dlib.get_face_chip(rgb, self.shape(rgb, r), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip), np.float32)

    @staticmethod
    def _save(cache: Path, known: dict[str, np.ndarray | None]) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        names = list(known)
        tmp = cache.with_name(f"{cache.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, paths=np.array(names), found=np.array([known[p] is not None for p in names]),
                 desc=np.stack([known[p] if known[p] is not None else np.zeros(128, np.float32) for p in names]))
        os.replace(tmp, cache)

    def describe_all(self, paths: list[str], root: Path, quiet: bool) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors (N, 128), found (N,)) for the paths, cached under .run/cache/dlib/."""
        from tqdm import tqdm

        from shared.vision.images import load_rgb

        key = hashlib.sha1(f"{root.resolve()}|{self.version}|{self.rule}|{self.upsample}".encode()).hexdigest()[:16]
        cache = CACHE / f"{key}.npz"
        known: dict[str, np.ndarray | None] = {}
        if cache.exists():
            z = np.load(cache)
            known = {p: (d if f else None) for p, d, f in zip(z["paths"].tolist(), z["desc"], z["found"])}
        todo = [p for p in dict.fromkeys(paths) if p not in known]
        for i, p in enumerate(todo if quiet else tqdm(todo, desc="dlib", unit="img", file=sys.stderr), 1):
            known[p] = self.describe(load_rgb(root / p))
            if i % 1000 == 0 or i == len(todo):  # an interrupted run keeps most of its work
                self._save(cache, known)
        desc = np.stack([known[p] if known[p] is not None else np.zeros(128, np.float32) for p in paths])
        return desc, np.array([known[p] is not None for p in paths])


def score_dlib(pairs: list, root: Path, rule: str, far: float, quiet: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """dlib's report under the same protocol as `eval_protocol.run_eval`."""
    pipe = DlibPipeline(rule)
    paths = list(dict.fromkeys(p for pr in pairs for p in (pr.path1, pr.path2)))
    t0 = time.perf_counter()
    desc, found = pipe.describe_all(paths, root, quiet)
    secs = time.perf_counter() - t0
    idx = {p: i for i, p in enumerate(paths)}
    i1, i2 = (np.array([idx[getattr(p, k)] for p in pairs]) for k in ("path1", "path2"))
    dist = np.linalg.norm(desc[i1] - desc[i2], axis=1).astype(np.float64)
    scores = np.where(found[i1] & found[i2], -dist, DLIB_NO_FACE_SCORE)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    summary = summarize(scores, same, folds, None, far)
    summary["tar_at_far"]["euclidean_distance"] = -summary["tar_at_far"].pop("threshold")
    bad = scores == DLIB_NO_FACE_SCORE
    imp = impostors.within_fold_impostors(desc, found, idx, pairs, euclidean=True)
    summary["operating_points"] = {"protocol": "as ours: within-fold impostor pairs; score = -distance",
                                   **impostors.tar_at_fars(scores[same], imp)}
    report = {"model_version": pipe.version, "pipeline": "dlib HOG (upsample 1) + 5-point shape predictor + "
              "get_face_chip(150, 0.25) + dlib_face_recognition_resnet_model_v1; score = -Euclidean distance",
              "face_choice": rule, **summary,
              "no_face": {"images": [p for p, f in zip(paths, found) if not f], "pairs": int(bad.sum()),
                          "same_pairs_counted_wrong": int((bad & same).sum())},
              "seconds": {"describe": round(secs, 1), "images": len(paths)}}
    return report, scores, same
