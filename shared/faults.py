"""Whose fault is an exception: the input's or the world's. One list, in one place.

The rule, with no exceptions: an exception raised while one input is processed is that input's fault: the
input is dead-lettered with the exception's type and message, and the process goes on. Only the faults
declared here are the world's: a dependency that is gone or full. They stop the process WITHOUT
committing, so the input is read again, by this process once restarted or by another member, when the
dependency is back. Going on past one of these would drop inputs that are perfectly good.

    broker      kafka.errors.KafkaError (the producer could not deliver, the coordinator is gone)
    Redis       redis.exceptions.ConnectionError and TimeoutError, where a stage's processing needs Redis
                (the matcher does not: it matches from its in-memory index and resyncs on its own thread)
    GPU memory  torch.cuda.OutOfMemoryError (checked only if torch is already loaded: the matcher never
                imports torch and must not start to for this)

A crash loop on one message is impossible by construction: no input can raise one of these by its
content (a huge frame is refused by its header before anything is allocated; see shared.vision.images).
"""
from __future__ import annotations

import sys


def dependency_faults() -> tuple[type[BaseException], ...]:
    """The exception types that are a dependency's fault, not the input's."""
    from kafka.errors import KafkaError

    kinds: list[type[BaseException]] = [KafkaError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency of the project
        pass
    else:
        kinds += [RedisConnectionError, RedisTimeoutError]
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda") and hasattr(torch.cuda, "OutOfMemoryError"):
        kinds.append(torch.cuda.OutOfMemoryError)
    return tuple(kinds)


def is_dependency_fault(exc: BaseException) -> bool:
    return isinstance(exc, dependency_faults())


def describe(exc: BaseException, limit: int = 500) -> str:
    """`Type: message`, cut to `limit` characters: the reason a dead letter carries."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
