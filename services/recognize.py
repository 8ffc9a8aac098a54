"""`facestream recognize IMAGE`: name every face in one image against the gallery."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facestream recognize", description="Name, box and score every face in an image.")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="one JSON object for machines")
    p.add_argument("--annotate", metavar="OUT.jpg", help="write a copy with boxes and names drawn")
    p.add_argument("--model", default=os.environ.get("FACESTREAM_MODEL") or None)
    p.add_argument("--threshold", type=float, default=float(os.environ["FACESTREAM_THRESHOLD"])
                   if os.environ.get("FACESTREAM_THRESHOLD") else None,
                   help="cosine threshold (default: the checkpoint's calibrated one) [env FACESTREAM_THRESHOLD]")
    p.add_argument("--redis-url", default=os.environ.get("FACESTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--prefix", default=os.environ.get("FACESTREAM_GALLERY_PREFIX", "facestream:gallery"))
    p.add_argument("--min-face-size", type=int, default=20)
    return p


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
    args = parser().parse_args(argv)
    from services.matcher.gallery_store import GalleryStore
    from services.matcher.index import GalleryIndex
    from shared.vision.detect import FaceDetector
    from shared.vision.embed import EmbeddingModel
    from shared.vision.images import load_rgb

    try:
        rgb = load_rgb(args.image)
    except Exception as e:
        print(f"facestream recognize: {args.image}: not a readable image ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    model = EmbeddingModel.load(args.model, device="cpu")
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        print("facestream recognize: the model has no calibrated threshold; pass --threshold", file=sys.stderr)
        return 2
    version, people, skipped = GalleryStore.from_url(args.redis_url, args.prefix).load(model.model_version)
    index = GalleryIndex.build(people, version, model.model_version)
    faces = FaceDetector(model.template, min_face_size=args.min_face_size).detect(rgb)
    vectors = model.embed(np.stack([f.crop for f in faces])) if faces else np.zeros((0, model.embedding_dim))
    names, scores = index.search(vectors)
    results = [{"name": n if s >= threshold else None, "best_match": n, "score": round(float(s), 4),
                "box": [round(v, 1) for v in f.box], "prob": round(f.prob, 4)}
               for f, n, s in zip(faces, names, scores)]
    if args.annotate:
        annotate(rgb, results, args.annotate)
    if args.json:
        print(json.dumps({"image": args.image, "model_version": model.model_version, "threshold": threshold,
                          "gallery_people": len(index), "faces": results}))
    else:
        if not results:
            print(f"{args.image}: no face found")
        for r in results:
            x1, y1, x2, y2 = r["box"]
            print(f"{r['name'] or 'unknown':<28} score {r['score']:.3f}  box ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f})")
    return 0
