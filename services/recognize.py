"""`facestream recognize IMAGE`: name every face in one image against the gallery."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from services.matcher.gallery_store import DEFAULT_PREFIX
from shared.config import BaseConfig, build_parser, parse, setting


@dataclass(frozen=True)
class RecognizeConfig(BaseConfig):
    """facestream recognize: name, box and score every face in an image."""
    json: bool = setting(False, "one JSON object for machines")
    annotate: str = setting("", "write a copy with boxes and names drawn to this file (OUT.jpg)")
    model: str = setting("", "checkpoint (default models/facestream.pt, or FACESTREAM_MODEL)")
    threshold: float | None = setting(None, "cosine threshold (default: the checkpoint's calibrated one)",
                                      ge=-1.0, le=1.0)
    gallery_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the gallery", flag="--prefix")
    min_face_size: int = setting(20, "smallest face side detected, pixels", ge=8, le=2000)


def parser() -> argparse.ArgumentParser:
    p = build_parser(RecognizeConfig, "facestream recognize")
    p.add_argument("image")
    return p


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[RecognizeConfig, argparse.Namespace]:
    """The settings (flags > FACESTREAM_* > defaults) and the image."""
    return parse(RecognizeConfig, argv, env, parser=parser())


def annotate(rgb: np.ndarray, results: list[dict], out: str) -> None:
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for r in results:
        x1, y1, x2, y2 = (int(round(v)) for v in r["box"])
        colour = (0, 200, 0) if r["name"] else (0, 0, 230)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
        label = f"{r['name'] or 'unknown'} {r['score']:.2f}"
        cv2.putText(img, label, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    if not cv2.imwrite(out, img):
        raise SystemExit(f"facestream recognize: cannot write {out}")


def main(argv: list[str]) -> int:
    """0 done; 2 the image is unreadable, the model has no threshold, or Redis is unreachable (one line)."""
    cfg, args = config(argv)
    from services.matcher.gallery_store import GalleryStore
    from services.redis_access import UNREACHABLE, unreachable

    store = GalleryStore.for_config(cfg, cfg.gallery_prefix)
    try:
        return recognize(cfg, args.image, store)
    except UNREACHABLE as e:
        print(f"facestream recognize: {unreachable(cfg.redis_url, e)}", file=sys.stderr)
        return 2


def recognize(cfg: RecognizeConfig, image: str, store) -> int:
    from services.matcher.index import GalleryIndex
    from shared.vision.images import load_rgb

    try:
        rgb = load_rgb(image)
    except Exception as e:
        print(f"facestream recognize: {image}: not a readable image ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    store.ping()  # before the models load: a missing Redis costs a second, not the model's start-up
    from shared.vision.api import Recognizer

    rec = Recognizer.load(cfg.model or None, device="cpu", min_face_size=cfg.min_face_size, threshold=cfg.threshold)
    if rec.threshold is None:
        print("facestream recognize: the model has no calibrated threshold; pass --threshold", file=sys.stderr)
        return 2
    version, people, skipped = store.load(rec.model.model_version)
    index = GalleryIndex.build(people, version, rec.model.model_version)
    results = [{"name": m.name, "best_match": m.best_match, "score": round(m.score, 4),
                "box": [round(v, 1) for v in m.box], "prob": round(m.prob, 4)} for m in rec.identify(rgb, index)]
    if cfg.annotate:
        annotate(rgb, results, cfg.annotate)
    if cfg.json:
        print(json.dumps({"image": image, "model_version": rec.model.model_version, "threshold": rec.threshold,
                          "gallery_people": len(index), "faces": results}))
    else:
        if not results:
            print(f"{image}: no face found")
        for r in results:
            x1, y1, x2, y2 = r["box"]
            print(f"{r['name'] or 'unknown':<28} score {r['score']:.3f}  box ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f})")
    return 0
