"""Detected, aligned crops of a list of images, cached on disk: each image is detected once per detector
setting and face-choice rule, whoever asks (eval, training, the benchmarks).

The cache lives under .run/cache/aligned/<hash of images root + detector settings + template + rule>/:
crops.npy (memory-mapped on read) and meta.npz, grown as new images come and saved under a file lock,
so that two runs sharing it do not drop each other's work.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from shared import paths as repo_paths
from shared.vision.detect import FaceDetector, PickRule, pick_face
from shared.vision.images import load_rgb

CACHE_ROOT = repo_paths.CACHE_DIR / "aligned"


@dataclass(frozen=True)
class AlignedSet:
    """Detected, aligned faces of a list of images, row i for paths[i]; `found[i]` False when no face."""
    paths: list[str]
    crops: np.ndarray       # (N, S, S, 3) uint8; zeros where nothing was found
    found: np.ndarray       # (N,) bool
    n_faces: np.ndarray     # (N,) int: faces the detector saw in the image
    boxes: np.ndarray       # (N, 4) float32 of the chosen face
    probs: np.ndarray       # (N,) float32
    landmarks: np.ndarray   # (N, 5, 2) float32

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


def _cache_dir(images_root: Path, detector: FaceDetector, rule: str) -> Path:
    key = f"{images_root.resolve()}|{detector.settings_key()}|{rule}"
    return CACHE_ROOT / hashlib.sha1(key.encode()).hexdigest()[:16]


def _load_cache(d: Path) -> AlignedSet | None:
    if not (d / "meta.npz").exists():
        return None
    m = np.load(d / "meta.npz")
    crops = np.load(d / "crops.npy", mmap_mode="r")  # mapped: a subset costs what it reads
    return AlignedSet([str(p) for p in m["paths"]], crops, m["found"], m["n_faces"], m["boxes"], m["probs"],
                      m["landmarks"])


def _save_cache(d: Path, s: AlignedSet, settings: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    tmp = f".tmp{os.getpid()}"
    np.save(d / f"crops{tmp}.npy", np.ascontiguousarray(s.crops))
    np.savez(d / f"meta{tmp}.npz", paths=np.array(s.paths), found=s.found, n_faces=s.n_faces, boxes=s.boxes,
             probs=s.probs, landmarks=s.landmarks)
    os.replace(d / f"crops{tmp}.npy", d / "crops.npy")
    os.replace(d / f"meta{tmp}.npz", d / "meta.npz")
    (d / "settings.json").write_text(json.dumps(settings, indent=1))


def _detect(paths: Sequence[str], root: Path, detector: FaceDetector, rule: PickRule) -> AlignedSet:
    size = detector.template.size
    rows = {k: [] for k in ("crops", "found", "n_faces", "boxes", "probs", "landmarks")}
    for p in paths:
        rgb = load_rgb(root / p)
        faces = detector.detect(rgb)
        face = pick_face(faces, rgb.shape, rule)
        rows["found"].append(face is not None)
        rows["n_faces"].append(len(faces))
        rows["crops"].append(face.crop if face else np.zeros((size, size, 3), np.uint8))
        rows["boxes"].append(face.box if face else (0.0, 0.0, 0.0, 0.0))
        rows["probs"].append(face.prob if face else 0.0)
        rows["landmarks"].append(face.landmarks if face else np.zeros((5, 2), np.float32))
    crops = np.stack(rows["crops"]) if paths else np.zeros((0, size, size, 3), np.uint8)
    return AlignedSet(list(paths), crops, np.array(rows["found"], bool),
                      np.array(rows["n_faces"], np.int32), np.array(rows["boxes"], np.float32).reshape(-1, 4),
                      np.array(rows["probs"], np.float32), np.array(rows["landmarks"], np.float32).reshape(-1, 5, 2))


_FIELDS = ("crops", "found", "n_faces", "boxes", "probs", "landmarks")


def _merge(old: AlignedSet | None, new: AlignedSet) -> AlignedSet:
    if old is None:
        return new
    return AlignedSet(old.paths + new.paths, *(np.concatenate([getattr(old, k), getattr(new, k)]) for k in _FIELDS))


def _rows(s: AlignedSet, rows: Sequence[int]) -> AlignedSet:
    idx = np.asarray(rows, dtype=np.int64)
    return AlignedSet([s.paths[i] for i in idx], *(np.asarray(getattr(s, k)[idx]) for k in _FIELDS))


def _save_merged(d: Path, have: AlignedSet, settings: dict) -> AlignedSet:
    """Save under a lock, first taking in what another process (training, a second eval) added meanwhile,
    so that two runs sharing a cache do not drop each other's work."""
    import fcntl

    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = _load_cache(d)
        if disk is not None:
            mine = set(have.paths)
            extra = [i for i, p in enumerate(disk.paths) if p not in mine]
            if extra:
                have = _merge(have, _rows(disk, extra))
        _save_cache(d, have, settings)
    return have


def align_images(paths: Sequence[str], images_root: str | Path, detector: FaceDetector, rule: PickRule,
                 progress: Callable[[Iterable], Iterable] | None = None, use_cache: bool = True,
                 save_every: int = 2000) -> AlignedSet:
    """Detect and align one face per image (chosen by `rule`), each image once: results are cached under
    .run/cache/aligned/<hash of root + detector settings + template + rule>/, grown as new images come
    and saved every `save_every` images, so that an interrupted run keeps most of its work."""
    root = Path(images_root)
    d = _cache_dir(root, detector, rule)
    settings = {"images_root": str(root.resolve()), "detector": detector.settings_key(), "rule": rule,
                "template": detector.template.to_dict()}
    have = _load_cache(d) if use_cache else None
    known = set(have.paths) if have else set()
    todo = [p for p in dict.fromkeys(paths) if p not in known]
    bar = progress(todo) if progress else todo  # one progress bar over all the chunks
    it = iter(bar)
    for start in range(0, len(todo), save_every):
        chunk = [next(it) for _ in todo[start:start + save_every]]
        have = _merge(have, _detect(chunk, root, detector, rule))
        if use_cache:
            have = _save_merged(d, have, settings)
    if hasattr(bar, "close"):
        bar.close()
    if have is None:  # no paths asked for, nothing cached
        return _detect([], root, detector, rule)
    index = have.index()
    return _rows(have, [index[p] for p in paths])


def align_people(people: Iterable[str], images_root: str | Path, detector: FaceDetector,
                 rule: PickRule = "center", progress: Callable[[Iterable], Iterable] | None = None
                 ) -> tuple[AlignedSet, list[str]]:
    """All images of the given people (folders <root>/<Person>/*.jpg), aligned and cached: the set and each
    row's person. Rows where no face was found are dropped. For training on LFW's other folds' people."""
    root = Path(images_root)
    paths = [f"{name}/{f.name}" for name in people for f in sorted((root / name).glob("*.jpg"))]
    s = align_images(paths, root, detector, rule, progress)
    kept = _rows(s, np.flatnonzero(s.found))
    return kept, [p.split("/")[0] for p in kept.paths]


def crops_for(s: AlignedSet, images_root: str | Path, detector: FaceDetector, templates: Sequence,
              rule: str, progress: Callable[[Iterable], Iterable] | None = None) -> tuple[np.ndarray, ...]:
    """The set's crops for each of `templates` (a fused model's towers), row for row. The detector's own
    template is `s.crops`; any other is aligned from the image with the cached landmarks, exactly as the
    detector aligns its further templates, and cached beside the detections
    (<cache dir>/more-<template>.npz), so that only the first run reads the images again."""
    from shared.vision.align import align

    root = Path(images_root)
    out = []
    for t in templates:
        if t == detector.template:
            out.append(np.asarray(s.crops))
            continue
        d = _cache_dir(root, detector, rule)
        key = hashlib.sha1(json.dumps(t.to_dict()).encode()).hexdigest()[:12]
        path = d / f"more-{t.name}-{key}.npz"
        # rows keyed by (image, the landmarks they were aligned from): a re-detected image is aligned again
        ids = [f"{p}|{hashlib.sha1(np.ascontiguousarray(lm, np.float32).tobytes()).hexdigest()[:12]}"
               for p, lm in zip(s.paths, s.landmarks)]
        have = _load_more(path)
        todo = [i for i, k in enumerate(ids) if k not in have and s.found[i]]
        for i in (progress(todo) if progress else todo):
            have[ids[i]] = align(load_rgb(root / s.paths[i]), s.landmarks[i], t)
        if todo:
            have = _save_more(d, path, have)
        blank = np.zeros((t.size, t.size, 3), np.uint8)
        out.append(np.stack([have.get(k, blank) if f else blank for k, f in zip(ids, s.found)])
                   if s.paths else np.zeros((0, t.size, t.size, 3), np.uint8))
    return tuple(out)


def _load_more(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    z = np.load(path)
    return dict(zip(z["keys"].tolist(), z["crops"])) if "keys" in z.files else {}  # an older layout: redone


def _save_more(d: Path, path: Path, have: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Save under the cache's lock, first taking in what another run added meanwhile (as `_save_merged`)."""
    import fcntl

    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = {**_load_more(path), **have}
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        keys = list(have)
        np.savez(tmp, keys=np.array(keys), crops=np.stack([have[k] for k in keys]))
        os.replace(tmp, path)
    return have
