"""The stack `make up` starts: a standard Kafka tool we did not write talks to it, and `up` is idempotent."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from shared import topics
from tests.conftest import ROOT, consume_all

pytestmark = pytest.mark.integration


def kcat() -> str:
    path = shutil.which("kcat")
    if not path:
        pytest.fail("kcat is not installed: `make setup` installs Debian's kcat")
    return path


def test_kcat_produces_and_consumes_on_our_broker(kafka_bootstrap, make_topic):
    topic = make_topic("kcat", 1)
    lines = "\n".join(f"msg-{i}" for i in range(5)) + "\n"
    subprocess.run([kcat(), "-b", kafka_bootstrap, "-P", "-t", topic], input=lines.encode(), check=True, timeout=30)
    assert [r.value.decode() for r in consume_all(kafka_bootstrap, topic, expect=5)] == [f"msg-{i}" for i in range(5)]
    out = subprocess.run([kcat(), "-b", kafka_bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, check=True, timeout=30).stdout.decode().split()
    assert out == [f"msg-{i}" for i in range(5)]


def test_topics_exist_with_their_partition_counts(kafka_bootstrap):
    out = subprocess.run([kcat(), "-b", kafka_bootstrap, "-L", "-J"], capture_output=True, check=True, timeout=30)
    import json

    meta = {t["topic"]: len(t["partitions"]) for t in json.loads(out.stdout)["topics"]}
    for t in topics.ALL:
        assert meta.get(t.name) == t.partitions, t.name


def test_up_twice_is_harmless(kafka_bootstrap, redis_url):
    pids = {p: (ROOT / ".run/stack" / p / f"{p}.pid").read_text() for p in ("kafka", "redis")}
    res = subprocess.run([sys.executable, "scripts/stack.py", "up"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kafka already running" in res.stdout and "redis already running" in res.stdout
    assert {p: (ROOT / ".run/stack" / p / f"{p}.pid").read_text() for p in ("kafka", "redis")} == pids
