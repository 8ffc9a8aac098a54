"""A transactional stage (the matcher's mode) on the real broker: outputs and input offsets commit together.

A worker SIGKILLed inside its first transaction, after its outputs reached the log and before the commit,
is restarted with the same transactional id: a read_committed consumer sees every output exactly once,
while a read_uncommitted one also sees the aborted batch, which shows that the kill came at the worst
moment. The group's committed offset covers every input.
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from shared.kafka_admin import create_topics, delete_topics
from shared.kafka_clients import make_admin, make_producer
from shared.schemas import Frame
from tests.conftest import ROOT, consume_all
from tests.fuzz_messages import jpeg

pytestmark = pytest.mark.integration
N = 30


def worker(bootstrap: str, src: str, out: str, group: str, txn: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.echo_stage", bootstrap, src, out, group,
                             "--transactional", txn, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = make_admin(bootstrap)
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
        return sum(om.offset for tp, om in got.items() if tp.topic == topic)
    finally:
        admin.close()


def test_a_worker_killed_inside_a_transaction_publishes_each_output_once(kafka_bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    src, out, group, txn = f"tx-in-{run}", f"tx-out-{run}", f"tx-{run}", f"tx-worker-{run}"
    create_topics(kafka_bootstrap, {src: 1, out: 1})
    try:
        p = make_producer(kafka_bootstrap, "tx-feed")
        payload = jpeg(32, 24)
        for seq in range(N):
            p.send(src, key=b"cam", value=Frame("cam", seq, time.time(), 32, 24, payload).encode())
        p.flush()
        p.close()

        marker = tmp_path / "died"
        first = worker(kafka_bootstrap, src, out, group, txn, str(marker))
        assert first.wait(90) == -9, first.stdout.read()  # SIGKILLed itself inside the transaction
        assert marker.exists()
        aborted = consume_all(kafka_bootstrap, out, expect=1, timeout_s=20)
        assert aborted, "the killed worker's outputs reached the log (uncommitted)"

        second = worker(kafka_bootstrap, src, out, group, txn)  # same id: fences the first, aborts its transaction
        try:
            seen = consume_all(kafka_bootstrap, out, expect=N, timeout_s=90, isolation_level="read_committed")
            deadline = time.monotonic() + 30
            while committed(kafka_bootstrap, group, src) < N and time.monotonic() < deadline:
                time.sleep(0.5)
            assert committed(kafka_bootstrap, group, src) == N, "the inputs' offsets committed with the outputs"
        finally:
            second.terminate()
            assert second.wait(30) == 0, second.stdout.read()
        seqs = sorted(Frame.decode(r.value).seq for r in seen)
        assert seqs == list(range(N)), f"read_committed saw {len(seqs)} outputs: each exactly once"
        raw = consume_all(kafka_bootstrap, out, expect=N + len(aborted), timeout_s=20)
        assert len(raw) >= N + len(aborted), "read_uncommitted also sees the aborted batch"
    finally:
        delete_topics(kafka_bootstrap, [src, out])
