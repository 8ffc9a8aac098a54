"""The fault matrix, poison-input rows: every input that once stopped a stage, sent to the topic that stage
reads while real detector, embedder and matcher processes run on the real broker and Redis. Each must land
in the dead-letter topic with its reason (or, for a frame below MTCNN's smallest face, come out as a frame
with no face), the stage must stay up, and the valid message sent after it must be processed.

The other rows of the matrix: test_redis_faults.py (Redis away and back), test_ingest_faults.py (ingest
restarts, a silent camera), test_restarts.py (SIGKILL and restart of a detector).
"""
from __future__ import annotations

import json
import time
import uuid

import msgpack
import numpy as np
import pytest

from services.local_pipeline import LocalPipeline
from shared import topics
from shared.kafka_admin import create_topics, delete_topics
from shared.schemas import EmbeddedFace, FrameEmbeddings, FrameFaces, IdentityEvent
from tests.conftest import consume_all
from tests.fuzz_messages import claim_size, default_model_sizes, jpeg, valid_faces

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stages(kafka_bootstrap, redis_url, tmp_path_factory):
    """A detector, an embedder and a matcher on topics of their own, the matcher with one person
    enrolled as a synthetic unit vector (so that valid embeddings give an identity event)."""
    from services.matcher.gallery_store import GalleryStore
    from shared.vision import meta

    run = uuid.uuid4().hex[:8]
    names = {k: f"fm-{k}-{run}" for k in ("frames", "faces", "embeddings", "events")}
    create_topics(kafka_bootstrap, {t: 1 for t in names.values()})
    prefix = f"facestream:fm-{run}"
    model = meta.read_meta(meta.default_path())
    person = np.zeros(int(model["embedding_dim"]), np.float32)
    person[3] = 1.0
    GalleryStore.from_url(redis_url, prefix).add("Pat_Tester", {"e1": person}, model["model_version"], ["synthetic"])
    pipe = LocalPipeline(tmp_path_factory.mktemp("fault-matrix"), env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                                       "FACESTREAM_REDIS_URL": redis_url})
    try:
        svc = {
            "detector": pipe.start("detector", "--frames-topic", names["frames"], "--faces-topic", names["faces"],
                                   "--group-id", f"fm-det-{run}", wait_ready=False),
            "embedder": pipe.start("embedder", "--faces-topic", names["faces"], "--embeddings-topic",
                                   names["embeddings"], "--group-id", f"fm-emb-{run}", "--threads", "1",
                                   wait_ready=False),
            "matcher": pipe.start("matcher", "--embeddings-topic", names["embeddings"], "--events-topic",
                                  names["events"], "--group-id", f"fm-match-{run}", "--gallery-prefix", prefix,
                                  wait_ready=False),
        }
        for s in svc.values():
            pipe.wait_ready(s)
        yield {"pipe": pipe, "svc": svc, "topics": names, "person": person, "model": model}
    finally:
        codes = pipe.stop()
        delete_topics(kafka_bootstrap, names.values())
        import redis

        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
    assert codes == {s.name: 0 for s in pipe.services}, f"a stage did not stop cleanly: {codes}"


def send(bootstrap: str, topic: str, key: bytes, values: list[bytes]) -> None:
    from shared.kafka_loop import make_producer

    p = make_producer(bootstrap, "fault-matrix", max_request_size=2_000_000)
    for v in values:
        p.send(topic, key=key, value=v)
    p.flush()
    p.close()


def dead_letters(bootstrap: str, source_topic: str, expect: int, key: str | None = None) -> list[dict]:
    """The dead letters of `source_topic` (and of messages keyed `key`), in offset order."""
    deadline, found = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        found = [json.loads(r.value) for r in consume_all(bootstrap, topics.DEAD_LETTER.name, timeout_s=5)]
        found = sorted((d for d in found if d["topic"] == source_topic and (key is None or d["key"] == key)),
                       key=lambda d: d["offset"])
        if len(found) >= expect:
            return found
    return found


def frame_msg(seq: int, w: int, h: int, payload: bytes, camera: str) -> bytes:
    return msgpack.packb({"v": 1, "camera_id": camera, "seq": seq, "capture_ts": time.time(), "width": w,
                          "height": h, "jpeg": payload})


def test_poison_frames_cost_one_dead_letter_each_and_the_detector_goes_on(stages, kafka_bootstrap, data_dir):
    t = stages["topics"]
    garbage = bytes(np.random.default_rng(1).integers(0, 256, 1_000_000, np.uint8))
    bomb = frame_msg(0, 30000, 30000, claim_size(jpeg(64, 64), 30000, 30000), "bomb")
    tiny = frame_msg(0, 20, 20, jpeg(20, 20), "tiny")
    import cv2

    img = cv2.imread(str(data_dir / "face_recognition_examples/examples/obama_small.jpg"))
    valid = frame_msg(0, img.shape[1], img.shape[0], cv2.imencode(".jpg", img)[1].tobytes(), "valid")
    send(kafka_bootstrap, t["frames"], b"det-poison", [garbage, bomb, tiny, valid])
    letters = dead_letters(kafka_bootstrap, t["frames"], 2, key="det-poison")
    assert [d["offset"] for d in letters] == [0, 1], letters
    assert letters[0]["reason"].startswith("schema: frames: not msgpack") and letters[0]["value_truncated"]
    assert letters[0]["value_bytes"] == 1_000_000 and letters[0]["stage"] == "detector"
    assert "30000x30000 is 900,000,000 pixels, over the limit" in letters[1]["reason"]
    out = {FrameFaces.decode(r.value).camera_id: FrameFaces.decode(r.value)
           for r in consume_all(kafka_bootstrap, t["faces"], expect=2, timeout_s=60)}
    assert out["tiny"].status == "ok" and out["tiny"].faces == (), "a 20x20 frame is a frame with no face"
    assert out["valid"].status == "ok" and len(out["valid"].faces) == 1, "the next valid frame is detected"
    svc = stages["svc"]["detector"]
    assert svc.proc.poll() is None and svc.get("/healthz")[0] == 200


def test_poison_faces_cost_one_dead_letter_each_and_the_embedder_goes_on(stages, kafka_bootstrap):
    t = stages["topics"]

    def with_crops(seq: int, crops: list[bytes]) -> bytes:
        # the default model's further towers (a fused pair) get their own valid crops: the first is under test
        obj = msgpack.unpackb(valid_faces(seq, n=len(crops), more=default_model_sizes()[1:]), raw=False)
        for face, crop in zip(obj["faces"], crops):
            face["crop"] = crop
        obj["camera_id"] = f"emb-{seq}"
        return msgpack.packb(obj)

    good = jpeg(150, 150)
    lone_bad = with_crops(0, [good, b"\xff\xd8\xff\xe0 not a crop"])
    empty = with_crops(1, [b""])
    bomb = with_crops(2, [claim_size(good, 16000, 16000)])
    valid = with_crops(3, [good, jpeg(150, 150, 1)])
    send(kafka_bootstrap, t["faces"], b"emb-poison", [lone_bad, empty, bomb, valid])
    letters = dead_letters(kafka_bootstrap, t["faces"], 3, key="emb-poison")  # the detector writes here too
    assert len(letters) == 3 and len({d["offset"] for d in letters}) == 3, letters
    assert all(d["stage"] == "embedder" and d["reason"].startswith("invalid: a face crop") for d in letters)
    assert "16000x16000 where 150x150 is required" in letters[2]["reason"]
    out = [FrameEmbeddings.decode(r.value) for r in consume_all(kafka_bootstrap, t["embeddings"], expect=1,
                                                                 timeout_s=60)]
    assert [(e.camera_id, len(e.faces)) for e in out if e.camera_id.startswith("emb-")] == [("emb-3", 2)]
    assert stages["svc"]["embedder"].proc.poll() is None


def test_a_64d_vector_costs_one_dead_letter_and_the_matcher_goes_on(stages, kafka_bootstrap):
    t, model = stages["topics"], stages["model"]

    def emb(seq: int, vec: np.ndarray) -> bytes:
        face = EmbeddedFace((10.0, 10.0, 60.0, 60.0), 0.99, vec)
        return FrameEmbeddings("match-cam", seq, time.time() + seq * 0.1, 640, 360, model["model_version"],
                               (face,)).encode()

    short = np.ones(64, np.float32) / 8
    send(kafka_bootstrap, t["embeddings"], b"match-cam", [emb(0, short)] + [emb(i, stages["person"]) for i in (1, 2, 3)])
    letters = dead_letters(kafka_bootstrap, t["embeddings"], 1, key="match-cam")  # the embedder writes here too
    assert len(letters) == 1 and "64-d embedding" in letters[0]["reason"]
    events = [IdentityEvent.decode(r.value) for r in consume_all(kafka_bootstrap, t["events"], expect=1, timeout_s=30)]
    events = [e for e in events if e.kind != "visit-ended"]
    assert [e.identity for e in events] == ["Pat_Tester"], "the valid vectors after the bad one name the person"
    assert stages["svc"]["matcher"].proc.poll() is None
