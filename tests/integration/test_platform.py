"""The platform against the real broker: round trip, no loss on a kill, dead letters, graceful stop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from shared import kafka_loop, metrics
from shared.schemas import Frame
from tests.conftest import ROOT, consume_all
from tests.integration.echo_stage import echo_stage

pytestmark = pytest.mark.integration
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 2000


def produce_frames(bootstrap: str, topic: str, n: int, camera: str = "cam") -> list[Frame]:
    producer = kafka_loop.make_producer(bootstrap, "test")
    frames = [Frame(camera, i, time.time(), 64, 48, JPEG) for i in range(n)]
    for f in frames:
        producer.send(topic, key=f.camera_id.encode(), value=f.encode())
    producer.flush()
    producer.close()
    return frames


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> int:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    finally:
        c.close()


def test_round_trip_through_a_topic(kafka_bootstrap, make_topic):
    topic = make_topic("roundtrip", partitions=3)
    sent = produce_frames(kafka_bootstrap, topic, 20)
    got = sorted((Frame.decode(r.value) for r in consume_all(kafka_bootstrap, topic, expect=20)), key=lambda f: f.seq)
    assert got == sent


def test_stage_copies_every_message_and_commits_after_output(kafka_bootstrap, make_topic):
    src, dst = make_topic("in", 2), make_topic("out", 2)
    produce_frames(kafka_bootstrap, src, 30)
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = kafka_loop.make_consumer(kafka_bootstrap, group, "t")
    producer = kafka_loop.make_producer(kafka_bootstrap, "t")
    stop = kafka_loop.StopFlag()
    out: list = []
    reader = threading.Thread(target=lambda: out.extend(consume_all(kafka_bootstrap, dst, expect=30)))
    reader.start()
    worker = threading.Thread(target=kafka_loop.run_stage, args=(echo_stage(src, dst), consumer, producer),
                              kwargs=dict(max_batch_size=8, max_batch_wait_ms=50, health=metrics.Health("echo"),
                                          stop=stop))
    worker.start()
    reader.join(60)
    stop.set()
    worker.join(30)
    kafka_loop.close(consumer, producer)
    assert sorted(Frame.decode(r.value).seq for r in out) == list(range(30))
    assert committed(kafka_bootstrap, group, src, 2) == 30


def test_worker_killed_before_commit_loses_nothing(kafka_bootstrap, make_topic, tmp_path):
    src, dst = make_topic("in", 1), make_topic("out", 1)
    produce_frames(kafka_bootstrap, src, 10)
    group = f"g-{uuid.uuid4().hex[:6]}"
    marker = tmp_path / "in-batch"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.echo_stage", kafka_bootstrap, src, dst, group,
                             str(marker)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the worker died before it got its batch"
            assert time.monotonic() < deadline, "the worker never got its batch"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-batch: processed, not produced, not committed
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert committed(kafka_bootstrap, group, src) == 0, "nothing may be committed for a batch whose output was lost"
    # a healthy worker in the same group gets every input again
    replacement = subprocess.Popen([sys.executable, "-m", "tests.integration.echo_stage", kafka_bootstrap, src, dst,
                                    group], cwd=ROOT)
    try:
        out = consume_all(kafka_bootstrap, dst, expect=10, timeout_s=60)
    finally:
        replacement.send_signal(signal.SIGTERM)  # graceful stop: commits and leaves the group
        assert replacement.wait(30) == 0
    assert sorted(Frame.decode(r.value).seq for r in out) == list(range(10))
    assert committed(kafka_bootstrap, group, src) == 10


def test_corrupt_and_invalid_messages_go_to_the_dead_letter_topic_and_the_loop_goes_on(kafka_bootstrap, make_topic):
    src, dst = make_topic("in", 1), make_topic("out", 1)
    producer = kafka_loop.make_producer(kafka_bootstrap, "test")
    producer.send(src, key=b"cam", value=Frame("cam", 0, time.time(), 8, 8, JPEG).encode())
    producer.send(src, key=b"cam", value=b"\x00garbage that is not msgpack")
    producer.send(src, key=b"cam", value=Frame("poison", 0, time.time(), 8, 8, JPEG).encode())
    producer.send(src, key=b"cam", value=Frame("cam", 1, time.time(), 8, 8, JPEG).encode())
    producer.flush()
    producer.close()
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = kafka_loop.make_consumer(kafka_bootstrap, group, "t")
    prod = kafka_loop.make_producer(kafka_bootstrap, "t")
    before = metrics.DEAD_LETTERED.labels("echo", "schema")._value.get()
    handled = 0
    deadline = time.monotonic() + 30
    while handled < 4 and time.monotonic() < deadline:
        handled += kafka_loop.run_stage(echo_stage(src, dst), consumer, prod, max_batch_size=10,
                                        max_batch_wait_ms=300, health=metrics.Health("echo"), max_batches=1)
    kafka_loop.close(consumer, prod)
    assert handled == 4
    assert sorted(Frame.decode(r.value).seq for r in consume_all(kafka_bootstrap, dst, expect=2)) == [0, 1]
    letters = [json.loads(r.value) for r in consume_all(kafka_bootstrap, "dead-letter", timeout_s=8)]
    ours = sorted((d for d in letters if d["topic"] == src), key=lambda d: d["offset"])
    assert [(d["offset"], d["partition"], d["stage"]) for d in ours] == [(1, 0, "echo"), (2, 0, "echo")]
    assert ours[0]["reason"].startswith("schema: frames: not msgpack")
    assert ours[1]["reason"] == "invalid: poison camera"
    assert metrics.DEAD_LETTERED.labels("echo", "schema")._value.get() == before + 1
    assert committed(kafka_bootstrap, group, src) == 4
