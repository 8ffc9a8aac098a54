"""The fixed fusion's weights, measured on LFW View 1's training pairs (pairsDevTrain: tuning data, never
View 2): each tower's cosine is z-scored by its standard deviation over the pairs, and the mean of the
z-scores ranks pairs exactly as the weighted mean of cosines with w_i proportional to 1 / sigma_i.

    python -m training.fusion_weights [--model models/fused_resnet_mfn.pt]   # -> bench/results/fusion_weights.json

Beside the z-score weights it reports View 1 accuracy (threshold on the same pairs: for comparison only)
and AUC over a grid of ResNet weights, so that the choice can be seen against its neighbours.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from shared import paths
from training import lfw, pair_metrics
from training.eval_protocol import aligned_for

OUT = paths.REPO_ROOT / "bench" / "results" / "fusion_weights.json"


def tower_pair_scores(model_path: Path, pairs: list, root: Path, quiet: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """(each tower's cosine per pair, same labels); a pair with no face found scores -2 on every tower."""
    from shared.vision.embed import EmbeddingModel
    from shared.vision.features import cached_tower_descriptors

    model = EmbeddingModel.load(model_path, device="cpu")
    if not model.fused:
        raise SystemExit(f"{model_path} is not a fused model")
    s, _, crops = aligned_for(pairs, root, model.templates, "center", 40, quiet)
    ds = cached_tower_descriptors(model, crops, list(s.paths))
    idx = s.index()
    i1 = np.array([idx[p.path1] for p in pairs])
    i2 = np.array([idx[p.path2] for p in pairs])
    ok = s.found[i1] & s.found[i2]
    per = [np.where(ok, np.einsum("nd,nd->n", d[i1], d[i2]), -2.0) for d in ds]
    return per, np.array([p.same for p in pairs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fusion_weights", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=paths.MODELS_DIR / "fused_resnet_mfn.pt")
    p.add_argument("--json", type=Path, default=OUT)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    root = paths.data_root() / "lfw"
    pairs = lfw.read_lfw_pairs(root / "pairsDevTrain.txt")
    per, same = tower_pair_scores(a.model, pairs, root / "images", a.quiet)
    found = per[0] > -2
    sig = [float(np.std(x[found])) for x in per]
    z = [1 / v for v in sig]
    w_z = [v / sum(z) for v in z]
    grid = []
    for w0 in [round(x, 2) for x in np.linspace(0, 1, 21)]:
        w = [w0, 1 - w0] if len(per) == 2 else None
        if w is None:
            break
        sc = sum(wi * x for wi, x in zip(w, per))
        grid.append({"weights": w, "accuracy_same_pairs": pair_metrics.best_threshold(sc, same)[1],
                     "auc": pair_metrics.roc_auc(sc, same)})
    sc = sum(wi * x for wi, x in zip(w_z, per))
    report = {"pairs": "LFW View 1 pairsDevTrain (2,200 pairs)", "sigma": sig, "weights_zscore": w_z,
              "zscore": {"accuracy_same_pairs": pair_metrics.best_threshold(sc, same)[1],
                         "auc": pair_metrics.roc_auc(sc, same)},
              "towers_alone": [{"accuracy_same_pairs": pair_metrics.best_threshold(x, same)[1],
                                "auc": pair_metrics.roc_auc(x, same)} for x in per],
              "grid": grid, "command": "python -m training.fusion_weights " + " ".join(argv or sys.argv[1:])}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=1))
    print(f"sigma per tower {['%.4f' % v for v in sig]} -> z-score weights {['%.3f' % v for v in w_z]}")
    print(f"View 1 train: z-score fusion acc {100 * report['zscore']['accuracy_same_pairs']:.2f}% "
          f"AUC {report['zscore']['auc']:.4f}; towers alone "
          + ", ".join(f"{100 * t['accuracy_same_pairs']:.2f}% / {t['auc']:.4f}" for t in report["towers_alone"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
