"""`facestream train --head-only`: contrastive fine-tuning of the face-api tower's last layer.

Everything below `fc` (256 -> 128) stays frozen, so each face's pooled features are computed once (with
its mirror image, which is the only augmentation) and cached (`shared.vision.features`); a run is then a
few hundred steps of a 256 x 128 matrix: seconds on the CPU, which makes 10-fold cross-validation on LFW
View 2 affordable where fine-tuning deeper layers (minutes per fold, and measured worse) is not. The
Siamese structure is unchanged: both sides of every pair go through the one shared layer, and the loss is
`ContrastiveLoss` (here with a double margin, see `train_setup.HEAD_RECIPE`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.vision.features import cached_features
from training.facedata import FaceSet
from training.losses import ContrastiveLoss
from training.pairs import PairSampler, PeopleSampler, all_pairs
from training.pair_metrics import best_threshold

def _pair_accuracy(w: torch.Tensor, f: torch.Tensor, pairs: tuple) -> float:
    """Accuracy of held-out pairs at their best threshold, descriptors averaged with the mirror's."""
    e = F.normalize(f @ w.T, dim=1)
    a, b, same = pairs
    return best_threshold((e[a] * e[b]).sum(1).numpy(), same)[1]


def run(cfg, tower, spec, faces: FaceSet, people: list[str], train_idx: np.ndarray, val_idx: np.ndarray,
        out: Path, quiet: bool) -> Path:
    """Train the last layer; write `<out>/ckpt.pt` (the whole tower, new fc) and its curves."""
    from tqdm import tqdm

    from training.train import lr_at, write_checkpoint

    t0 = time.perf_counter()
    bar = None if quiet else (lambda it: tqdm(it, desc="features", unit="batch", file=sys.stderr))
    f_np, fm_np = cached_features(tower, faces.crops, faces.paths, spec.input_norm, bar)
    f, fm = torch.from_numpy(f_np), torch.from_numpy(fm_np)
    t_feat = time.perf_counter() - t0
    w = tower.fc.weight.detach().clone().float().requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=spec.lr, weight_decay=cfg.weight_decay)
    loss_fn = ContrastiveLoss(cfg.margin, normalize=True, same_margin=cfg.same_margin)
    sampler = PeopleSampler(faces.labels[train_idx], cfg.people_per_batch, cfg.images_per_person, cfg.seed)
    labels = torch.as_tensor(faces.labels)
    favg = (f + fm) / 2
    val = None
    if len(val_idx):
        va, vb, vs = PairSampler(faces.labels[val_idx], cfg.val_pairs, 0.5, cfg.seed + 1).batch(0)
        val = (favg[val_idx], (va, vb, vs))
    history = {k: [] for k in ("step", "loss", "d_same", "d_diff", "lr", "val_step", "val_acc")}
    if val is not None:
        history["val_step"].append(0)
        history["val_acc"].append(_pair_accuracy(w.detach(), *val))
    for step in range(cfg.steps):
        lr = lr_at(step, spec.lr, cfg.warmup_steps, cfg.steps, spec.lr * cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = torch.from_numpy(train_idx[sampler.batch(step)])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        mirror = torch.rand(len(rows), generator=gen) < 0.5  # each face or its mirror: the augmentation
        e = torch.where(mirror[:, None], fm[rows], f[rows]) @ w.T
        i, j, same = all_pairs(labels[rows])
        loss = loss_fn.balanced(e[i], e[j], same, active=cfg.active_pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            with torch.no_grad():
                d = (F.normalize(e[i], dim=1) - F.normalize(e[j], dim=1)).norm(dim=1)
            for k, v in (("step", step), ("loss", loss.item()), ("d_same", float(d[same].mean())),
                         ("d_diff", float(d[~same].mean())), ("lr", lr)):
                history[k].append(v)
        if val is not None and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
            history["val_step"].append(step + 1)
            history["val_acc"].append(_pair_accuracy(w.detach(), *val))

    with torch.no_grad():
        tower.fc.weight.copy_(w.detach())
    path = write_checkpoint(out, tower, spec, cfg, faces, people, cfg.steps, history, t0,
                            features_s=round(t_feat, 1), trained=["fc"])
    vals = history["val_acc"]
    print(f"head trained {cfg.steps} steps in {time.perf_counter() - t0:.0f} s (features {t_feat:.0f} s)"
          + (f"; held-out pair accuracy {100 * vals[0]:.2f}% -> {100 * vals[-1]:.2f}%" if vals else "")
          + f"; checkpoint {path}; curves {out / 'curves.png'}", file=sys.stderr)
    return path
