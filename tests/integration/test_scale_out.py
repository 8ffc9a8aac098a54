"""Embedders scale out in one consumer group on the real broker: the group's partitions are rebalanced over
two, then three `facestream embedder` processes, and a process SIGKILLed with a batch in hand loses
nothing: every input frame still gets its output in the embeddings topic (at least once).

Throughput with 1, 2 and 3 processes is measured, not asserted, by the benchmark (bench/scale_out.py):
timing assertions would fail on a busy machine for reasons that are not bugs.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from bench import promtext
from bench.inputs import aligned_crop_sets, crop_jpegs, default_detector, frame_faces
from bench.kafka_util import Topics, delete_groups, produce, run_id
from bench.scale_out import start_embedder, wait_balanced
from services.local_pipeline import LocalPipeline, Service
from shared.schemas import FrameEmbeddings

pytestmark = pytest.mark.integration
PARTITIONS = 6
CAMERAS = [f"scale-cam-{i}" for i in range(12)]
FRAMES, FACES_PER_FRAME = 240, 2


def wait_batch_in_hand(svc: Service, out_topic: str, timeout_s: float = 120.0) -> None:
    """Until `svc` has consumed more frames than it has acknowledged outputs for (each frame yields exactly
    one output, so in > out means a batch is between poll and commit); fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples = promtext.parse(svc.get("/metrics")[1])
        got_in = promtext.total(samples, "facestream_messages_in_total")
        got_out = promtext.total(samples, "facestream_messages_out_total", topic=out_topic)
        if got_in > got_out:
            return
        time.sleep(0.02)
    raise AssertionError(f"{svc.name} never held a batch in hand within {timeout_s:.0f} s")


def outputs_until_complete(bootstrap: str, topic: str, expected: set[tuple[str, int]],
                           timeout_s: float = 180.0) -> list[FrameEmbeddings]:
    """Every record of `topic` from the start, read until each expected (camera, seq) has an output."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    out: list[FrameEmbeddings] = []
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not expected <= seen and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    fe = FrameEmbeddings.decode(r.value)
                    out.append(fe)
                    seen.add((fe.camera_id, fe.seq))
    finally:
        c.close()
    return out


def test_embedders_rebalance_over_two_then_three_and_a_kill_mid_batch_loses_nothing(kafka_bootstrap, data_dir,
                                                                                    tmp_path):
    sets = aligned_crop_sets(default_detector())  # real LFW faces, aligned by the pipeline's detector
    jpegs, more = crop_jpegs(sets[0]), (crop_jpegs(sets[1]) if len(sets) > 1 else None)  # a fused pair: both
    group = f"scale-{run_id()}"
    pipe = LocalPipeline(tmp_path, env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap})
    with Topics(kafka_bootstrap) as topics:
        faces, embs = topics.make("scale-faces", PARTITIONS), topics.make("scale-embeddings", PARTITIONS)
        try:
            a = start_embedder(pipe, faces, embs, group, "embedder-a")
            b = start_embedder(pipe, faces, embs, group, "embedder-b")
            pipe.wait_ready(a)
            pipe.wait_ready(b)
            two = wait_balanced([a, b], PARTITIONS)
            assert sum(two) == PARTITIONS and min(two) >= 1, two

            c = start_embedder(pipe, faces, embs, group, "embedder-c")
            pipe.wait_ready(c)
            three = wait_balanced([a, b, c], PARTITIONS)
            assert sum(three) == PARTITIONS and min(three) >= 1, three

            frames = frame_faces(jpegs, FRAMES, FACES_PER_FRAME, CAMERAS, more_jpegs=more)
            produce(kafka_bootstrap, faces, [f.encode() for f in frames], [f.camera_id.encode() for f in frames],
                    partitions=PARTITIONS)
            wait_batch_in_hand(c, embs)
            pipe.kill(c)  # SIGKILL: no commit, no LeaveGroup; the broker notices when its session expires

            # the survivors take c's partitions over and re-read them from c's last commit
            survivors = wait_balanced([a, b], PARTITIONS, timeout_s=90)
            assert sum(survivors) == PARTITIONS, survivors
            expected = {(f.camera_id, f.seq) for f in frames}
            outputs = outputs_until_complete(kafka_bootstrap, embs, expected)
        finally:
            pipe.stop()
            delete_groups(kafka_bootstrap, [group])
    produced = {(o.camera_id, o.seq) for o in outputs}
    missing = expected - produced
    assert not missing, f"{len(missing)} frames never got an output: {sorted(missing)[:10]}"
    for o in outputs:  # and each output is a real embedding of both faces
        assert len(o.faces) == FACES_PER_FRAME
        assert all(abs(float(np.linalg.norm(f.embedding)) - 1.0) < 1e-3 for f in o.faces)
