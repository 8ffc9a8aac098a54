"""`facestream train`: train the Siamese network's tower with contrastive loss, top to bottom.

    facestream train --dry-run                       # CI: a few steps on ORL, well under a minute on 2 cores
    facestream train --recipe scratch64 --lfw-fold 0 --out out/train/scratch
                                                     # from scratch on LFW people of folds 1-9; eval scores fold 0
    facestream train --recipe finetune --lfw-fold 0 --people-per-batch 32
                                                     # fine-tuning of the pretrained ResNet; a flag beats the recipe
    facestream train --head-only --lfw-fold 0 --out out/train/head-fold0
                                                     # only the last layer, on cached features: seconds
    facestream train --data ~/faces --out out/train/mine         # identity folders root/<person>/<photos>
    facestream train --resume out/train/mine/ckpt.pt --steps 6000

The checkpoint (`<out>/ckpt.pt`) is a facestream checkpoint (`shared.vision.checkpoint`): the tower, its input
size and alignment template, and under "train" the optimizer, step, config, history and the people it
trained on, so that `facestream eval` never scores a pair of people the model has seen. The settings and
recipes (`training/recipes/*.toml`) are in `train_config.py`; the loop shared with `head.py` in `loop.py`.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shared.config import ConfigError
from shared.vision.pixels import to_input
from training import train_config
from training.augment import AugmentConfig, augment
from training.facedata import FaceSet, load_faces, split_people
from training.loop import HeldOut, make_optimizer, new_history, print_summary, run_steps, write_checkpoint
from training.losses import ContrastiveLoss, pair_distance
from training.pairs import PairSampler, PeopleSampler, all_pairs, with_hard_negatives
from training.siamese import SiameseNet
from training.towers import TowerSpec, build_tower
from training.train_config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, resumed = train_config.config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        train_config.parser().error(str(e))  # usage and exit 2, as for a flag argparse refuses itself
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    out = Path(cfg.out) if cfg.out else Path(tempfile.mkdtemp(prefix="facestream-train-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if cfg.fusion:  # the towers stay frozen: no tower to build, only the head between them
        from training.fusion_head import run as run_fusion

        run_fusion(cfg, out)
        return 0
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
    train_network(cfg, resumed, tower, spec, faces, people, train_idx, val_idx, device, out, t0)
    return 0


def train_network(cfg: TrainConfig, resumed: dict | None, tower: torch.nn.Module, spec: TowerSpec, faces: FaceSet,
                  people: list[str], train_idx: np.ndarray, val_idx: np.ndarray, device: torch.device, out: Path,
                  t0: float) -> Path:
    """Train the tower's trainable stages through the Siamese network; write `<out>/ckpt.pt` and its curves."""
    use_amp = cfg.amp and device.type == "cuda"  # float16 autocast is for tensor cores, not the CPU
    labels = torch.as_tensor(faces.labels)
    sampler = (PeopleSampler(faces.labels[train_idx], cfg.people_per_batch, cfg.images_per_person, cfg.seed)
               if cfg.pairing == "batch-all" else
               PairSampler(faces.labels[train_idx], cfg.batch_pairs, cfg.same_fraction, cfg.seed))
    norm = spec.input_norm

    @torch.no_grad()
    def embed_held_out() -> torch.Tensor:
        was = tower.training
        tower.eval()
        crops = faces.crops[val_idx]
        emb = torch.cat([tower(to_input(crops[i:i + 256], norm["mean"], norm["std"], device)).float()
                         for i in range(0, len(crops), 256)])
        tower.train(was)
        return emb

    held_out = HeldOut.sample(faces.labels[val_idx], cfg.val_pairs, cfg.seed, embed_held_out)
    print(f"data {faces.source}: {len(faces)} faces of {len(faces.names)} people "
          f"({len(train_idx)} train, {len(val_idx)} held out); tower {cfg.tower} {spec.arch} "
          f"input {spec.input_size}px; device {device}{' + amp' if use_amp else ''}; out {out}", file=sys.stderr)

    model = SiameseNet(tower).to(device, memory_format=torch.channels_last)  # faster convs on CPU and GPU
    model.train()
    loss_fn = ContrastiveLoss(cfg.margin, normalize=True, same_margin=cfg.same_margin)
    opt = make_optimizer(tower.parameters(), cfg.weight_decay, spec.lr, spec.relative_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history = 0, new_history()
    if resumed is not None:
        tr = resumed["train"]
        opt.load_state_dict(tr["optimizer"])
        if use_amp and tr.get("scaler"):
            scaler.load_state_dict(tr["scaler"])
        start, history = int(tr["step"]), {k: list(v) for k, v in tr["history"].items()}
        t0 -= float(tr.get("wall_s", 0.0))

    aug = AugmentConfig() if cfg.augment else None
    params = [p for p in tower.parameters() if p.requires_grad]

    def save(step: int) -> Path:
        return write_checkpoint(out, tower, spec, cfg, faces, people, step, history, t0,
                                optimizer=opt.state_dict(), scaler=scaler.state_dict() if use_amp else None)

    def prepare(rows: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x = (augment(faces.crops[rows], aug, norm["mean"], norm["std"], gen, device) if aug is not None
             else to_input(faces.crops[rows], norm["mean"], norm["std"], device))
        return x.contiguous(memory_format=torch.channels_last)

    def batch_loss(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, distance of each pair as sampled, same) of step `step`'s batch, which depends on
        (seed, step) only."""
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

    def train_step(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss, d, same = batch_loss(step, gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradient, not the scaled one
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        return loss, d, same

    run_steps(cfg, opt, spec.lr, train_step, history, start=start, held_out=held_out, save=save)
    step = max(start, cfg.steps)
    path = save(step)
    print_summary("trained", step, t0, history, path, out)
    return path


if __name__ == "__main__":
    sys.exit(main())
