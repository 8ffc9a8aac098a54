"""`facestream api-key create|list|revoke`: the API's keys (services/api/keys.py), shown once, stored hashed."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from services.api.keys import DEFAULT_PREFIX, ROLES, KeyRefused, KeyStore
from services.redis_access import UNREACHABLE, client_for, unreachable
from shared.config import BaseConfig, build_parser, parse, setting


@dataclass(frozen=True)
class KeyConfig(BaseConfig):
    """facestream api-key: create, list and revoke the API's keys."""
    keys_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the API's keys")


def parser() -> argparse.ArgumentParser:
    p = build_parser(KeyConfig, "facestream api-key")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="a new key, printed once")
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--label", required=True, help="who or what holds it (shown in lists and audit records)")
    sub.add_parser("list", help="every key's id, role, label and creation time (never the secret)")
    rv = sub.add_parser("revoke", help="revoke a key by its id")
    rv.add_argument("id")
    return p


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """0 done; 1 no such key; 2 a refused role or label, or Redis unreachable (one line)."""
    cfg, args = parse(KeyConfig, argv, env, parser=parser())
    store = KeyStore(client_for(cfg), cfg.keys_prefix)
    try:
        if args.cmd == "create":
            plain, rec = store.create(args.role, args.label)
            print(plain)
            print(f"created key {rec.id} ({rec.role}, {rec.label}): shown once, store it now", file=sys.stderr)
            return 0
        if args.cmd == "list":
            for k in store.list():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(k.created))
                print(f"{k.id}  {k.role:<8} {created} UTC  {k.label}")
            return 0
        if store.revoke(args.id):
            print(f"revoked {args.id}")
            return 0
        print(f"no such key: {args.id!r}", file=sys.stderr)
        return 1
    except KeyRefused as e:
        print(f"facestream api-key: {e}", file=sys.stderr)
        return 2
    except UNREACHABLE as e:
        print(f"facestream api-key: {unreachable(cfg.redis_url, e)}", file=sys.stderr)
        return 2
