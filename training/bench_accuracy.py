"""`make bench-accuracy`: every tower, their fusions and dlib's own pipeline on the same LFW pairs, one JSON.

    python -m training.bench_accuracy [--model PATH ...] [--cv PATTERN ...] [--both-flips] [--limit-folds N]

`make bench-accuracy` sets side by side, under one protocol: the ResNet, MobileFaceNet, their fixed-weight
fusion, the learnt fusion head (cross-validated: fold k scored by the head trained without fold k's
people), the ResNet's fine-tuned last layer (cross-validated), deeper fine-tuning and the from-scratch
tower where their fold-0 checkpoints exist (trained on folds 1-9 only, so they score fold 0 alone), and
dlib. Every row: accuracy (10 folds), AUC, TAR at FAR 1e-3 and 1e-4 against every within-fold impostor
pair (`training.impostors`), and McNemar's exact test of its per-pair decisions against the shipped
default's (the row whose model version is the pipeline's default checkpoint's).

dlib's pipeline (`dlib_baseline`) is what a user would otherwise pick. Both sides use the same pairs, the
same face choice (LFW: the face nearest the centre), the same 10-fold protocol and the same rule for images
with no face found (the pair counts as "different").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from shared import paths
from shared.config import ConfigError, build_parser, parse, setting
from shared.vision import checkpoint
from training import impostors, pair_metrics
from training.curves import plot_roc
from training.dlib_baseline import score_dlib
from training.eval_protocol import load_pair_set, run_cv, run_eval
from training.eval_report import public

OUT = paths.REPO_ROOT / "bench" / "results" / "accuracy.json"


@dataclass(frozen=True)
class BenchAccuracyConfig:
    """dlib's own face pipeline beside ours on the same LFW pairs, one JSON file."""
    # No variable: FACESTREAM_MODEL is the pipeline's model, which the default already reads
    model: list[Path] = setting([], "our checkpoint(s) to score (repeatable; default: the pipeline's default "
                                    "model, unless --cv is given)", repeat=True, env=False)
    cv: list[str] = setting([], "a recipe cross-validated by fold checkpoints, e.g. "
                                "'out/train/head-fold{k}/ckpt.pt' (repeatable)", repeat=True)
    both_flips: bool = setting(False, "score each of our models with and without flip")
    limit_folds: int | None = setting(None, "only the first N folds (quick runs)", ge=1, le=10)
    far: float = setting(1e-3, "false-accept rate for TAR@FAR", ge=0, le=1)
    json: Path = setting(OUT, "report path (the ROC plot goes beside it, as .png)")
    threads: int = setting(2, "torch CPU threads", ge=1, le=1024)
    quiet: bool = setting(False, "no progress bars")


def parser() -> argparse.ArgumentParser:
    return build_parser(BenchAccuracyConfig, "python -m training.bench_accuracy", __doc__.split("\n")[0])


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> BenchAccuracyConfig:
    """The settings: flags > FACESTREAM_* > defaults. Raises ConfigError."""
    return parse(BenchAccuracyConfig, argv, env, parser=parser())[0]


def fold_accuracy(r: dict, k: int) -> float | None:
    return next((f["accuracy"] for f in r["folds"] if f["fold"] == k), None)


def row(name: str, r: dict) -> str:
    f0 = fold_accuracy(r, 0)
    scored = [f["fold"] for f in r["folds"]]
    folds = "all 10" if len(scored) == 10 else ", ".join(map(str, scored))
    mean = (f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f}" if len(scored) > 1
            else "(one fold)")
    op = r.get("operating_points") or {}
    tars = [f"{100 * op[k]['tar']:.2f}" if k in op else "-" for k in ("0.001", "0.0001")]
    mc = r.get("mcnemar_vs_default")
    mcs = "(the default)" if mc and mc.get("is_default") else (
        f"{mc['only_a']} / {mc['only_b']}, p = {mc['p_value']:.3g}" if mc else "-")
    return (f"| {name} | {folds} | {mean} | {'-' if f0 is None else f'{100 * f0:.2f}'} | {r['auc']:.4f} | "
            f"{tars[0]} | {tars[1]} | {mcs} | {len(r['no_face']['images'])} |")


def add_mcnemar(results: list[dict], decisions: list, default_version: str) -> None:
    """Each row's McNemar test against the shipped default's row, on the pairs both scored."""
    base = next((i for i, r in enumerate(results) if r["model_version"] == default_version), None)
    if base is None:
        base = next((i for i, r in enumerate(results) if default_version.startswith(
            r["model_version"].removeprefix("cv:"))), None)
    if base is None:
        return
    for i, r in enumerate(results):
        if i == base:
            r["mcnemar_vs_default"] = {"is_default": True}
        elif decisions[i] is not None and decisions[base] is not None and len(decisions[i]) == len(decisions[base]):
            # only_a: pairs this row decided right and the default wrong; only_b: the reverse
            r["mcnemar_vs_default"] = impostors.mcnemar(decisions[i], decisions[base])


def main(argv: list[str] | None = None) -> int:
    try:
        a = config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        parser().error(str(e))  # usage and exit 2, as for a flag argparse refuses itself
    import torch
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    pairs, root, dataset, rule = load_pair_set(None, None, "lfw")
    if a.limit_folds:
        pairs = [pr for pr in pairs if pr.fold < a.limit_folds]
        dataset += f"-first{a.limit_folds}folds"
    results, curves, decisions = [], {}, []
    for model in a.model or ([] if a.cv else [checkpoint.default_path()]):
        for flip in ((False, True) if a.both_flips else (None,)):
            r, s, y = run_eval(model, pairs, root, dataset, rule, flip=flip, far=a.far, quiet=a.quiet)
            name = f"ours: {Path(model).parent.name}/{Path(model).name} ({r['model_version']}), flip={r['flip_average']}"
            decisions.append(r["_correct"] if len(r["folds"]) == 10 else None)
            results.append({"name": name, **{k: v for k, v in public(r).items() if k != "identity_disjoint"},
                            "identity_disjoint": {k: v for k, v in r["identity_disjoint"].items()
                                                  if k != "trained_people"}})
            curves[name] = pair_metrics.roc_curve(s, y)[:2]
    for pattern in a.cv:
        r, s, y = run_cv(pattern, pairs, root, dataset, rule, flip=None, far=a.far, quiet=a.quiet)
        name = f"ours, cross-validated: {pattern} ({r['model_version']}), flip={r['flip_average']}"
        decisions.append(r["_correct"])
        results.append({"name": name, **public(r)})
        curves[name] = pair_metrics.roc_curve(s, y)[:2]
    r, s, y = score_dlib(pairs, root, rule, a.far, a.quiet)
    decisions.append(impostors.fold_decisions(s, y, [p.fold for p in pairs], r["folds"]) if len(s) == len(pairs)
                     else None)
    results.append({"name": "dlib (dlib-bin 20.0.1.post1 + face_recognition_models 0.3.0)", **r})
    curves[results[-1]["name"]] = pair_metrics.roc_curve(s, y)[:2]
    add_mcnemar(results, decisions, checkpoint.load(checkpoint.default_path())["model_version"])

    table = ["| model | folds scored | accuracy % (mean +- std over folds) | fold 0 % | AUC | TAR % at FAR 1e-3 | "
             "TAR % at FAR 1e-4 | McNemar vs default (pairs only it / only the default got right) | "
             "images without a face |", "|---|---|---|---|---|---|---|---|---|"] + [row(x["name"], x) for x in results]
    png = plot_roc(curves, a.json.with_suffix(".png"), f"{dataset}: ROC")
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
