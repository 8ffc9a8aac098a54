"""The face-api ResNet's pooled features (everything below its last layer `fc`, 256-d), cached on disk.

Last-layer training (`facestream train --head-only`) and eval of last-layer models need these features,
not the descriptors: with everything below `fc` frozen, each face's features are computed once (with its
mirror image) and shared by every run and every fold, which makes 10-fold cross-validation affordable on
the CPU. The cache lives under `.run/cache/features/`, keyed by the frozen weights and the normalisation,
each row by image path and a checksum of its crop.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from shared import paths
from shared.vision.checkpoint import weights_hash
from shared.vision.pixels import to_input

CACHE = paths.CACHE_DIR / "features"
Progress = Callable[[Iterable], Iterable] | None


@torch.inference_mode()
def pooled_features(net, crops: np.ndarray, norm: dict, batch: int = 64, progress: Progress = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(features of each crop, features of its mirror), each N x 256 float32."""
    net = net.eval().to(memory_format=torch.channels_last)
    out, out_m = [], []
    starts = range(0, len(crops), batch)
    for i in (progress(starts) if progress else starts):
        x = to_input(crops[i:i + batch], norm["mean"], norm["std"]).contiguous(memory_format=torch.channels_last)
        out.append(net.features(x).float().numpy())
        out_m.append(net.features(torch.flip(x, dims=[3])).float().numpy())
    if not out:
        return np.zeros((0, 256), np.float32), np.zeros((0, 256), np.float32)
    return np.concatenate(out), np.concatenate(out_m)


def cached_features(net, crops: np.ndarray, image_paths: Sequence[str] | None, norm: dict,
                    progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """`pooled_features` of crops, cached per (frozen weights, image path, crop checksum): the ten LFW
    folds share one computation. Crops without paths are computed every time."""
    if image_paths is None:
        return pooled_features(net, crops, norm, progress=progress)
    sums = np.array([zlib.adler32(np.ascontiguousarray(c).tobytes()) for c in crops], np.int64)
    frozen = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    norm_key = [float(v) for v in (*norm["mean"], *norm["std"])]
    key = hashlib.sha1(f"{weights_hash(frozen, 16)}|{norm_key}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.npz"
    have: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    if path.exists():
        z = np.load(path)
        have = {(p, int(s)): (f, fm) for p, s, f, fm in zip(z["paths"].tolist(), z["sums"], z["f"], z["fm"])}
    todo = [i for i, k in enumerate(zip(image_paths, sums.tolist())) if k not in have]
    if todo:
        f, fm = pooled_features(net, crops[todo], norm, progress=progress)
        have.update({(image_paths[i], int(sums[i])): (f[j], fm[j]) for j, i in enumerate(todo)})
        keys = list(have)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{key}.tmp{os.getpid()}.npz")
        np.savez(tmp, paths=np.array([k[0] for k in keys]), sums=np.array([k[1] for k in keys], np.int64),
                 f=np.stack([have[k][0] for k in keys]), fm=np.stack([have[k][1] for k in keys]))
        os.replace(tmp, path)
    rows = [have[(p, int(s))] for p, s in zip(image_paths, sums.tolist())]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


TOWER_CACHE = paths.CACHE_DIR / "tower_descriptors"


def cached_tower_descriptors(model, crops: Sequence[np.ndarray], image_paths: Sequence[str]) -> list[np.ndarray]:
    """A fused model's per-tower unit descriptors (mirror-averaged as the model says) of crops that come
    from these image files, cached per (tower weights, normalisation, flip, image path, crop checksum).
    The fusion head trains and every fold's head is scored on frozen towers: the towers run once for all
    ten folds and every run after, and only the head's cheap fuse step differs."""
    out = []
    for k, (tower, t, c) in enumerate(zip(model.net.towers, model.inputs, crops)):
        c = np.asarray(c)
        sums = np.array([zlib.adler32(np.ascontiguousarray(x).tobytes()) for x in c], np.int64)
        key = hashlib.sha1(f"{weights_hash(tower.state_dict(), 16)}|{t.mean}|{t.std}|{model.flip_average}|"
                           f"{model.half}".encode()).hexdigest()[:16]
        path = TOWER_CACHE / f"{key}.npz"
        have: dict[tuple[str, int], np.ndarray] = {}
        if path.exists():
            z = np.load(path)
            have = {(p, int(s)): d for p, s, d in zip(z["paths"].tolist(), z["sums"], z["d"])}
        todo = [i for i, kk in enumerate(zip(image_paths, sums.tolist())) if kk not in have]
        if todo:
            d = model.tower_embed(k, c[todo])
            have.update({(image_paths[i], int(sums[i])): d[j] for j, i in enumerate(todo)})
            keys = list(have)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{key}.tmp{os.getpid()}.npz")
            np.savez(tmp, paths=np.array([p for p, _ in keys]), sums=np.array([s for _, s in keys], np.int64),
                     d=np.stack([have[kk] for kk in keys]))
            os.replace(tmp, path)
        out.append(np.stack([have[(p, int(s))] for p, s in zip(image_paths, sums.tolist())])
                   if len(c) else np.zeros((0, int(model.net.dims[k])), np.float32))
    return out
