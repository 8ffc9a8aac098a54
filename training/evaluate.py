"""`facestream eval`: face verification benchmark of a checkpoint, and calibration of the matcher's threshold.

    facestream eval                                   # LFW View 2 (pairs.txt), the default model
    facestream eval --cv 'out/train/head-fold{k}/ckpt.pt'   # 10-fold cross-validation of a recipe (make eval)
    facestream eval --model models/faceapi_resnet128.pt --no-flip --json out/eval/x.json
    facestream eval --pairs my_pairs.tsv --images-root /data/photos --format tsv
    facestream eval --calibrate-far 1e-3 --write-threshold     # store the cosine threshold in the checkpoint
    make calibrate     # the same on LFW View 2, also recorded in models/calibration.json (committed)

The protocol (which pairs, how they are scored, the figures) is `eval_protocol`; the report's layout
`eval_report`; this module is the command: its settings, the calibration, and the files it writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from shared import paths
from shared.config import ConfigError, build_parser, parse, setting
from shared.vision import checkpoint, meta
from training import impostors, pair_metrics
from training.curves import plot_roc
from training.eval_protocol import load_pair_set, run_cv, run_eval
from training.eval_report import print_summary, public

DEFAULT_OUT = paths.REPO_ROOT / "out" / "eval"


@dataclass(frozen=True)
class EvalConfig:
    """LFW / pairs verification benchmark of a checkpoint; calibrates the matcher's threshold."""
    # No variable: the default reads FACESTREAM_MODEL itself (checkpoint.default_path), and --cv
    # --write-threshold must be told on the command line which checkpoint it writes into.
    model: Path | None = setting(None, "checkpoint (default: models/facestream.pt or $FACESTREAM_MODEL)",
                                 env=False)
    pairs: str | None = setting(None, "pairs file (default: LFW View 2 pairs.txt under $FACESTREAM_DATA)")
    images_root: str | None = setting(None, "folder the pair paths are relative to")
    format: str = setting("tsv", "format of --pairs", choices=("tsv", "lfw"))
    cv: str | None = setting(None, "cross-validate a recipe: fold k scored by PATTERN.format(k=k), e.g. "
                                   "'out/train/head-fold{k}/ckpt.pt' (each trained with --lfw-fold k); with "
                                   "--write-threshold, the pooled threshold goes into --model (the same recipe "
                                   "on all people)")
    flip: bool | None = setting(None, "average each descriptor with its mirror's (default: what the checkpoint "
                                      "says)")
    far: float = setting(1e-3, "false-accept rate for TAR@FAR", ge=0, le=1)
    calibrate_far: float | None = setting(None, "compute the cosine threshold at this FAR", ge=0, le=1)
    write_threshold: bool = setting(False, "store that threshold into the checkpoint")
    record_calibration: bool = setting(False, "also record it in models/calibration.json (committed), so that a "
                                              "checkpoint made again from the same weights on another machine "
                                              "gets it; only for the full benchmark")
    min_face_size: int = setting(40, "MTCNN's smallest face, px (the detector's setting and default)",
                                 ge=12, le=2000)
    json: Path | None = setting(None, "report path (default out/eval/<model>_<set>.json)")
    limit_folds: int | None = setting(None, "only the first N folds (quick checks)", ge=1, le=10)
    threads: int = setting(2, "torch CPU threads", ge=1, le=1024)
    quiet: bool = setting(False, "no progress bars")

    def validate(self) -> None:
        if self.write_threshold and self.calibrate_far is None:
            raise ConfigError("--write-threshold needs --calibrate-far")
        if self.record_calibration and not self.write_threshold:
            raise ConfigError("--record-calibration needs --write-threshold")
        if self.cv and self.write_threshold and self.model is None:
            raise ConfigError("--cv with --write-threshold needs --model: the checkpoint that gets the threshold")


def parser() -> argparse.ArgumentParser:
    return build_parser(EvalConfig, "facestream eval", __doc__.split("\n")[0])


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> EvalConfig:
    """The settings: flags > FACESTREAM_* > defaults. Raises ConfigError."""
    return parse(EvalConfig, argv, env, parser=parser())[0]


def calibrate(a: EvalConfig, model_path: Path, report: dict, scores: np.ndarray, same: np.ndarray,
              dataset: str) -> None:
    """The cosine threshold at `a.calibrate_far` into `report`; with --write-threshold into the checkpoint
    too, and with --record-calibration into models/calibration.json, with the impostor tail that
    `facestream calibrate` takes as its prior. The threshold is set by the within-fold impostor pairs
    (millions on LFW View 2), not by the 3,000 different pairs, whose FAR 1e-3 is the 4th highest score."""
    imp, gen = report["_impostors"], report["_genuine"]
    op = impostors.tar_at_fars(gen, imp, (a.calibrate_far,)).get(f"{a.calibrate_far:g}")
    if op is None:  # too few impostor pairs for this FAR: the different pairs are all there is
        t, tar, got = pair_metrics.threshold_at_far(scores, same, a.calibrate_far)
        n_imp = int((~same).sum())
    else:
        t, tar, got, n_imp = op["threshold"], op["tar"], op["far_achieved"], len(imp)
    report["calibration"] = {"far": a.calibrate_far, "cosine": t, "tar": tar, "far_achieved": got,
                             "n_impostor_pairs": n_imp, "written": False}
    if not a.write_threshold:
        return
    ckpt_flip = bool(checkpoint.load(model_path)["flip_average"])
    if report["flip_average"] != ckpt_flip:  # the threshold belongs to one way of embedding
        raise SystemExit(f"refusing to write a threshold measured with flip={report['flip_average']} "
                         f"into a checkpoint that embeds with flip={ckpt_flip}")
    source = (f"{dataset}{' cross-validated by ' + a.cv if a.cv else ''}: {n_imp} impostor pairs, "
              f"FAR {a.calibrate_far:g}, facestream eval {report['date']}")
    summary = {k: report[k] for k in ("dataset", "accuracy_mean", "accuracy_std", "auc", "tar_at_far",
                                      "operating_points", "flip_average", "date")}
    checkpoint.set_threshold(model_path, t, a.calibrate_far, source, eval_summary=summary)
    if a.record_calibration:
        ckpt = checkpoint.load(model_path)
        meta.record(ckpt["model_version"], ckpt["flip_average"], ckpt["threshold"], summary,
                    impostors.impostor_tail(imp))
    report["calibration"]["written"] = True


def main(argv: list[str] | None = None) -> int:
    try:
        a = config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        parser().error(str(e))  # usage and exit 2, as for a flag argparse refuses itself
    import torch
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    model_path = a.model or checkpoint.default_path()
    pairs, root, dataset, rule = load_pair_set(a.pairs, a.images_root, a.format)
    if a.limit_folds:
        pairs = [pr for pr in pairs if pr.fold < a.limit_folds]
        dataset += f"-first{a.limit_folds}folds"
    kw = dict(flip=a.flip, far=a.far, min_face_size=a.min_face_size, quiet=a.quiet)
    if a.cv:
        report, scores, same = run_cv(a.cv, pairs, root, dataset, rule, **kw)
    else:
        report, scores, same = run_eval(model_path, pairs, root, dataset, rule, **kw)
    if a.calibrate_far is not None:
        calibrate(a, model_path, report, scores, same, dataset)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)

    cv_name = "cv_" + Path(a.cv).parent.name.replace("{k}", "K") if a.cv else ""
    stem = f"{cv_name or Path(model_path).stem}_{dataset}_{'flip' if report['flip_average'] else 'noflip'}"
    out = a.json or DEFAULT_OUT / f"{stem}.json"
    far, tar, _ = pair_metrics.roc_curve(scores, same)
    png = plot_roc({f"{report['model_version']} flip={report['flip_average']}": (far, tar)},
                   out.with_suffix(".png"), f"{dataset}: ROC")
    report["roc_png"] = str(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(public(report), indent=1))
    print_summary(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
