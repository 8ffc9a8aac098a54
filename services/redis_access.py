"""Naming the gallery's Redis without its password, and the faults that mean it is gone.

    mask_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"

Every log line and message that names a Redis server goes through `mask_url` (`shared.config.describe`
masks the whole URL in the settings logged at start). `UNREACHABLE` are the Redis faults of
`shared.faults`: the commands answer them with exit status 2 and one line, the matcher with a retry.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

import redis

UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_SECRET_PARAMS = {"password", "pass", "passwd", "secret", "token"}
_SECRET_QUERY = re.compile(r"(^|&)(" + "|".join(_SECRET_PARAMS) + r")=[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a `?password=` parameter) replaced by ***; a user
    part with no ':' is masked whole, since Redis URLs are often written `redis://secret@host`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    out = url
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        out = out.replace(parts.netloc, f"{user}:***@{host}" if colon else f"***@{host}", 1)
    if parts.query:
        head, _, rest = out.partition("?")
        out = head + "?" + _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", rest)
    return out


def secrets_of(url: str) -> list[str]:
    """The secret strings a URL holds, raw and decoded: what must never appear in a message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append(userinfo.partition(":")[2] if ":" in userinfo else userinfo)
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS]
    return [s for raw in found if raw for s in {raw, unquote(raw)}]


def unreachable(url: str, exc: BaseException) -> str:
    """`Redis at <masked url> is unreachable (<reason>)`, on one line, with no secret in it."""
    reason = " ".join((str(exc) or type(exc).__name__).split())
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return f"Redis at {mask_url(url)} is unreachable ({reason})"
