"""`facestream train`: train the Siamese network's tower with contrastive loss, top to bottom.

    facestream train --dry-run                       # CI: a few steps on ORL, well under a minute on 2 cores
    facestream train --lfw-fold 0 --input-size 64 --pairing batch-all --steps 2400 --out out/train/scratch
                                                     # from scratch on LFW people of folds 1-9; eval scores fold 0
    facestream train --lfw-fold 0 --tower faceapi --freeze 8 --pairing batch-all --people-per-batch 16
                                                     # contrastive fine-tuning of the pretrained ResNet
    facestream train --head-only --lfw-fold 0 --out out/train/head-fold0
                                                     # only the last layer, on cached features: seconds
    facestream train --data ~/faces --out out/train/mine         # identity folders root/<person>/<photos>
    facestream train --resume out/train/mine/ckpt.pt --steps 6000

The checkpoint (`<out>/ckpt.pt`) is a facestream checkpoint (`shared.vision.checkpoint`): the tower, its input
size and alignment template, and under "train" the optimizer, step, config, history and the people it
trained on, so that `facestream eval` never scores a pair of people the model has seen.
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from shared.vision import checkpoint
from shared.vision.pixels import to_input
from training.augment import AugmentConfig, augment
from training.curves import plot_curves
from training.losses import ContrastiveLoss, pair_distance
from training.pairs import PairSampler, PeopleSampler, all_pairs, with_hard_negatives
from training.siamese import SiameseNet
from training.train_setup import TrainConfig, build_tower, load_faces, parse_config, split_people


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warmup from base_lr / warmup_steps to base_lr, then cosine decay to min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def make_optimizer(tower: torch.nn.Module, cfg: TrainConfig, lr: float, relative: bool) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and per-channel scales (decaying those only shifts activations).

    `relative`: each tensor's learning rate is `lr` times the RMS of its starting values, so that a step
    changes every tensor by about the same *fraction*. Adam moves each weight by about lr whatever its
    size, and the face-api ResNet (dlib's, with batch norm folded in) keeps conv weights near 1e-3 next to
    per-channel scales near 9: an absolute lr of 2e-6 rewrites its last convs by tens of percent in a few
    hundred steps and costs LFW accuracy, where the same relative change is harmless."""
    groups = []
    for p in (p for p in tower.parameters() if p.requires_grad):
        scale = float(p.detach().float().pow(2).mean().sqrt().clamp_min(1e-6)) if relative else 1.0
        groups.append({"params": [p], "weight_decay": cfg.weight_decay if p.ndim >= 2 else 0.0, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


@torch.no_grad()
def val_accuracy(tower: torch.nn.Module, crops: np.ndarray, pairs: tuple, norm: dict, device: torch.device) -> float:
    """Accuracy on fixed pairs of held-out people at the best cosine threshold (a monitor, not a benchmark)."""
    from training.pair_metrics import best_threshold

    was = tower.training
    tower.eval()
    emb = torch.cat([tower(to_input(crops[i:i + 256], norm["mean"], norm["std"], device)).float()
                     for i in range(0, len(crops), 256)])
    tower.train(was)
    emb = torch.nn.functional.normalize(emb, dim=1).cpu()
    a, b, same = pairs
    return best_threshold((emb[a] * emb[b]).sum(1).numpy(), same)[1]


def write_checkpoint(out: Path, tower: torch.nn.Module, spec, cfg: TrainConfig, faces, people: list[str], step: int,
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


def main(argv: list[str] | None = None) -> int:
    cfg, resumed = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    use_amp = cfg.amp and device.type == "cuda"  # float16 autocast is for tensor cores, not the CPU
    out = Path(cfg.out) if cfg.out else Path(tempfile.mkdtemp(prefix="facestream-train-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # --- the tower, and faces at its input size
    tower, spec = build_tower(cfg, resumed)
    faces, people = load_faces(cfg, spec.input_size)
    train_idx, val_idx = split_people(faces.labels, cfg.val_people, cfg.seed)
    if cfg.head_only:
        from training.head import run as run_head

        print(f"data {faces.source}: {len(faces)} faces of {len(faces.names)} people ({len(train_idx)} train, "
              f"{len(val_idx)} held out); last layer of {spec.arch} only; out {out}", file=sys.stderr)
        run_head(cfg, tower, spec, faces, people, train_idx, val_idx, out, cfg.quiet)
        return 0
    labels = torch.as_tensor(faces.labels)
    sampler = (PeopleSampler(faces.labels[train_idx], cfg.people_per_batch, cfg.images_per_person, cfg.seed)
               if cfg.pairing == "batch-all" else
               PairSampler(faces.labels[train_idx], cfg.batch_pairs, cfg.same_fraction, cfg.seed))
    val = None
    if len(val_idx):
        va, vb, vs = PairSampler(faces.labels[val_idx], cfg.val_pairs, 0.5, cfg.seed + 1).batch(0)
        val = (faces.crops[val_idx], (va, vb, vs))
    print(f"data {faces.source}: {len(faces)} faces of {len(faces.names)} people "
          f"({len(train_idx)} train, {len(val_idx)} held out); tower {cfg.tower} {spec.arch} "
          f"input {spec.input_size}px; device {device}{' + amp' if use_amp else ''}; out {out}", file=sys.stderr)

    model = SiameseNet(tower).to(device, memory_format=torch.channels_last)  # faster convs on CPU and GPU
    model.train()
    loss_fn = ContrastiveLoss(cfg.margin, normalize=True, same_margin=cfg.same_margin)
    opt = make_optimizer(tower, cfg, spec.lr, spec.relative_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history = 0, {k: [] for k in ("step", "loss", "d_same", "d_diff", "lr", "val_step", "val_acc")}
    if resumed is not None:
        tr = resumed["train"]
        opt.load_state_dict(tr["optimizer"])
        if use_amp and tr.get("scaler"):
            scaler.load_state_dict(tr["scaler"])
        start, history = int(tr["step"]), {k: list(v) for k, v in tr["history"].items()}
        t0 -= float(tr.get("wall_s", 0.0))

    aug = AugmentConfig() if cfg.augment else None
    norm = spec.input_norm
    params = [p for p in tower.parameters() if p.requires_grad]

    def save(step: int) -> Path:
        return write_checkpoint(out, tower, spec, cfg, faces, people, step, history, t0,
                                optimizer=opt.state_dict(), scaler=scaler.state_dict() if use_amp else None)

    def prepare(rows: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x = (augment(faces.crops[rows], aug, norm["mean"], norm["std"], gen, device) if aug is not None
             else to_input(faces.crops[rows], norm["mean"], norm["std"], device))
        return x.contiguous(memory_format=torch.channels_last)

    def batch_loss(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, distance of each pair as sampled, same) of step `step`'s batch. The batch depends on
        (seed, step) only, so a resumed run sees the very batches an uninterrupted one would."""
        if cfg.pairing == "batch-all":
            rows = train_idx[sampler.batch(step)]
            e = model.embed(prepare(rows, gen))  # one tower, every pair of the batch: the twins, P x K wide
            i, j, same = all_pairs(labels[rows].to(device))
            loss = loss_fn.balanced(e[i], e[j], same, active=cfg.active_pairs)
            ea, eb = e[i], e[j]
        else:
            a, b, same_np = sampler.batch(step)
            a, b = train_idx[a], train_idx[b]
            same = torch.as_tensor(same_np, device=device)
            ea, eb = model(prepare(a, gen), prepare(b, gen))
            partner = (with_hard_negatives(ea, eb, labels[a].to(device), labels[b].to(device), same)
                       if cfg.hard_negatives else eb)
            loss = loss_fn(ea, partner, same)  # computed in float32 by the loss itself
        with torch.no_grad():  # before any mining: comparable across runs
            return loss, pair_distance(ea, eb), same

    from tqdm import tqdm

    if val is not None and start == 0:  # the starting point: what fine-tuning has to beat
        history["val_step"].append(0)
        history["val_acc"].append(val_accuracy(tower, val[0], val[1], norm, device))
        print(f"step 0: held-out pair accuracy {100 * history['val_acc'][-1]:.2f}%", file=sys.stderr)

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=cfg.quiet, file=sys.stderr,
               unit="step", dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, spec.lr, cfg.warmup_steps, cfg.steps, spec.lr * cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss, d, same = batch_loss(step, gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradient, not the scaled one
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["d_same"].append(float(d[same].mean()) if same.any() else float("nan"))
            history["d_diff"].append(float(d[~same].mean()) if (~same).any() else float("nan"))
            history["lr"].append(lr)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", same=f"{history['d_same'][-1]:.2f}",
                            diff=f"{history['d_diff'][-1]:.2f}", lr=f"{lr:.1e}")
        done = step + 1
        if val is not None and (done % cfg.val_every == 0 or done == cfg.steps):
            history["val_step"].append(done)
            history["val_acc"].append(val_accuracy(tower, val[0], val[1], norm, device))
            bar.write(f"step {done}: held-out pair accuracy {100 * history['val_acc'][-1]:.2f}%", file=sys.stderr)
        if done % cfg.ckpt_every == 0 and done < cfg.steps:
            save(done)
    bar.close()

    path = save(max(start, cfg.steps))
    first, last = history["loss"][:5], history["loss"][-5:]
    print(f"trained to step {max(start, cfg.steps)} in {time.perf_counter() - t0:.0f} s; loss "
          f"{np.mean(first) if first else float('nan'):.4f} (first logs) -> {np.mean(last) if last else float('nan'):.4f}"
          f" (last logs); checkpoint {path}; curves {out / 'curves.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
