"""The verification protocol of `facestream eval`: which pairs a checkpoint may be scored on, how they are
scored, and the figures (per-fold accuracy, AUC, TAR at a FAR) of one checkpoint or of a cross-validated
recipe.

Faces are found and aligned exactly as in the pipeline (MTCNN + the checkpoint's template); LFW takes the
face nearest the image centre, other sets the largest. A pair where either image has no face found is
scored as "different" (similarity -2, below any cosine): it counts as an error when it is a same pair.
Pairs of people the checkpoint trained on are left out and listed in the report.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from shared import paths
from shared.vision import checkpoint
from shared.vision.crop_cache import align_images, crops_for
from training import eval_report, impostors, lfw, pair_metrics

NO_FACE_SCORE = -2.0


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


def pair_scores(emb: np.ndarray, found: np.ndarray, index: dict[str, int], pairs: list) -> np.ndarray:
    """Cosine similarity of each pair, NO_FACE_SCORE where either image had no face."""
    i1 = np.array([index[p.path1] for p in pairs])
    i2 = np.array([index[p.path2] for p in pairs])
    s = np.einsum("nd,nd->n", emb[i1], emb[i2]).astype(np.float64)
    return np.where(found[i1] & found[i2], s, NO_FACE_SCORE)


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


def aligned_for(pairs: list, root: Path, templates, rule: str, min_face_size: int, quiet: bool):
    """Detect and align every image the pairs use (cached); the detector is the pipeline's. Returns the
    set, the detector and the crops for each template (a fused model's towers: one batch each)."""
    from tqdm import tqdm

    from shared.vision.detect import FaceDetector

    det = FaceDetector(templates, min_face_size=min_face_size)
    images = list(dict.fromkeys(p for pr in pairs for p in (pr.path1, pr.path2)))
    bar = None if quiet else (lambda it: tqdm(it, desc="detect+align", unit="img", file=sys.stderr))
    s = align_images(images, root, det, rule, progress=bar)
    bar2 = None if quiet else (lambda it: tqdm(it, desc="align more templates", unit="img", file=sys.stderr))
    return s, det, crops_for(s, root, det, det.templates, rule, bar2)


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
    aligned, det, crops = aligned_for(kept, root, model.templates, rule, min_face_size, quiet)
    t1 = time.perf_counter()
    # the image paths let frozen towers reuse their cached features or descriptors (every fold of a CV)
    emb = model.embed(crops if model.fused else crops[0], image_paths=list(aligned.paths))
    t2 = time.perf_counter()
    scores = pair_scores(emb, aligned.found, aligned.index(), kept)
    same = np.array([p.same for p in kept])
    folds = np.array([p.fold for p in kept])
    summary = summarize(scores, same, folds, test_folds, far)
    scored = np.isin(folds, [f["fold"] for f in summary["folds"]])
    bad = (scores == NO_FACE_SCORE) & scored
    report = eval_report.model_report(model_path, model, det, dataset, root, rule, len(pairs), summary, note,
                                      aligned, bad, same, {"detect_align": round(t1 - t0, 1),
                                                           "embed": round(t2 - t1, 1)})
    # the operating point: genuine pairs against every within-fold impostor pair of the scored folds
    scored_folds = [f["fold"] for f in summary["folds"]]
    genuine = scores[scored & same]
    if dataset.startswith("lfw"):  # LFW names each image's person by its folder; a TSV pair set need not
        imp = impostors.within_fold_impostors(emb, aligned.found, aligned.index(), kept, scored_folds)
        protocol = ("genuine: the scored folds' same pairs (no face: scored -2); impostors: every pair of two "
                    "different people's images within each scored fold")
    else:
        imp = scores[scored & ~same]
        protocol = "genuine: the same pairs; impostors: the labelled different pairs (people are not named)"
    report["operating_points"] = {"protocol": protocol, **impostors.tar_at_fars(genuine, imp)}
    report["_impostors"], report["_genuine"] = imp, genuine  # arrays for run_cv and calibration; not in JSON
    report["_correct"] = impostors.fold_decisions(scores[scored], same[scored], folds[scored], summary["folds"])
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
    per, all_s, all_y, imp, gen, correct = [], [], [], [], [], []
    for k in folds:
        path = Path(pattern.format(k=k))
        r, s, y = run_eval(path, pairs, root, dataset, rule, flip=flip, far=far, min_face_size=min_face_size,
                           quiet=quiet)
        if r["identity_disjoint"]["lfw_fold"] != k:
            raise SystemExit(f"{path} was not trained with --lfw-fold {k} (its lfw_fold: "
                             f"{r['identity_disjoint']['lfw_fold']}): it cannot score fold {k}")
        per.append(r)
        all_s.append(s), all_y.append(y)
        imp.append(r.pop("_impostors")), gen.append(r.pop("_genuine")), correct.append(r.pop("_correct"))
        if not quiet:
            print(f"fold {k}: {100 * r['folds'][0]['accuracy']:.2f}% ({r['model_version']})", file=sys.stderr)
    scores, same = np.concatenate(all_s), np.concatenate(all_y)
    t, tar, got = pair_metrics.threshold_at_far(scores, same, far)
    pooled = {"auc": pair_metrics.roc_auc(scores, same),
              "tar_at_far": {"far": far, "tar": tar, "threshold": t, "far_achieved": got,
                             "n_different_pairs": int((~same).sum())},
              "n_pairs_scored": int(len(scores))}
    report = eval_report.cv_report(pattern, folds, per, dataset, rule, len(pairs), pooled)
    imp_all, gen_all = np.concatenate(imp), np.concatenate(gen)
    report["operating_points"] = {"protocol": "each fold's genuine and within-fold impostor pairs scored by "
                                              "that fold's model, pooled", **impostors.tar_at_fars(gen_all, imp_all)}
    report["_impostors"], report["_genuine"], report["_correct"] = imp_all, gen_all, np.concatenate(correct)
    return report, scores, same
