"""Naming the gallery's Redis without its password, and the faults that mean it is gone.

    mask_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"

Every log line and message that names a Redis server goes through `mask_url` (shared/redact.py, the one
masking rule; `shared.config.describe` applies it to the settings logged at start). `UNREACHABLE` are the Redis faults of
`shared.faults`: the commands answer them with exit status 2 and one line, the matcher with a retry.
"""
from __future__ import annotations

import redis

from shared.redact import mask_url, url_secrets

__all__ = ["UNREACHABLE", "mask_url", "unreachable"]
UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def unreachable(url: str, exc: BaseException) -> str:
    """`Redis at <masked url> is unreachable (<reason>)`, on one line, with no secret in it."""
    reason = " ".join((str(exc) or type(exc).__name__).split())
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return f"Redis at {mask_url(url)} is unreachable ({reason})"
