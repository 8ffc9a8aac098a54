"""`facestream eval`: face verification benchmark of a checkpoint, and calibration of the matcher's threshold.

    facestream eval                                   # LFW View 2 (pairs.txt), the default model
    facestream eval --cv 'out/train/head-fold{k}/ckpt.pt'   # 10-fold cross-validation of a recipe (make eval)
    facestream eval --model models/faceapi_resnet128.pt --no-flip --json out/eval/x.json
    facestream eval --pairs my_pairs.tsv --images-root /data/photos --format tsv
    facestream eval --calibrate-far 1e-3 --write-threshold     # store the cosine threshold in the checkpoint
    make calibrate     # the same on LFW View 2, also recorded in models/calibration.json (committed)

Faces are found and aligned exactly as in the pipeline (MTCNN + the checkpoint's template); LFW takes the
face nearest the image centre, other sets the largest. A pair where either image has no face found is
scored as "different" (similarity -2, below any cosine): it counts as an error when it is a same pair.
Pairs of people the checkpoint trained on are left out and listed in the report.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared import paths
from shared.vision import checkpoint, meta
from shared.vision.crop_cache import align_images
from training import lfw, pair_metrics

NO_FACE_SCORE = -2.0
DEFAULT_OUT = paths.REPO_ROOT / "out" / "eval"


def trained_on(ckpt: dict) -> tuple[set[str], int | None]:
    """(people the checkpoint trained on, LFW fold it was held out for or None), from its `train` metadata."""
    train = ckpt.get("train") or {}
    fold = train.get("lfw_fold")  # -1: trained on every fold's people, so none is held out
    return set(train.get("trained_people") or []), (None if fold is None or int(fold) < 0 else int(fold))


def disjoint_filter(pairs: list[lfw.Pair], people: set[str], lfw_fold: int | None, is_view2: bool
                    ) -> tuple[np.ndarray, list[int] | None, dict]:
    """Which pairs may be used: (keep mask, folds to score or None for all, report note). No pair of a
    person the model trained on is ever scored. A model trained with `lfw_fold=k` learnt from the people of
    every other View 2 fold: only fold k is scored; the other folds' pairs stay in only to choose fold k's
    threshold, which View 2's protocol lets training data do."""
    involves = np.array([p.person1 in people or p.person2 in people for p in pairs], bool)
    folds = np.array([p.fold for p in pairs])
    if lfw_fold is not None and is_view2:
        test_folds = [lfw_fold]
        excluded = involves & (folds == lfw_fold)
        keep = ~excluded
    else:
        test_folds, excluded = None, involves
        keep = ~involves
    hit = sorted({n for p, x in zip(pairs, excluded) if x for n in (p.person1, p.person2) if n in people})
    note = {"trained_people_count": len(people), "trained_people": sorted(people), "lfw_fold": lfw_fold,
            "excluded_pairs": int(excluded.sum()), "excluded_people": hit,
            "scored_folds": "all" if test_folds is None else test_folds,
            "threshold_only_pairs": int((keep & involves).sum())}
    return keep, test_folds, note


def summarize(scores: np.ndarray, same: np.ndarray, folds: np.ndarray, test_folds: list[int] | None,
              far: float) -> dict:
    """The protocol's figures: per-fold accuracy (threshold from the other folds), mean and std, AUC and
    TAR at `far` over all the pairs scored (pooled: one fold has too few different pairs for FAR 1e-3).
    A set with a single fold has no other fold to choose a threshold on: it is chosen on the same pairs,
    which flatters the accuracy, and `threshold_from` says so."""
    fr = pair_metrics.kfold_accuracy(scores, same, folds, test_folds)
    threshold_from = "the other folds"
    if not fr and len(set(folds.tolist())) == 1:
        t, acc = pair_metrics.best_threshold(scores, same)
        fr = [pair_metrics.FoldResult(int(folds[0]), t, acc, len(folds))]
        threshold_from = "the same pairs (one fold only: optimistic)"
    if not fr:
        raise ValueError("no fold could be scored")
    accs = np.array([f.accuracy for f in fr])
    pool = np.isin(folds, [f.fold for f in fr])
    t, tar, got_far = pair_metrics.threshold_at_far(scores[pool], same[pool], far)
    return {"accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()),
            "folds": [vars(f) for f in fr], "auc": pair_metrics.roc_auc(scores[pool], same[pool]),
            "tar_at_far": {"far": far, "tar": tar, "threshold": t, "far_achieved": got_far,
                           "n_different_pairs": int((~same[pool]).sum())},
            "n_pairs_scored": int(pool.sum()), "threshold_from": threshold_from}


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """TAR against FAR (log scale) for one or more models."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (far, tar) in curves.items():
        ax.step(np.maximum(far, 1e-5), tar, where="post", label=name)
    ax.axvline(1e-3, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0.5, 1.001), xlabel="false accept rate",
           ylabel="true accept rate", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_pair_set(pairs_file: str | None, images_root: str | None, fmt: str) -> tuple[list, Path, str, str]:
    """(pairs, images root, dataset label, face-choice rule) for LFW View 2 or a TSV pair set."""
    if pairs_file is None:
        root = paths.data_root() / "lfw"
        return lfw.read_lfw_pairs(root / "pairs.txt"), root / "images", "lfw-view2", "center"
    if images_root is None:
        raise SystemExit("--pairs needs --images-root")
    root, stem = Path(images_root), Path(pairs_file).stem
    if fmt == "lfw":
        return lfw.read_lfw_pairs(pairs_file), root, "lfw-view2" if stem == "pairs" else f"lfw-{stem}", "center"
    return lfw.read_tsv_pairs(pairs_file), root, stem, "largest"


def aligned_for(pairs: list, root: Path, template, rule: str, min_face_size: int, quiet: bool):
    """Detect and align every image the pairs use (cached); the detector is the pipeline's."""
    from tqdm import tqdm

    from shared.vision.detect import FaceDetector

    det = FaceDetector(template, min_face_size=min_face_size)
    images = list(dict.fromkeys(p for pr in pairs for p in (pr.path1, pr.path2)))
    bar = None if quiet else (lambda it: tqdm(it, desc="detect+align", unit="img", file=sys.stderr))
    return align_images(images, root, det, rule, progress=bar), det


def pair_scores(emb: np.ndarray, found: np.ndarray, index: dict[str, int], pairs: list) -> np.ndarray:
    """Cosine similarity of each pair, NO_FACE_SCORE where either image had no face."""
    i1 = np.array([index[p.path1] for p in pairs])
    i2 = np.array([index[p.path2] for p in pairs])
    s = np.einsum("nd,nd->n", emb[i1], emb[i2]).astype(np.float64)
    return np.where(found[i1] & found[i2], s, NO_FACE_SCORE)


def run_eval(model_path: Path, pairs: list, root: Path, dataset: str, rule: str, *, flip: bool | None,
             far: float, min_face_size: int = 40, quiet: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:
    """Evaluate one checkpoint: (report, scores and same-labels of the pairs scored)."""
    from shared.vision.embed import EmbeddingModel

    model = EmbeddingModel.load(model_path, device="auto", flip_average=flip)
    ckpt_train = checkpoint.load(model_path)
    t0 = time.perf_counter()
    keep, test_folds, note = disjoint_filter(pairs, *trained_on(ckpt_train),
                                            is_view2=dataset.startswith("lfw-view2"))
    kept = [p for p, k in zip(pairs, keep) if k]
    if not kept:
        raise SystemExit("every pair involves people this model trained on: nothing to score. A model trained on "
                         "every LFW person is scored by cross-validating its recipe: facestream eval --cv "
                         "'out/train/head-fold{k}/ckpt.pt' (make eval-cv)")
    aligned, det = aligned_for(kept, root, model.template, rule, min_face_size, quiet)
    t1 = time.perf_counter()
    emb = model.embed(aligned.crops, image_paths=list(aligned.paths))
    t2 = time.perf_counter()
    scores = pair_scores(emb, aligned.found, aligned.index(), kept)
    same = np.array([p.same for p in kept])
    folds = np.array([p.fold for p in kept])
    summary = summarize(scores, same, folds, test_folds, far)
    scored = np.isin(folds, [f["fold"] for f in summary["folds"]])
    no_face = [p for p, f in zip(aligned.paths, aligned.found) if not f]
    bad = (scores == NO_FACE_SCORE) & scored
    report = {
        "model": str(model_path), "model_version": model.model_version, "arch": model.arch,
        "flip_average": model.flip_average, "device": str(model.device), "dataset": dataset,
        "images_root": str(root), "face_choice": rule, "detector": det.settings_key(),
        "template": model.template.to_dict(), "n_pairs_total": len(pairs), **summary,
        "identity_disjoint": note,
        "no_face": {"images": no_face, "pairs": int(bad.sum()), "same_pairs_counted_wrong": int((bad & same).sum()),
                    "policy": "a pair with an image where no face was found is scored as 'different'"},
        "multi_face_images": int((aligned.n_faces > 1).sum()),
        "seconds": {"detect_align": round(t1 - t0, 1), "embed": round(t2 - t1, 1),
                    "images": len(aligned.paths)},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return report, scores[scored], same[scored]


def run_cv(pattern: str, pairs: list, root: Path, dataset: str, rule: str, *, flip: bool | None, far: float,
           min_face_size: int = 40, quiet: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:
    """Cross-validation of a training recipe on LFW View 2: fold k is scored by `pattern.format(k=k)`, a
    checkpoint trained with `--lfw-fold k` (on the other folds' people only), its threshold chosen on the
    other folds' pairs scored by that same checkpoint. No pair is ever scored by a model that trained on
    its people. AUC and TAR@FAR pool every fold's scores, each from its own fold's model."""
    if not dataset.startswith("lfw-view2"):
        raise SystemExit("--cv needs LFW View 2 (its folds are people-disjoint); drop --pairs")
    folds = sorted({p.fold for p in pairs})
    per, all_s, all_y = [], [], []
    for k in folds:
        path = Path(pattern.format(k=k))
        r, s, y = run_eval(path, pairs, root, dataset, rule, flip=flip, far=far, min_face_size=min_face_size,
                           quiet=quiet)
        if r["identity_disjoint"]["lfw_fold"] != k:
            raise SystemExit(f"{path} was not trained with --lfw-fold {k} (its lfw_fold: "
                             f"{r['identity_disjoint']['lfw_fold']}): it cannot score fold {k}")
        per.append(r)
        all_s.append(s), all_y.append(y)
        if not quiet:
            print(f"fold {k}: {100 * r['folds'][0]['accuracy']:.2f}% ({r['model_version']})", file=sys.stderr)
    scores, same = np.concatenate(all_s), np.concatenate(all_y)
    accs = np.array([r["folds"][0]["accuracy"] for r in per])
    counts = [r["identity_disjoint"]["trained_people_count"] for r in per]
    t, tar, got = pair_metrics.threshold_at_far(scores, same, far)
    first = per[0]
    report = {
        "cv_pattern": pattern, "models": [{"fold": k, "model": r["model"], "model_version": r["model_version"],
                                           "trained_people_count": r["identity_disjoint"]["trained_people_count"],
                                           "excluded_pairs": r["identity_disjoint"]["excluded_pairs"]}
                                          for k, r in zip(folds, per)],
        "model": pattern, "model_version": f"cv:{first['model_version'].rsplit('-', 2)[0]}",
        "arch": first["arch"], "flip_average": first["flip_average"], "device": first["device"],
        "dataset": dataset, "images_root": first["images_root"], "face_choice": rule, "detector": first["detector"],
        "template": first["template"], "n_pairs_total": len(pairs),
        "accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()),
        "folds": [r["folds"][0] for r in per], "auc": pair_metrics.roc_auc(scores, same),
        "tar_at_far": {"far": far, "tar": tar, "threshold": t, "far_achieved": got,
                       "n_different_pairs": int((~same).sum())},
        "n_pairs_scored": int(len(scores)),
        "threshold_from": "the other folds, scored by the test fold's own model (trained on their people)",
        "identity_disjoint": {"lfw_fold": None, "trained_people_count": f"{min(counts)}-{max(counts)}",
                              "excluded_pairs": 0,
                              "threshold_only_pairs": None, "trained_people": [],
                              "note": "each fold scored only by the model trained without its people"},
        "no_face": {"images": first["no_face"]["images"],
                    "pairs": sum(r["no_face"]["pairs"] for r in per),
                    "same_pairs_counted_wrong": sum(r["no_face"]["same_pairs_counted_wrong"] for r in per)},
        "multi_face_images": first["multi_face_images"],
        "seconds": {k: round(sum(r["seconds"][k] for r in per), 1) for k in ("detect_align", "embed")}
                   | {"images": first["seconds"]["images"]},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return report, scores, same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facestream eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: models/facestream.pt or "
                   "$FACESTREAM_MODEL)")
    p.add_argument("--pairs", default=None, help="pairs file (default: LFW View 2 pairs.txt under $FACESTREAM_DATA)")
    p.add_argument("--images-root", default=None, help="folder the pair paths are relative to")
    p.add_argument("--format", choices=("tsv", "lfw"), default="tsv", help="format of --pairs")
    p.add_argument("--cv", default=None, metavar="PATTERN",
                   help="cross-validate a recipe: fold k scored by PATTERN.format(k=k), e.g. "
                        "'out/train/head-fold{k}/ckpt.pt' (each trained with --lfw-fold k); with "
                        "--write-threshold, the pooled threshold goes into --model (the same recipe on all people)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each descriptor with its mirror's (default: what the checkpoint says)")
    p.add_argument("--far", type=float, default=1e-3, help="false-accept rate for TAR@FAR (default 1e-3)")
    p.add_argument("--calibrate-far", type=float, default=None, help="compute the cosine threshold at this FAR")
    p.add_argument("--write-threshold", action="store_true", help="store that threshold into the checkpoint")
    p.add_argument("--record-calibration", action="store_true",
                   help="also record it in models/calibration.json (committed), so that a checkpoint made "
                        "again from the same weights on another machine gets it; only for the full benchmark")
    p.add_argument("--min-face-size", type=int, default=40, help="MTCNN's smallest face, px (pipeline default)")
    p.add_argument("--json", type=Path, default=None, help="report path (default out/eval/<model>_<set>.json)")
    p.add_argument("--limit-folds", type=int, default=None, help="only the first N folds (quick checks)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.write_threshold and a.calibrate_far is None:
        p.error("--write-threshold needs --calibrate-far")
    if a.record_calibration and not a.write_threshold:
        p.error("--record-calibration needs --write-threshold")
    import torch
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    model_path = a.model or checkpoint.default_path()
    pairs, root, dataset, rule = load_pair_set(a.pairs, a.images_root, a.format)
    if a.limit_folds:
        pairs = [pr for pr in pairs if pr.fold < a.limit_folds]
        dataset += f"-first{a.limit_folds}folds"
    if a.cv:
        if a.write_threshold and a.model is None:
            p.error("--cv with --write-threshold needs --model: the checkpoint that gets the threshold")
        report, scores, same = run_cv(a.cv, pairs, root, dataset, rule, flip=a.flip, far=a.far,
                                      min_face_size=a.min_face_size, quiet=a.quiet)
    else:
        report, scores, same = run_eval(model_path, pairs, root, dataset, rule, flip=a.flip, far=a.far,
                                        min_face_size=a.min_face_size, quiet=a.quiet)
    if a.calibrate_far is not None:
        t, tar, got = pair_metrics.threshold_at_far(scores, same, a.calibrate_far)
        report["calibration"] = {"far": a.calibrate_far, "cosine": t, "tar": tar, "far_achieved": got,
                                 "written": False}
        if a.write_threshold:
            ckpt_flip = bool(checkpoint.load(model_path)["flip_average"])
            if report["flip_average"] != ckpt_flip:
                raise SystemExit(f"refusing to write a threshold measured with flip={report['flip_average']} "
                                 f"into a checkpoint that embeds with flip={ckpt_flip}")
            source = (f"{dataset}{' cross-validated by ' + a.cv if a.cv else ''}: {int((~same).sum())} different "
                      f"pairs, FAR {a.calibrate_far:g}, facestream eval {report['date']}")
            summary = {k: report[k] for k in ("dataset", "accuracy_mean", "accuracy_std", "auc", "tar_at_far",
                                              "flip_average", "date")}
            checkpoint.set_threshold(model_path, t, a.calibrate_far, source, eval_summary=summary)
            if a.record_calibration:
                ckpt = checkpoint.load(model_path)
                meta.record(ckpt["model_version"], ckpt["flip_average"], ckpt["threshold"], summary)
            report["calibration"]["written"] = True
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)

    cv_name = "cv_" + Path(a.cv).parent.name.replace("{k}", "K") if a.cv else ""
    stem = f"{cv_name or Path(model_path).stem}_{dataset}_{'flip' if report['flip_average'] else 'noflip'}"
    out = a.json or DEFAULT_OUT / f"{stem}.json"
    far, tar, _ = pair_metrics.roc_curve(scores, same)
    png = plot_roc({f"{report['model_version']} flip={report['flip_average']}": (far, tar)},
                   out.with_suffix(".png"), f"{dataset}: ROC")
    report["roc_png"] = str(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print_summary(report, out)
    return 0


def print_summary(r: dict, out: Path) -> None:
    idj, nf, ta = r["identity_disjoint"], r["no_face"], r["tar_at_far"]
    print(f"{r['dataset']}  model {r['model_version']}  flip={r['flip_average']}  device {r['device']}")
    print(f"  accuracy {100 * r['accuracy_mean']:.2f}% +- {100 * r['accuracy_std']:.2f} over {len(r['folds'])} "
          f"folds (threshold from {r['threshold_from']})   AUC {r['auc']:.4f}   "
          f"TAR {100 * ta['tar']:.2f}% at FAR {ta['far']:g} (cosine >= {ta['threshold']:.4f})")
    print(f"  pairs scored {r['n_pairs_scored']} of {r['n_pairs_total']}; excluded (trained on their people): "
          f"{idj['excluded_pairs']}; model trained on {idj['trained_people_count']} people"
          + (f", LFW fold {idj['lfw_fold']} held out ({idj['threshold_only_pairs']} pairs of its training "
             "people only chose the threshold)" if idj["lfw_fold"] is not None else ""))
    print(f"  no face found in {len(nf['images'])} images -> {nf['pairs']} pairs scored 'different' "
          f"({nf['same_pairs_counted_wrong']} of them same pairs, so errors)")
    if "calibration" in r:
        c = r["calibration"]
        print(f"  threshold at FAR {c['far']:g}: cosine {c['cosine']:.4f} (TAR {100 * c['tar']:.2f}%)"
              + ("  -> written into the checkpoint" if c["written"] else ""))
    s = r["seconds"]
    print(f"  took {s['total']:.0f} s ({s['detect_align']:.0f} s detect+align of {s['images']} images, "
          f"cached after the first run; {s['embed']:.0f} s embed)")
    print(f"  report {out}  ROC {r['roc_png']}")


if __name__ == "__main__":
    sys.exit(main())
