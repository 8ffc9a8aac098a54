"""`facestream train --fusion`: the fusion head of the two towers, learnt with contrastive loss.

The towers stay frozen; what learns is the small Siamese head between them and the fused vector
(`shared.vision.nets.fused`): one square map per tower (initialized to the identity, so step 0 is the
fixed-weight fusion) and the towers' weights (a softmax over two logits, started at the fixed weights).
Both sides of every pair go through the one head, and the loss is the project's `ContrastiveLoss` on the
fused unit vectors (double margin around the operating threshold, averaged over the pairs that violate
it, as the last-layer recipe). Each face's tower descriptors are computed once and cached
(`shared.vision.features.cached_tower_descriptors`), so a run is seconds and ten folds cost one pass of
the towers. Trained with `--lfw-fold k` on the other folds' people only; `make bench-accuracy` scores it
by cross-validation and ships it only if it beats the fixed fusion (README, "The model and its accuracy").
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from shared import paths
from shared.vision import checkpoint
from training.losses import ContrastiveLoss
from training.pairs import PeopleSampler, all_pairs


def lfw_descriptors(model, fold: int, quiet: bool) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """(per-tower descriptors, labels, names, people) of LFW's people outside `fold`, aligned as eval aligns
    LFW (the face nearest the centre), every tower's crop from the same landmarks."""
    from tqdm import tqdm

    from shared.vision.crop_cache import align_people, crops_for
    from shared.vision.detect import FaceDetector
    from shared.vision.features import cached_tower_descriptors
    from training import lfw

    root = paths.data_root() / "lfw"
    people = sorted(lfw.people_outside_fold(root / "people.txt", fold))
    det = FaceDetector(model.templates)

    def bar(it):
        return tqdm(it, desc="align", unit="img", file=sys.stderr, disable=quiet)

    s, person_of_row = align_people(people, root / "images", det, "center", bar)
    crops = crops_for(s, root / "images", det, det.templates, "center", bar)
    ds = cached_tower_descriptors(model, crops, list(s.paths))
    names = sorted(set(person_of_row))
    index = {n: i for i, n in enumerate(names)}
    return ds, np.array([index[n] for n in person_of_row], np.int64), names, people


def run(cfg, out: Path) -> Path:
    """Train the head on LFW's people outside `cfg.lfw_fold`; write `<out>/ckpt.pt`, a fused checkpoint."""
    from shared.vision.embed import EmbeddingModel

    t0 = time.perf_counter()
    pair_ckpt = checkpoint.load(cfg.pair)
    if pair_ckpt["arch"] != "fused":
        raise SystemExit(f"--pair {cfg.pair} is not a fused checkpoint")
    model = EmbeddingModel.load(cfg.pair, device="cpu")
    ds, labels, names, people = lfw_descriptors(model, cfg.lfw_fold, cfg.quiet)
    t_feat = time.perf_counter() - t0
    net = checkpoint.ARCHS["fused"]({**pair_ckpt["arch_config"], "projection": True})
    missing, unexpected = net.load_state_dict(pair_ckpt["state_dict"], strict=False)  # towers and weights
    if unexpected or any(not k.startswith("projections.") for k in missing):
        raise SystemExit(f"--pair {cfg.pair}: its weights do not fit the fusion head (missing {missing}, "
                         f"unexpected {unexpected})")
    for p in net.towers.parameters():
        p.requires_grad_(False)
    logits = torch.log(net.weights.clone()).requires_grad_(True)
    params = [logits, *net.projections.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr if cfg.lr is not None else 1e-3)
    loss_fn = ContrastiveLoss(cfg.margin, normalize=True, same_margin=cfg.same_margin)
    sampler = PeopleSampler(labels, cfg.people_per_batch, cfg.images_per_person, cfg.seed)
    tds = [torch.from_numpy(d) for d in ds]
    lab = torch.as_tensor(labels)
    history: dict[str, list] = {"step": [], "loss": [], "weights": []}
    for step in range(cfg.steps):
        rows = torch.from_numpy(sampler.batch(step))
        e = net.fuse([d[rows] for d in tds], weights=torch.softmax(logits, 0))
        i, j, same = all_pairs(lab[rows])
        loss = loss_fn.balanced(e[i], e[j], same, active=cfg.active_pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history["step"].append(step)
            history["loss"].append(float(loss.detach()))
            history["weights"].append([float(w) for w in torch.softmax(logits.detach(), 0)])
    with torch.no_grad():
        net.weights.copy_(torch.softmax(logits, 0))
    sd = net.state_dict()
    w = [float(x) for x in net.weights]
    arch_config = {**pair_ckpt["arch_config"], "weights": w, "projection": True}
    version = f"fused-head-{cfg.tag or 'lfw'}-step{cfg.steps}-{checkpoint.weights_hash(sd)}"
    from dataclasses import asdict

    path = checkpoint.save(
        out / "ckpt.pt", arch="fused", arch_config=arch_config, state_dict=sd, input_size=pair_ckpt["input_size"],
        template=pair_ckpt["template"], embedding_dim=pair_ckpt["embedding_dim"], model_version=version,
        flip_average=pair_ckpt["flip_average"], threshold=None,
        train={"step": cfg.steps, "config": asdict(cfg), "history": history, "lfw_fold": cfg.lfw_fold,
               "trained_people": people, "n_faces": int(len(labels)), "n_people": len(names),
               "init": str(cfg.pair), "trained": ["projections", "weights"], "features_s": round(t_feat, 1),
               "wall_s": round(time.perf_counter() - t0, 1)})
    print(f"fusion head: {cfg.steps} steps in {time.perf_counter() - t0:.0f} s (descriptors {t_feat:.0f} s); "
          f"loss {np.mean(history['loss'][:3]):.4f} -> {np.mean(history['loss'][-3:]):.4f}; weights "
          f"{[round(x, 3) for x in w]}; checkpoint {path}", file=sys.stderr)
    return path
