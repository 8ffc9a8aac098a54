"""`facestream gallery enroll NAME PATH... | list | remove NAME`."""
from __future__ import annotations

import argparse
import json
import os
import sys

from services.matcher.gallery_store import DEFAULT_PREFIX, GalleryStore


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facestream gallery", description="Manage the people facestream recognizes.")
    p.add_argument("--redis-url", default=os.environ.get("FACESTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis URL [env FACESTREAM_REDIS_URL]")
    p.add_argument("--prefix", default=os.environ.get("FACESTREAM_GALLERY_PREFIX", DEFAULT_PREFIX))
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("enroll", help="enroll a person from photos or folders of photos")
    e.add_argument("name")
    e.add_argument("paths", nargs="+", metavar="PATH")
    a = sub.add_parser("enroll-all", help="enroll every person of ROOT/<name>/<photos> (one model load)")
    a.add_argument("root")
    for sp in (e, a):
        sp.add_argument("--model", default=os.environ.get("FACESTREAM_MODEL") or None,
                        help="checkpoint (default models/facestream.pt) [env FACESTREAM_MODEL]")
        sp.add_argument("--pick", choices=("only", "largest"), default="only",
                        help="photos with several faces: refuse them (only) or take the largest face")
        sp.add_argument("--skip-bad", action="store_true",
                        help="enroll the good photos even when others are refused (default: all or nothing)")
        sp.add_argument("--replace", action="store_true", help="drop the person's existing embeddings first")
        sp.add_argument("--min-face-size", type=float, default=40.0)
        sp.add_argument("--min-prob", type=float, default=0.95)
    ls = sub.add_parser("list", help="people and their embedding counts")
    ls.add_argument("--json", action="store_true")
    rm = sub.add_parser("remove", help="delete a person and every embedding of theirs")
    rm.add_argument("name")
    return p


def load_pipeline(args):
    from shared.vision.detect import FaceDetector
    from shared.vision.embed import EmbeddingModel

    model = EmbeddingModel.load(args.model, device="cpu")
    return FaceDetector(model.template, min_face_size=int(args.min_face_size)), model


def enroll(args, store: GalleryStore, name: str, paths: list[str], pipeline=None) -> int:
    from services.gallery.enroll import Accepted, Refused, embed_photos, expand

    files, refused = expand(paths)
    detector, model = pipeline or load_pipeline(args)
    results = embed_photos(files, detector, model, args.pick, args.min_face_size, args.min_prob)
    accepted = [r for r in results if isinstance(r, Accepted)]
    refused += [r for r in results if isinstance(r, Refused)]
    for r in refused:
        print(f"refused: {r}", file=sys.stderr)
    if refused and not args.skip_bad:
        print(f"nothing enrolled for {name}: {len(refused)} photo(s) refused (fix them, or pass --skip-bad)",
              file=sys.stderr)
        return 1
    if not accepted:
        print(f"nothing enrolled for {name}: no usable photo", file=sys.stderr)
        return 1
    version = store.add(name, {a.embedding_id: a.embedding for a in accepted}, model.model_version,
                        [str(a.path) for a in accepted], replace=args.replace)
    print(f"enrolled {name}: {len(accepted)} embedding(s) from {len(accepted)} photo(s), "
          f"model {model.model_version}, gallery v{version}")
    return 0 if not refused else 1


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    store = GalleryStore.from_url(args.redis_url, args.prefix)
    if args.cmd == "enroll":
        return enroll(args, store, args.name, args.paths)
    if args.cmd == "enroll-all":
        from pathlib import Path

        people = sorted(p for p in Path(args.root).iterdir() if p.is_dir())
        if not people:
            print(f"{args.root}: no person folders (expected ROOT/<name>/<photos>)", file=sys.stderr)
            return 1
        pipeline = load_pipeline(args)
        return max(enroll(args, store, p.name, [str(p)], pipeline) for p in people)
    if args.cmd == "list":
        people = store.people()
        if args.json:
            for p in people:
                print(json.dumps({"name": p.name, "embeddings": p.embeddings, "model_version": p.model_version}))
        else:
            for p in people:
                print(f"{p.name:<32} {p.embeddings:>4} embedding(s)  {p.model_version}")
            print(f"{len(people)} people, {sum(p.embeddings for p in people)} embeddings")
        return 0
    if args.cmd == "remove":
        if store.remove(args.name):
            print(f"removed {args.name}")
            return 0
        print(f"no such person: {args.name}", file=sys.stderr)
        return 1
    return 2
