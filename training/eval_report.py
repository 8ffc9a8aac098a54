"""The reports of `facestream eval` (one JSON document per run, under out/eval/) and their summary on the
terminal. The figures come from `eval_protocol`; this module only lays them out."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def public(report: dict) -> dict:
    """The report without its arrays (keys starting with "_": impostor scores, per-pair decisions)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def model_report(model_path: Path, model, det, dataset: str, root: Path, rule: str, n_pairs_total: int,
                 summary: dict, note: dict, aligned, bad: np.ndarray, same: np.ndarray, seconds: dict) -> dict:
    """One checkpoint's report: what was scored and how (model, detector, template, faces), the protocol's
    `summary`, the identity-disjointness `note`, and the images where no face was found (`bad`: the scored
    pairs that hold one)."""
    no_face = [p for p, f in zip(aligned.paths, aligned.found) if not f]
    return {
        "model": str(model_path), "model_version": model.model_version, "arch": model.arch,
        "flip_average": model.flip_average, "device": str(model.device), "dataset": dataset,
        "images_root": str(root), "face_choice": rule, "detector": det.settings_key(),
        "template": model.template.to_dict(), "templates": [t.to_dict() for t in model.templates],
        "n_pairs_total": n_pairs_total, **summary,
        "identity_disjoint": note,
        "no_face": {"images": no_face, "pairs": int(bad.sum()), "same_pairs_counted_wrong": int((bad & same).sum()),
                    "policy": "a pair with an image where no face was found is scored as 'different'"},
        "multi_face_images": int((aligned.n_faces > 1).sum()),
        "seconds": {**seconds, "images": len(aligned.paths)},
        "date": _now(),
    }


def cv_report(pattern: str, folds: list[int], per: list[dict], dataset: str, rule: str, n_pairs_total: int,
              pooled: dict) -> dict:
    """A cross-validated recipe's report: fold k's figures from `per[k]` (the report of the model held out
    for fold k), AUC and TAR@FAR from every fold's scores `pooled`."""
    accs = np.array([r["folds"][0]["accuracy"] for r in per])
    counts = [r["identity_disjoint"]["trained_people_count"] for r in per]
    first = per[0]
    return {
        "cv_pattern": pattern, "models": [{"fold": k, "model": r["model"], "model_version": r["model_version"],
                                           "trained_people_count": r["identity_disjoint"]["trained_people_count"],
                                           "excluded_pairs": r["identity_disjoint"]["excluded_pairs"]}
                                          for k, r in zip(folds, per)],
        "model": pattern, "model_version": f"cv:{first['model_version'].rsplit('-', 2)[0]}",
        "arch": first["arch"], "flip_average": first["flip_average"], "device": first["device"],
        "dataset": dataset, "images_root": first["images_root"], "face_choice": rule, "detector": first["detector"],
        "template": first["template"], "n_pairs_total": n_pairs_total,
        "accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()),
        "folds": [r["folds"][0] for r in per], "auc": pooled["auc"], "tar_at_far": pooled["tar_at_far"],
        "n_pairs_scored": pooled["n_pairs_scored"],
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
        "date": _now(),
    }


def print_summary(r: dict, out: Path) -> None:
    """The report in a few lines on stdout: accuracy, AUC and TAR, what was left out and why, the time."""
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
    op = r.get("operating_points") or {}
    if op:
        pts = "   ".join(f"TAR {100 * op[k]['tar']:.2f}% at FAR {k} (cosine >= {op[k]['threshold']:.4f})"
                       for k in ("0.001", "0.0001") if k in op)
        print(f"  against {op['n_impostor_pairs']:,} within-fold impostor pairs: {pts}")
    if "calibration" in r:
        c = r["calibration"]
        print(f"  threshold at FAR {c['far']:g}: cosine {c['cosine']:.4f} (TAR {100 * c['tar']:.2f}%)"
              + ("  -> written into the checkpoint" if c["written"] else ""))
    s = r["seconds"]
    print(f"  took {s['total']:.0f} s ({s['detect_align']:.0f} s detect+align of {s['images']} images, "
          f"cached after the first run; {s['embed']:.0f} s embed)")
    print(f"  report {out}  ROC {r['roc_png']}")

