"""The matcher SIGKILLed mid-visit and restarted: a read_committed consumer sees exactly one identity event for
the visit, and one visit-ended event after the person left, with the same visit id.

A camera streams one enrolled person (a synthetic unit vector, so that nothing but the matcher runs) at
5 frames/s. The matcher announces the visit, is SIGKILLed while the person is still there, and restarts
with the same transactional id; the person stays on camera, new tracks start, and the visit in Redis keeps
them from being announced again. When the camera stops, the visit ends after the gap.
"""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import redis

from services.local_pipeline import LocalPipeline
from services.matcher.gallery_store import GalleryStore
from shared.kafka_admin import create_topics, delete_topics
from shared.kafka_clients import make_producer
from shared.schemas import EmbeddedFace, FrameEmbeddings, IdentityEvent
from shared.vision import meta
from tests.conftest import consume_all

pytestmark = pytest.mark.integration
GAP_S = 6.0


def stream(bootstrap: str, topic: str, vec: np.ndarray, model: str, stop: threading.Event) -> None:
    p = make_producer(bootstrap, "visit-feed")
    seq = 0
    while not stop.is_set():
        face = EmbeddedFace((100.0, 80.0, 180.0, 160.0), 0.99, vec, 80.0, 120.0)
        p.send(topic, key=b"door", value=FrameEmbeddings("door", seq, time.time(), 640, 360, model, (face,)).encode())
        seq += 1
        time.sleep(0.2)
    p.flush()
    p.close()


def events_of(bootstrap: str, topic: str, expect: int | None = None, timeout_s: float = 10) -> list[IdentityEvent]:
    return [IdentityEvent.decode(r.value) for r in
            consume_all(bootstrap, topic, expect=expect, timeout_s=timeout_s, isolation_level="read_committed")]


def test_a_matcher_killed_mid_visit_announces_the_visit_once(kafka_bootstrap, redis_url, tmp_path):
    run = uuid.uuid4().hex[:8]
    embs, events = f"mv-emb-{run}", f"mv-events-{run}"
    create_topics(kafka_bootstrap, {embs: 1, events: 1})
    prefix = f"facestream:test-{run}"
    model = meta.read_meta(meta.default_path())
    person = np.zeros(int(model["embedding_dim"]), np.float32)
    person[5] = 1.0
    GalleryStore.from_url(redis_url, prefix).add("Pat_Visitor", {"e1": person}, model["model_version"], ["synthetic"])
    pipe = LocalPipeline(tmp_path, env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap, "FACESTREAM_REDIS_URL": redis_url})
    args = ("--embeddings-topic", embs, "--events-topic", events, "--group-id", f"mv-{run}", "--gallery-prefix",
            prefix, "--visit-gap-s", str(GAP_S), "--transactional-id", f"mv-matcher-{run}")
    stop = threading.Event()
    feeder = threading.Thread(target=stream, args=(kafka_bootstrap, embs, person, model["model_version"], stop),
                              daemon=True)
    try:
        first = pipe.start("matcher", *args)
        feeder.start()
        announced = events_of(kafka_bootstrap, events, expect=1, timeout_s=30)
        assert [e.kind for e in announced] == ["identified"], announced
        time.sleep(1.5)  # mid-visit: the person is still on camera, frames keep coming
        pipe.kill(first)
        assert first.proc.returncode == -9
        second = pipe.start("matcher", *args)  # same transactional id: fences the dead one's open transaction
        time.sleep(8)  # the person stays: new tracks (the dead matcher's went with it) within the visit
        assert second.metric("facestream_messages_in_total") > 20, "the restarted matcher matched the person's frames"
        stop.set()
        feeder.join(10)
        seen = events_of(kafka_bootstrap, events, expect=2, timeout_s=GAP_S + 30)
        identified = [e for e in seen if e.kind == "identified"]
        ended = [e for e in seen if e.kind == "visit-ended"]
        assert len(identified) == 1 and identified[0].identity == "Pat_Visitor", [(e.kind, e.event_id) for e in seen]
        assert len(ended) == 1 and ended[0].visit_id == identified[0].visit_id, seen
        assert ended[0].duration_s >= 8, "the visit spans both matchers' frames"
        assert pipe.stop(second) == {second.name: 0}
    finally:
        stop.set()
        pipe.stop()
        delete_topics(kafka_bootstrap, [embs, events])
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
