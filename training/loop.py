"""The training loop that both runs share: the full network (`train.py`) and its last layer (`head.py`).

A run says how one step trains (`train_step`: batch, loss, backward, optimizer step) and how to embed its
held-out faces; the rest is here, done the same way for both: the learning-rate schedule, the history that
the curves and the checkpoint keep, the held-out pair accuracy, the checkpoints and the closing line.
A step's randomness comes from (seed, step) alone, so a resumed run sees the very batches an uninterrupted
one would.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from shared.vision import checkpoint
from training.curves import plot_curves
from training.pair_metrics import best_threshold
from training.pairs import PairSampler

HISTORY_KEYS = ("step", "loss", "d_same", "d_diff", "lr", "val_step", "val_acc")
# (step, generator seeded for it) -> (loss, distance of each pair, same-person mask), after the update
TrainStep = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warmup from base_lr / warmup_steps to base_lr, then cosine decay to min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def make_optimizer(params: Iterable[torch.nn.Parameter], weight_decay: float, lr: float, relative: bool,
                   betas: tuple[float, float] = (0.9, 0.99)) -> torch.optim.AdamW:
    """AdamW over the trainable `params`; no weight decay on biases and per-channel scales (decaying those
    only shifts activations).

    `relative`: each tensor's learning rate is `lr` times the RMS of its starting values, so that a step
    changes every tensor by about the same *fraction*. Adam moves each weight by about lr whatever its
    size, and the face-api ResNet (dlib's, with batch norm folded in) keeps conv weights near 1e-3 next to
    per-channel scales near 9: an absolute lr of 2e-6 rewrites its last convs by tens of percent in a few
    hundred steps and costs LFW accuracy, where the same relative change is harmless."""
    groups = []
    for p in (p for p in params if p.requires_grad):
        scale = float(p.detach().float().pow(2).mean().sqrt().clamp_min(1e-6)) if relative else 1.0
        groups.append({"params": [p], "weight_decay": weight_decay if p.ndim >= 2 else 0.0, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def new_history() -> dict[str, list]:
    """What the curves plot and the checkpoint keeps: logged steps, and the held-out checks."""
    return {k: [] for k in HISTORY_KEYS}


def log_point(history: dict, step: int, loss: float, d: torch.Tensor, same: torch.Tensor, lr: float) -> None:
    """One logged step: its loss, the mean distance of its same and different pairs, its learning rate."""
    history["step"].append(step)
    history["loss"].append(loss)
    history["d_same"].append(float(d[same].mean()) if same.any() else float("nan"))
    history["d_diff"].append(float(d[~same].mean()) if (~same).any() else float("nan"))
    history["lr"].append(lr)


def pair_accuracy(emb: torch.Tensor, pairs: tuple) -> float:
    """Accuracy of pairs (a, b, same) of rows of `emb` at their best cosine threshold."""
    e = F.normalize(emb, dim=1).cpu()
    a, b, same = pairs
    return best_threshold((e[a] * e[b]).sum(1).numpy(), same)[1]


@dataclass
class HeldOut:
    """Fixed pairs of the people held out of training, and how to embed their faces with the model as it
    is now: a monitor of generalization, not a benchmark (the threshold is the best for these pairs)."""
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
    embed: Callable[[], torch.Tensor]

    @staticmethod
    def sample(labels: np.ndarray, n_pairs: int, seed: int, embed: Callable[[], torch.Tensor]) -> HeldOut | None:
        """Half same, half different pairs of the held-out faces' `labels`; None when nobody is held out."""
        if not len(labels):
            return None
        return HeldOut(PairSampler(labels, n_pairs, 0.5, seed + 1).batch(0), embed)

    def record(self, history: dict, step: int) -> float:
        acc = pair_accuracy(self.embed(), self.pairs)
        history["val_step"].append(step)
        history["val_acc"].append(acc)
        return acc


def run_steps(cfg, opt: torch.optim.Optimizer, base_lr: float, train_step: TrainStep, history: dict, *,
              start: int = 0, held_out: HeldOut | None = None, save: Callable[[int], Path] | None = None) -> None:
    """Steps `start` to `cfg.steps`: the schedule sets each parameter group's lr (times its "lr_scale"),
    `train_step` trains, every `log_every` steps go into `history`, every `val_every` the held-out pairs
    are scored, and every `ckpt_every` `save(step)` writes a checkpoint (the caller writes the last)."""
    from tqdm import tqdm

    if held_out is not None and start == 0:  # the starting point: what training has to beat
        print(f"step 0: held-out pair accuracy {100 * held_out.record(history, 0):.2f}%", file=sys.stderr)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=cfg.quiet, file=sys.stderr,
               unit="step", dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, base_lr, cfg.warmup_steps, cfg.steps, base_lr * cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss, d, same = train_step(step, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log_point(history, step, loss.item(), d, same, lr)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", same=f"{history['d_same'][-1]:.2f}",
                            diff=f"{history['d_diff'][-1]:.2f}", lr=f"{lr:.1e}")
        done = step + 1
        if held_out is not None and (done % cfg.val_every == 0 or done == cfg.steps):
            acc = held_out.record(history, done)
            bar.write(f"step {done}: held-out pair accuracy {100 * acc:.2f}%", file=sys.stderr)
        if save is not None and done % cfg.ckpt_every == 0 and done < cfg.steps:
            save(done)
    bar.close()


def write_checkpoint(out: Path, tower: torch.nn.Module, spec, cfg, faces, people: list[str], step: int,
                     history: dict, t0: float, **train_extra) -> Path:
    """`<out>/ckpt.pt` (the tower and everything eval and a resume need) and `<out>/curves.png`."""
    sd = tower.state_dict()
    train_meta = {"step": step, "config": asdict(cfg), **train_extra, "history": history,
                  "data": faces.source, "n_faces": len(faces), "n_people": len(faces.names),
                  "lfw_fold": cfg.lfw_fold, "trained_people": people, "wall_s": time.perf_counter() - t0,
                  "init": spec.init, "frozen": spec.frozen}
    tag = cfg.tag or ("head" if cfg.head_only else cfg.tower)
    version = f"{spec.arch}-{tag}-step{step}-{checkpoint.weights_hash(sd)}"
    path = checkpoint.save(out / "ckpt.pt", arch=spec.arch, arch_config=spec.arch_config, state_dict=sd,
                           input_size=spec.input_size, template=spec.template, embedding_dim=spec.embedding_dim,
                           model_version=version, flip_average=cfg.flip_average, threshold=None,
                           input_norm=spec.input_norm, train=train_meta)
    plot_curves(history, out / "curves.png", f"{version} ({faces.source})", margin=cfg.margin)
    return path


def print_summary(what: str, step: int, t0: float, history: dict, path: Path, out: Path, note: str = "") -> None:
    """The closing line of a run: how long, how the loss and the held-out accuracy moved, where it wrote."""
    first, last, vals = history["loss"][:5], history["loss"][-5:], history["val_acc"]
    print(f"{what} to step {step} in {time.perf_counter() - t0:.0f} s{note}; loss "
          f"{np.mean(first) if first else float('nan'):.4f} (first logs) -> "
          f"{np.mean(last) if last else float('nan'):.4f} (last logs)"
          + (f"; held-out pair accuracy {100 * vals[0]:.2f}% -> {100 * vals[-1]:.2f}%" if vals else "")
          + f"; checkpoint {path}; curves {out / 'curves.png'}", file=sys.stderr)
