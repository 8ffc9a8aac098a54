"""`facestream gallery enroll NAME PATH... | enroll-all ROOT | list | remove NAME`.

Exit status: 0 done; 1 photos refused (nothing written for that person, unless --skip-bad); 2 the command
cannot run: an invalid name (services/gallery/names.py, checked before anything is read) or Redis
unreachable (checked before the models load). Every refusal is one line on stderr, with the Redis URL's
password masked.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from services.gallery.names import InvalidName, check_name, shown
from services.matcher.gallery_store import DEFAULT_PREFIX, GalleryStore
from services.redis_access import UNREACHABLE, unreachable
from shared.config import BaseConfig, build_parser, parse, setting

PROG = "facestream gallery"


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
    skip_bad: bool = setting(False, "enroll the good photos even when others are refused (default: all or "
                             "nothing); enroll-all: also skip the folders whose name is invalid")
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
    """Enroll one person (`name` already checked); 0 done, 1 photos refused."""
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
    try:
        version = store.add(name, {a.embedding_id: a.embedding for a in accepted}, rec.model.model_version,
                            [str(a.path) for a in accepted], replace=cfg.replace)
    except ValueError as e:  # enrolled with another model
        print(f"nothing enrolled for {name}: {e}", file=sys.stderr)
        return 1
    print(f"enrolled {name}: {len(accepted)} embedding(s) from {len(accepted)} photo(s), "
          f"model {rec.model.model_version}, gallery v{version}")
    return 0 if not refused else 1


def people_folders(root: str, skip_bad: bool) -> tuple[list[tuple[str, Path]], int]:
    """(name, folder) of every person under ROOT, names checked first, and the status so far: InvalidName for
    the first bad name, or (with `skip_bad`) each bad folder named on stderr, skipped, and status 1.
    Hidden folders (.git, .thumbnails) are not people and are passed over."""
    people, status = [], 0
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            people.append((check_name(folder.name), folder))
        except InvalidName as e:
            if not skip_bad:
                raise InvalidName(folder.name, f"{e.why} (a folder of {root}: rename it, or pass --skip-bad)") from None
            print(f"{PROG}: skipping a folder of {root}: {e}", file=sys.stderr)
            status = 1
    return people, status


def run(cfg: GalleryConfig, args: argparse.Namespace) -> int:
    store = GalleryStore.for_config(cfg, cfg.gallery_prefix)
    if args.cmd == "enroll":
        name = check_name(args.name)
        store.ping()  # before the models load: a missing Redis costs a second, not the photos' work
        return enroll(cfg, store, name, args.paths)
    if args.cmd == "enroll-all":
        if not Path(args.root).is_dir():
            print(f"{PROG}: {args.root}: no such folder", file=sys.stderr)
            return 1
        people, status = people_folders(args.root, cfg.skip_bad)
        if not people:
            print(f"{args.root}: no person folders (expected ROOT/<name>/<photos>)", file=sys.stderr)
            return 1
        store.ping()
        rec = load_recognizer(cfg)
        return max([status] + [enroll(cfg, store, name, [str(folder)], rec) for name, folder in people])
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
    if args.cmd == "remove":  # any name, even one the rule now refuses: it may predate the rule
        if store.remove(args.name):
            print(f"removed {shown(args.name)[1:-1]}")
            return 0
        print(f"no such person: {shown(args.name)[1:-1]}", file=sys.stderr)
        return 1
    return 2


def main(argv: list[str]) -> int:
    cfg, args = config(argv)
    try:
        return run(cfg, args)
    except InvalidName as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except UNREACHABLE as e:
        print(f"{PROG}: {unreachable(cfg.redis_url, e)}", file=sys.stderr)
        return 2
