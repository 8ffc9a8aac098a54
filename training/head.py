"""`facestream train --head-only`: contrastive fine-tuning of the face-api tower's last layer.

Everything below `fc` (256 -> 128) stays frozen, so each face's pooled features are computed once (with
its mirror image, which is the only augmentation) and cached (`shared.vision.features`); a run is then a
few hundred steps of a 256 x 128 matrix: seconds on the CPU, which makes 10-fold cross-validation on LFW
View 2 affordable where fine-tuning deeper layers (minutes per fold, and measured worse) is not. The
Siamese structure is unchanged: both sides of every pair go through the one shared layer, and the loss is
`ContrastiveLoss` (here with a double margin, see `training/recipes/head.toml`). The loop, its history
and its checkpoint are the full network's (`loop.py`).
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
from training.loop import HeldOut, make_optimizer, new_history, print_summary, run_steps, write_checkpoint
from training.losses import ContrastiveLoss
from training.pairs import PeopleSampler, all_pairs


def run(cfg, tower, spec, faces: FaceSet, people: list[str], train_idx: np.ndarray, val_idx: np.ndarray,
        out: Path, quiet: bool) -> Path:
    """Train the last layer; write `<out>/ckpt.pt` (the whole tower, new fc) and its curves."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = None if quiet else (lambda it: tqdm(it, desc="features", unit="batch", file=sys.stderr))
    f_np, fm_np = cached_features(tower, faces.crops, faces.paths, spec.input_norm, bar)
    f, fm = torch.from_numpy(f_np), torch.from_numpy(fm_np)
    t_feat = time.perf_counter() - t0
    w = tower.fc.weight.detach().clone().float().requires_grad_(True)
    # Adam's default betas and an absolute lr: what the head recipe was measured with (the full network
    # uses betas (0.9, 0.99) and, for this tower, relative lr)
    opt = make_optimizer([w], cfg.weight_decay, spec.lr, relative=False, betas=(0.9, 0.999))
    loss_fn = ContrastiveLoss(cfg.margin, normalize=True, same_margin=cfg.same_margin)
    sampler = PeopleSampler(faces.labels[train_idx], cfg.people_per_batch, cfg.images_per_person, cfg.seed)
    labels = torch.as_tensor(faces.labels)
    held_favg = ((f + fm) / 2)[val_idx]  # held-out descriptors averaged with the mirror's, as the embedder does
    held_out = HeldOut.sample(faces.labels[val_idx], cfg.val_pairs, cfg.seed, lambda: held_favg @ w.detach().T)

    def train_step(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(train_idx[sampler.batch(step)])
        mirror = torch.rand(len(rows), generator=gen) < 0.5  # each face or its mirror: the augmentation
        e = torch.where(mirror[:, None], fm[rows], f[rows]) @ w.T
        i, j, same = all_pairs(labels[rows])
        loss = loss_fn.balanced(e[i], e[j], same, active=cfg.active_pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = (F.normalize(e[i], dim=1) - F.normalize(e[j], dim=1)).norm(dim=1)
        return loss, d, same

    history = new_history()
    run_steps(cfg, opt, spec.lr, train_step, history, held_out=held_out)
    with torch.no_grad():
        tower.fc.weight.copy_(w.detach())
    path = write_checkpoint(out, tower, spec, cfg, faces, people, cfg.steps, history, t0,
                            features_s=round(t_feat, 1), trained=["fc"])
    print_summary("trained the last layer", cfg.steps, t0, history, path, out, f" (features {t_feat:.0f} s)")
    return path
