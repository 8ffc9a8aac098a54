"""Broker failover under load: two RTSP cameras through all four stages on a 3-broker KRaft cluster
(replication 3, min.insync.replicas 2, idempotent acks=all producers, the matcher transactional), while
the broker that coordinates the matcher's transactions (the worst one to lose: every event waits on it)
is SIGKILLed mid-stream and later brought back.

It shows: no stage exits; every (camera, session, seq) ingest published is accounted for in the faces
topic (detected, or skipped for a newer frame, or stale) and every detected one reaches the embeddings
topic; the time until output resumed after the kill; the duplicates the at-least-once path produced. The figures go
to .run/test-figures/broker_failover.json (and the test's output).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest
import redis

from services.local_pipeline import LocalPipeline
from shared import topics
from shared.kafka_clients import make_admin, make_consumer
from shared.schemas import Frame, FrameEmbeddings, FrameFaces, IdentityEvent
from tests.conftest import ROOT
from tests.integration.conftest import facestream
from scripts.extra_stack import ExtraStack

pytestmark = pytest.mark.integration
FPS, WIDTH = 4, 640
BEFORE_S, DOWN_S, AFTER_S = 15.0, 20.0, 10.0  # streaming before the kill, with a broker down, after its return
FIGURES = ROOT / ".run" / "test-figures" / "broker_failover.json"


class Watch(threading.Thread):
    """Every record of a topic, from its start, with the time it was read (no group: nothing to disturb)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.got: list[tuple[float, bytes]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from kafka import TopicPartition

        c = make_consumer(self.bootstrap, None, "failover-watch", isolation_level="read_committed")
        parts = [TopicPartition(self.topic, p) for p in range(topics.BY_NAME[self.topic].partitions)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        try:
            while not self.halt.is_set():
                for recs in c.poll(timeout_ms=300).values():
                    now = time.time()
                    self.got += [(now, r.value) for r in recs]
        finally:
            c.close()


def java_hash(s: str) -> int:
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_of(bootstrap: str, transactional_id: str, partitions: int = 50) -> int:
    """The broker that coordinates a transactional id: the leader of its __transaction_state partition
    (Kafka's Utils.abs(id.hashCode()) % transaction.state.log.num.partitions, 50 by default)."""
    h = java_hash(transactional_id)
    index = (0 if h == -(1 << 31) else abs(h)) % partitions
    admin = make_admin(bootstrap)
    try:
        parts = admin.describe_topics(["__transaction_state"])[0]["partitions"]
        return next(p["leader_id"] for p in parts if p["partition_index"] == index)
    finally:
        admin.close()


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    w = Watch(bootstrap, topic)
    w.start()
    time.sleep(3)
    last = -1
    while len(w.got) != last:  # until a poll round brings nothing new
        last = len(w.got)
        time.sleep(2)
    w.halt.set()
    w.join(10)
    return [v for _, v in w.got]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ExtraStack(tmp_path_factory.mktemp("failover"), brokers=3) as stack:
        yield stack


def test_a_broker_killed_mid_stream_loses_no_frame_and_stops_no_stage(cluster, redis_url, data_dir, rtsp_cameras,
                                                                      tmp_path):
    run = uuid.uuid4().hex[:8]
    prefix = f"facestream:test-{run}"
    enrolled = facestream("gallery", "--redis-url", redis_url, "--prefix", prefix, "enroll-all",
                          str(data_dir / "videos/enroll"), "--pick", "largest")
    assert enrolled.returncode == 0, enrolled.stderr
    boot = cluster.kafka_bootstrap
    txn_id = f"fo-matcher-{run}"
    pipe = LocalPipeline(tmp_path / "logs", env={**cluster.env, "FACESTREAM_REDIS_URL": redis_url})
    faces_watch, emb_watch = Watch(boot, topics.FACES.name), Watch(boot, topics.EMBEDDINGS.name)
    try:
        for stage, extra in (("detector", ()), ("embedder", ("--threads", "1")),
                             ("matcher", ("--gallery-prefix", prefix, "--transactional-id", txn_id))):
            pipe.start(stage, "--group-id", f"fo-{stage}-{run}", *extra, wait_ready=False)
        for svc in pipe.services:
            pipe.wait_ready(svc)
        faces_watch.start()
        emb_watch.start()
        urls = rtsp_cameras({"cam-a": data_dir / "videos/biden_2021_7s.mp4",
                             "cam-b": data_dir / "videos/hamilton_lin_manuel_miranda_9s.mp4"}, loop=True)
        ingest = pipe.start("ingest", "--camera", f"cam-a={urls['cam-a']}", "--camera", f"cam-b={urls['cam-b']}",
                            "--fps", str(FPS), "--max-width", str(WIDTH), "--metrics-host", "127.0.0.1",
                            wait_ready=False)
        time.sleep(BEFORE_S)
        victim = coordinator_of(boot, txn_id)  # the hardest broker to lose: the matcher's transactions stall
        killed_at = time.time()
        cluster.stop_broker(victim)
        time.sleep(DOWN_S)
        restarted_at = time.time()
        cluster.start_broker(victim)
        back_in_s = time.time() - restarted_at
        time.sleep(AFTER_S)
        running = {s.name: s.proc.poll() for s in pipe.services}
        assert all(code is None for code in running.values()), f"a stage exited: {running}"
        assert pipe.stop(ingest) == {ingest.name: 0}, ingest.log_tail()

        published = [Frame.decode(v) for v in read_topic(boot, topics.FRAMES.name)]
        sent = Counter((f.camera_id, f.session, f.seq) for f in published)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # every frame accounted for (detected, skipped or stale) in faces
            faces = [FrameFaces.decode(v) for _, v in list(faces_watch.got)]
            accounted = Counter((f.camera_id, f.session, f.seq) for f in faces)
            if set(sent) <= set(accounted):
                break
            time.sleep(2)
        detected = {(f.camera_id, f.session, f.seq) for f in faces if f.status == "ok"}
        time.sleep(5)  # the embedder's last batch
        embedded = Counter()
        for _, v in list(emb_watch.got):
            e = FrameEmbeddings.decode(v)
            embedded[(e.camera_id, e.session, e.seq)] += 1
        lost = set(sent) - set(accounted)
        not_embedded = detected - set(embedded)
        after = sorted(t for t, v in faces_watch.got if FrameFaces.decode(v).capture_ts > killed_at)
        events = [IdentityEvent.decode(v) for v in read_topic(boot, topics.IDENTITY_EVENTS.name)]
        figures = {
            "frames_published": len(sent), "frames_lost": len(lost), "cameras": sorted({k[0] for k in sent}),
            "frames_detected": len(detected), "detected_but_not_embedded": len(not_embedded),
            "frames_published_twice": sum(n - 1 for n in sent.values()),
            "duplicates_in_faces": sum(n - 1 for n in accounted.values()),
            "duplicates_in_embeddings": sum(n - 1 for n in embedded.values()),
            "output_resumed_after_s": round(after[0] - killed_at, 2) if after else None,
            "killed_broker": victim, "broker_down_s": round(restarted_at - killed_at, 1),
            "broker_back_in_metadata_s": round(back_in_s, 1),
            "identity_events": Counter(e.identity for e in events if e.kind != "visit-ended"),
        }
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2, default=str))
        print("broker failover:", json.dumps(figures, default=str))
        assert not lost, f"{len(lost)} of {len(sent)} frames never reached the faces topic: {sorted(lost)[:5]}"
        assert not not_embedded, f"{len(not_embedded)} detected frames never reached the embeddings topic"
        assert set(figures["cameras"]) == {"cam-a", "cam-b"} and len(sent) > FPS * (BEFORE_S + DOWN_S)
        assert figures["output_resumed_after_s"] is not None, "no frame captured after the kill came out"
        assert figures["identity_events"].get("Joe_Biden") and figures["identity_events"].get("Lin_Manuel_Miranda")
        codes = pipe.stop()
        assert all(code == 0 for code in codes.values()), f"every stage stops cleanly: {codes}"
    finally:
        faces_watch.halt.set()
        emb_watch.halt.set()
        pipe.stop()
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
