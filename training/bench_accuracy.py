"""`make bench-accuracy`: dlib's own face pipeline beside ours on the same LFW pairs, one JSON file.

    python -m training.bench_accuracy [--model PATH ...] [--cv PATTERN ...] [--both-flips] [--limit-folds N]

`make bench-accuracy` sets side by side: the pretrained tower as loaded, the shipped recipe (its last layer
fine-tuned, cross-validated over the 10 folds), deeper fine-tuning and the from-scratch tower where their
fold-0 checkpoints exist (trained on folds 1-9 only, so they score fold 0 alone), and dlib. Every row gets
the fold-0 column, the one fold every model can be scored on.

dlib's pipeline is what a user would otherwise pick: its HOG detector (upsampled once), its 5-point shape
predictor, `get_face_chip(150, padding 0.25)` and its ResNet descriptor, compared by Euclidean distance.
It runs from PyPI `dlib-bin` and `face_recognition_models` (CC0 model files), installed into the venv on
first use; the `face_recognition` package itself is not used (it exits silently next to setuptools >= 81).
Both sides use the same pairs, the same face choice (LFW: the face nearest the centre), the same 10-fold
protocol and the same rule for images with no face found (the pair counts as "different").
About 100 ms per image for dlib on this CPU: ~13 min for LFW View 2 the first time, cached afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shared import paths
from shared.vision import checkpoint
from training import evaluate, pair_metrics

DLIB_REQUIREMENTS = ("dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0")
DLIB_NO_FACE_SCORE = -10.0  # scores are minus Euclidean distances, which stay above -2 for dlib's vectors
OUT = paths.REPO_ROOT / "bench" / "results" / "accuracy.json"
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
    """dlib's report under the same protocol as `evaluate.run_eval`."""
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
    summary = evaluate.summarize(scores, same, folds, None, far)
    summary["tar_at_far"]["euclidean_distance"] = -summary["tar_at_far"].pop("threshold")
    bad = scores == DLIB_NO_FACE_SCORE
    report = {"model_version": pipe.version, "pipeline": "dlib HOG (upsample 1) + 5-point shape predictor + "
              "get_face_chip(150, 0.25) + dlib_face_recognition_resnet_model_v1; score = -Euclidean distance",
              "face_choice": rule, **summary,
              "no_face": {"images": [p for p, f in zip(paths, found) if not f], "pairs": int(bad.sum()),
                          "same_pairs_counted_wrong": int((bad & same).sum())},
              "seconds": {"describe": round(secs, 1), "images": len(paths)}}
    return report, scores, same


def fold_accuracy(r: dict, k: int) -> float | None:
    return next((f["accuracy"] for f in r["folds"] if f["fold"] == k), None)


def row(name: str, r: dict) -> str:
    t, f0 = r["tar_at_far"], fold_accuracy(r, 0)
    scored = [f["fold"] for f in r["folds"]]
    folds = "all 10" if len(scored) == 10 else ", ".join(map(str, scored))
    mean = (f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f}" if len(scored) > 1
            else "(one fold)")
    tar = f"{100 * t['tar']:.2f}" if t["n_different_pairs"] >= 1000 else "(too few pairs)"
    return (f"| {name} | {folds} | {mean} | {'-' if f0 is None else f'{100 * f0:.2f}'} | {r['auc']:.4f} | "
            f"{tar} | {len(r['no_face']['images'])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench_accuracy", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, action="append", default=None,
                   help="our checkpoint(s) to score (repeatable; default: the pipeline's default model)")
    p.add_argument("--cv", action="append", default=[], metavar="PATTERN",
                   help="a recipe cross-validated by fold checkpoints, e.g. 'out/train/head-fold{k}/ckpt.pt'")
    p.add_argument("--both-flips", action="store_true", help="score each of our models with and without flip")
    p.add_argument("--limit-folds", type=int, default=None, help="only the first N folds (quick runs)")
    p.add_argument("--far", type=float, default=1e-3)
    p.add_argument("--json", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    pairs, root, dataset, rule = evaluate.load_pair_set(None, None, "lfw")
    if a.limit_folds:
        pairs = [pr for pr in pairs if pr.fold < a.limit_folds]
        dataset += f"-first{a.limit_folds}folds"
    results, curves = [], {}
    for model in a.model if a.model is not None else ([] if a.cv else [checkpoint.default_path()]):
        for flip in ((False, True) if a.both_flips else (None,)):
            r, s, y = evaluate.run_eval(model, pairs, root, dataset, rule, flip=flip, far=a.far, quiet=a.quiet)
            name = f"ours: {Path(model).parent.name}/{Path(model).name} ({r['model_version']}), flip={r['flip_average']}"
            results.append({"name": name, **{k: v for k, v in r.items() if k != "identity_disjoint"},
                            "identity_disjoint": {k: v for k, v in r["identity_disjoint"].items()
                                                  if k != "trained_people"}})
            curves[name] = pair_metrics.roc_curve(s, y)[:2]
    for pattern in a.cv:
        r, s, y = evaluate.run_cv(pattern, pairs, root, dataset, rule, flip=None, far=a.far, quiet=a.quiet)
        name = f"ours, cross-validated: {pattern} ({r['model_version']}), flip={r['flip_average']}"
        results.append({"name": name, **r})
        curves[name] = pair_metrics.roc_curve(s, y)[:2]
    r, s, y = score_dlib(pairs, root, rule, a.far, a.quiet)
    results.append({"name": "dlib (dlib-bin 20.0.1.post1 + face_recognition_models 0.3.0)", **r})
    curves[results[-1]["name"]] = pair_metrics.roc_curve(s, y)[:2]

    table = ["| model | folds scored | accuracy % (mean +- std over folds) | fold 0 % | AUC | TAR % at FAR 1e-3 | "
             "images without a face |", "|---|---|---|---|---|---|---|"] + [row(x["name"], x) for x in results]
    png = evaluate.plot_roc(curves, a.json.with_suffix(".png"), f"{dataset}: ROC")
    report = {"dataset": dataset, "n_pairs": len(pairs), "protocol": "threshold for fold k chosen on the other "
              "folds; TAR@FAR over all pairs pooled; a pair with no face found is scored 'different'",
              "command": "python -m training.bench_accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": a.threads},
              "seconds_total": round(time.perf_counter() - t0, 1), "results": results, "table": table,
              "roc_png": str(png)}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=1))
    print("\n".join(table))
    print(f"took {report['seconds_total']:.0f} s; report {a.json}, ROC {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
