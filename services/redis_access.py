"""Connecting to the gallery's Redis, naming it without its password, and the faults that mean it is gone.

    r = client_for(cfg)                       # cfg: redis_url, redis_user, redis_password, redis_ca_file
    mask_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"

One way to connect for every command: `rediss://` in the URL means TLS, verified against `redis_ca_file`
(else the system's CAs); `redis_user`/`redis_password` (a Redis 6+ ACL user; the password usually from
FACESTREAM_REDIS_PASSWORD_FILE, a mounted Secret) override what the URL holds, so that no password need be
written into a URL at all. Every log line and message that names a Redis server goes through `mask_url`
(shared/redact.py, the one masking rule). `UNREACHABLE` are the Redis faults of `shared.faults`: the
commands answer them with exit status 2 and one line, the matcher with a retry.
"""
from __future__ import annotations

from typing import Any, Protocol

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.redact import mask_url, url_secrets

__all__ = ["UNREACHABLE", "client", "client_for", "mask_url", "unreachable"]
UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisSettings(Protocol):
    redis_url: str
    redis_user: str
    redis_password: str
    redis_ca_file: str


def client(url: str, *, user: str = "", password: str = "", ca_file: str = "", timeout_s: float = 10.0,
           retries: int = 1, **extra: Any) -> redis.Redis:
    """A client of the Redis at `url`. `retries`: redis-py's own retries of a failed command; its default
    (10, with backoff) spends seconds on every command against a server that is gone, so commands fail fast
    and the callers retry on their own schedule."""
    kw: dict[str, Any] = dict(socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 5.0),
                              health_check_interval=30,
                              retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    if user:
        kw["username"] = user
    if password:
        kw["password"] = password
    if url.startswith("rediss://"):
        kw["ssl_cert_reqs"] = "required"
        if ca_file:
            kw["ssl_ca_certs"] = ca_file
    kw.update(extra)
    return redis.Redis.from_url(url, **kw)


def client_for(cfg: RedisSettings, **kw: Any) -> redis.Redis:
    """`client` with a command's settings."""
    return client(cfg.redis_url, user=getattr(cfg, "redis_user", ""), password=getattr(cfg, "redis_password", ""),
                  ca_file=getattr(cfg, "redis_ca_file", ""), **kw)


def unreachable(url: str, exc: BaseException) -> str:
    """`Redis at <masked url> is unreachable (<reason>)`, on one line, with no secret in it."""
    reason = " ".join((str(exc) or type(exc).__name__).split())
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return f"Redis at {mask_url(url)} is unreachable ({reason})"
