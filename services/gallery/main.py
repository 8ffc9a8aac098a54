"""`facestream gallery enroll NAME PATH... | enroll-all ROOT | list | remove NAME`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from services.matcher.gallery_store import DEFAULT_PREFIX, GalleryStore
from shared.config import BaseConfig, build_parser, parse, setting


@dataclass(frozen=True)
class StoreSettings(BaseConfig):
    """facestream gallery: manage the people facestream recognizes."""
    gallery_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the gallery", flag="--prefix")


@dataclass(frozen=True)
class EnrollSettings:
    """Options of `enroll` and `enroll-all`."""
    model: str = setting("", "checkpoint (default models/facestream.pt, or FACESTREAM_MODEL)")
    pick: str = setting("only", "photos with several faces: refuse them (only) or take the largest face",
                        choices=("only", "largest"))
    skip_bad: bool = setting(False, "enroll the good photos even when others are refused (default: all or nothing)")
    replace: bool = setting(False, "drop the person's existing embeddings first")
    min_face_size: float = setting(40.0, "smallest face side accepted, pixels", ge=8, le=2000)
    min_prob: float = setting(0.95, "lowest detection probability accepted", ge=0.0, le=1.0)


@dataclass(frozen=True)
class ListSettings:
    """Options of `list`."""
    json: bool = setting(False, "one JSON object per person")


@dataclass(frozen=True)
class GalleryConfig(ListSettings, EnrollSettings, StoreSettings):
    """Every setting of `facestream gallery`: the store's on the command, the others on their subcommand."""


def parser() -> argparse.ArgumentParser:
    p = build_parser(StoreSettings, "facestream gallery")
    sub = p.add_subparsers(dest="cmd", required=True)

    def subcommand(name: str, help_: str, settings: type | None = None) -> argparse.ArgumentParser:
        # the parent brings the settings' flags (and -h) to the subcommand, which alone accepts them
        parents = [build_parser(settings, name)] if settings else []
        return sub.add_parser(name, help=help_, description=help_, parents=parents, add_help=not parents)

    e = subcommand("enroll", "enroll a person from photos or folders of photos", EnrollSettings)
    e.add_argument("name")
    e.add_argument("paths", nargs="+", metavar="PATH")
    a = subcommand("enroll-all", "enroll every person of ROOT/<name>/<photos> (one model load)", EnrollSettings)
    a.add_argument("root")
    subcommand("list", "people and their embedding counts", ListSettings)
    rm = subcommand("remove", "delete a person and every embedding of theirs")
    rm.add_argument("name")
    return p


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[GalleryConfig, argparse.Namespace]:
    """The settings (flags > FACESTREAM_* > defaults) and the subcommand with its arguments."""
    return parse(GalleryConfig, argv, env, parser=parser())


def load_recognizer(cfg: GalleryConfig):
    from shared.vision.api import Recognizer

    return Recognizer.load(cfg.model or None, device="cpu", min_face_size=int(cfg.min_face_size))


def enroll(cfg: GalleryConfig, store: GalleryStore, name: str, paths: list[str], rec=None) -> int:
    from services.gallery.enroll import Accepted, Refused, embed_photos, expand

    files, refused = expand(paths)
    rec = rec or load_recognizer(cfg)
    results = embed_photos(files, rec.detector, rec.model, cfg.pick, cfg.min_face_size, cfg.min_prob)
    accepted = [r for r in results if isinstance(r, Accepted)]
    refused += [r for r in results if isinstance(r, Refused)]
    for r in refused:
        print(f"refused: {r}", file=sys.stderr)
    if refused and not cfg.skip_bad:
        print(f"nothing enrolled for {name}: {len(refused)} photo(s) refused (fix them, or pass --skip-bad)",
              file=sys.stderr)
        return 1
    if not accepted:
        print(f"nothing enrolled for {name}: no usable photo", file=sys.stderr)
        return 1
    version = store.add(name, {a.embedding_id: a.embedding for a in accepted}, rec.model.model_version,
                        [str(a.path) for a in accepted], replace=cfg.replace)
    print(f"enrolled {name}: {len(accepted)} embedding(s) from {len(accepted)} photo(s), "
          f"model {rec.model.model_version}, gallery v{version}")
    return 0 if not refused else 1


def main(argv: list[str]) -> int:
    cfg, args = config(argv)
    store = GalleryStore.from_url(cfg.redis_url, cfg.gallery_prefix)
    if args.cmd == "enroll":
        return enroll(cfg, store, args.name, args.paths)
    if args.cmd == "enroll-all":
        from pathlib import Path

        people = sorted(p for p in Path(args.root).iterdir() if p.is_dir())
        if not people:
            print(f"{args.root}: no person folders (expected ROOT/<name>/<photos>)", file=sys.stderr)
            return 1
        rec = load_recognizer(cfg)
        return max(enroll(cfg, store, p.name, [str(p)], rec) for p in people)
    if args.cmd == "list":
        people = store.people()
        if cfg.json:
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
