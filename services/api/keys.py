"""API keys: random secrets shown once, stored hashed, each with one role.

A key reads `fsk_<id>_<secret>`: the 8-hex `id` names it in lists, logs and audit records; the secret (32
random bytes) is never stored. Redis holds, per id, the key's SHA-256 with its role, label and creation
time. A plain hash suffices where a password would need a slow one: a key is 256 random bits, so there
is no dictionary to try, and every request pays for the check.

Roles are ordered, each allowing what the one before it does: viewer reads (people, recognize, events),
operator also enrolls and labels, admin also erases people and manages keys.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass

ROLES = ("viewer", "operator", "admin")
KEY_RE = re.compile(r"^fsk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
LABEL_RE = re.compile(r"^[\w .,:@()'-]{1,64}$")
DEFAULT_PREFIX = "facestream:api"


class KeyRefused(ValueError):
    """A role or label `api-key create` refuses, with the reason."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: str
    label: str
    created: float


def allows(role: str, needed: str) -> bool:
    """Whether a key of `role` may do what `needed` may."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str | None:
    """The id of a well-formed key, else None (nothing else is read from a malformed one)."""
    m = KEY_RE.fullmatch(key)  # not match: its `$` lets a trailing newline through
    return m.group(1) if m else None


def new_key(role: str, label: str, clock=time.time) -> tuple[str, ApiKey]:
    if role not in ROLES:
        raise KeyRefused(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not LABEL_RE.fullmatch(label):
        raise KeyRefused(f"label {label!r}: 1 to 64 letters, digits, spaces or . , : @ ( ) ' - _")
    kid = secrets.token_hex(4)
    return f"fsk_{kid}_{secrets.token_urlsafe(32)}", ApiKey(kid, role, label, clock())


class KeyStore:
    """The keys in Redis: one hash `{prefix}:keys`, field = key id, value = JSON (role, label, created,
    sha256)."""

    def __init__(self, client, prefix: str = DEFAULT_PREFIX):
        self.r, self.key = client, f"{prefix}:keys"

    def create(self, role: str, label: str) -> tuple[str, ApiKey]:
        """A new key (the only time its secret exists outside the caller) and its record."""
        plain, rec = new_key(role, label)
        while not self.r.hsetnx(self.key, rec.id, json.dumps({**asdict(rec), "sha256": digest(plain)})):
            plain, rec = new_key(role, label)  # an id taken already (1 in 4 billion a pair)
        return plain, rec

    def list(self) -> list[ApiKey]:
        out = []
        for raw in self.r.hvals(self.key):
            d = json.loads(raw)
            out.append(ApiKey(d["id"], d["role"], d["label"], d["created"]))
        return sorted(out, key=lambda k: k.created)

    def revoke(self, kid: str) -> bool:
        return bool(self.r.hdel(self.key, kid))

    def check(self, key: str) -> ApiKey | None:
        """The record of a valid key, else None (malformed, unknown, revoked or wrong secret alike)."""
        kid = key_id(key)
        raw = self.r.hget(self.key, kid) if kid else None
        if raw is None:
            return None
        d = json.loads(raw)
        if not hmac.compare_digest(d["sha256"], digest(key)):
            return None
        return ApiKey(d["id"], d["role"], d["label"], d["created"])
