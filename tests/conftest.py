"""Fixtures shared by every test tier.

Integration fixtures connect to the real Kafka broker and Redis server that `make test` starts
(`scripts/stack.py up`). A test that needs one and finds none FAILS with the reason: it never skips.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared import paths

ROOT = Path(__file__).resolve().parent.parent
DATA = paths.data_root()
KAFKA = os.environ.get("FACESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:" + os.environ.get("FACESTREAM_KAFKA_PORT", "9092"))
REDIS = os.environ.get("FACESTREAM_REDIS_URL",
                       "redis://127.0.0.1:" + os.environ.get("FACESTREAM_REDIS_PORT", "6379") + "/0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The face data (`shared.paths.data_root()`: $FACESTREAM_DATA or ../shared/data); fails when absent."""
    if not (DATA / "README.md").exists():
        pytest.fail(f"face data not found at {DATA}: set FACESTREAM_DATA to ../shared/data")
    return DATA


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=5000).close()
    except Exception as e:
        pytest.fail(f"no Kafka broker at {KAFKA} ({type(e).__name__}: {e}); run the suite with `make test`")
    return KAFKA


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except Exception as e:
        pytest.fail(f"no Redis server at {REDIS} ({type(e).__name__}: {e}); run the suite with `make test`")
    return REDIS


@pytest.fixture
def make_topic(kafka_bootstrap):
    """Create uniquely named topics for one test (isolation from other tests and earlier runs); they are
    deleted after it. The one topic helper (bench.kafka_util.Topics over shared.kafka_admin)."""
    from bench.kafka_util import Topics

    with Topics(kafka_bootstrap) as topics:
        yield lambda prefix="test", partitions=1: topics.make(prefix, partitions)


def consume_all(bootstrap: str, topic: str, *, group_id: str | None = None, expect: int | None = None,
                timeout_s: float = 20.0, commit: bool = False, isolation_level: str = "read_uncommitted") -> list:
    """Read a topic from its start (or a group's committed offsets) until `expect` records or a quiet timeout."""
    import time

    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest",
                      enable_auto_commit=False, isolation_level=isolation_level)
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (expect is None or len(out) < expect):
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
            if expect is None and out and time.monotonic() > deadline - timeout_s + 3:
                # without a target count, stop once a few seconds passed and nothing more arrives
                more = c.poll(timeout_ms=1500)
                if not more:
                    break
                for recs in more.values():
                    out.extend(recs)
        if commit and group_id:
            c.commit()
    finally:
        c.close()
    return out


def _fuzz_profile() -> None:
    """Hypothesis: bounded and derandomized in CI (the same examples every run, so a failure reproduces);
    FACESTREAM_FUZZ_EXAMPLES=5000 hunts longer with fresh random examples."""
    from hypothesis import settings

    n = int(os.environ.get("FACESTREAM_FUZZ_EXAMPLES", "0"))
    settings.register_profile("facestream", max_examples=n or 150, derandomize=not n, deadline=None,
                              print_blob=True)
    settings.load_profile("facestream")


_fuzz_profile()
