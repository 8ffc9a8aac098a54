"""`facestream calibrate` against the real Redis: the stored calibration is what shared/calibration.py computes
from the gallery, refusals are one line, the LFW prior blends in, and the matcher applies a calibration of its
own model (at start and while it runs, without a restart) and passes over one of another model.

The people are synthetic unit vectors enrolled under a made-up model version, so no model runs; the running
matcher reads a made-up checkpoint (a sidecar, services/matcher needs no weights), so the repository's
recorded calibrations play no part.
"""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
import redis

from services.gallery import calibrate as calibrate_cmd
from services.local_pipeline import LocalPipeline
from services.matcher.gallery_store import GalleryStore
from services.matcher.threshold import LiveThreshold
from shared import calibration
from shared.kafka_admin import create_topics, delete_topics
from shared.vision import meta
from tests.integration.conftest import facestream

pytestmark = pytest.mark.integration
DIM = 16


@pytest.fixture
def gallery(redis_url):
    """(store, model version, the CLI's Redis flags) of a fresh prefix; its keys are deleted after."""
    run = uuid.uuid4().hex[:8]
    prefix = f"facestream:test-cal-{run}"
    store = GalleryStore.from_url(redis_url, prefix)
    yield store, f"test-cal-model-{run}", ["--redis-url", redis_url, "--prefix", prefix]
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)


def enroll(store: GalleryStore, model: str, people: int = 20, each: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for p in range(people):
        v = rng.normal(size=(each, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.add(f"Person_{p:02d}", {f"e{i}": v[i] for i in range(each)}, model, ["synthetic"])


def expected(store: GalleryStore, model: str, far: float = 1e-3, prior: dict | None = None):
    _, people, _ = store.load(model)
    return calibration.calibrate(calibration.gallery_impostors(people, far), far, prior)


def test_calibrate_stores_the_threshold_shared_calibration_computes_and_notifies(gallery):
    store, model, flags = gallery
    enroll(store, model)
    before = store.version()
    pubsub = store.subscribe()
    try:
        unresolved = facestream("calibrate", *flags)  # 3,040 pairs cannot resolve 1e-3 alone: shown, not written
        assert unresolved.returncode == 0 and "not written" in unresolved.stderr, unresolved.stderr
        assert store.r.get(store.calibration_key) is None and store.version() == before
        res = facestream("calibrate", *flags, "--json", "--force")
        assert res.returncode == 0, res.stderr
        deadline, note = time.monotonic() + 5, None
        while note is None and time.monotonic() < deadline:  # None also for the subscription's own reply
            note = pubsub.get_message(timeout=1)
    finally:
        pubsub.close()
    doc = json.loads(store.r.get(store.calibration_key))
    assert json.loads(res.stdout) == doc
    want = expected(store, model)
    assert doc["threshold"] == want.threshold and doc["threshold_interval"] == list(want.threshold_interval)
    assert doc["far_interval"] == list(want.far_interval)
    assert (doc["model_version"], doc["far"], doc["n_people"], doc["n_gallery_pairs"]) == (model, 1e-3, 20, 3040)
    assert (doc["prior_pairs"], doc["prior_weight"]) == (0, 0.0)
    assert "only 3,040 gallery impostor pairs and no prior" in doc["warning"]
    assert f"no LFW prior for {model}" in doc["source"] and doc["date"]
    assert doc["gallery_version"] == before, "the version of the embeddings it was measured on"
    assert store.version() == before + 1 and note["data"] == str(before + 1).encode(), "notified like a change"

    res = facestream("calibrate", *flags, "--far", "1e-2", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "dry run: nothing written" in res.stdout and "at FAR 0.01" in res.stdout
    assert json.loads(store.r.get(store.calibration_key))["far"] == 1e-3 and store.version() == before + 1


def test_an_empty_gallery_or_one_of_two_models_is_refused_in_one_line(gallery):
    store, model, flags = gallery
    res = facestream("calibrate", *flags)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "is empty" in res.stderr
    enroll(store, model, people=3)
    v = np.eye(DIM, dtype=np.float32)[0]
    store.add("Other_Model_Person", {"e0": v}, "another-model", ["synthetic"])
    res = facestream("calibrate", *flags)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "2 model versions" in res.stderr and f"{model} (3 people)" in res.stderr
    assert store.r.get(store.calibration_key) is None


def test_the_recorded_lfw_tail_is_blended_into_a_small_gallery(gallery, monkeypatch, capsys):
    store, model, flags = gallery
    enroll(store, model, people=6, each=3)  # 135 pairs
    rng = np.random.default_rng(9)
    tail = {"n_pairs": 50_000, "top_scores": np.sort(rng.normal(0.1, 0.2, 50_000))[::-1][:2000].tolist()}
    monkeypatch.setattr(meta, "recorded", lambda mv, flip: {"impostor_tail": tail} if mv == model and flip else None)
    assert calibrate_cmd.main([*flags, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = expected(store, model, prior=tail)
    assert doc["threshold"] == want.threshold and doc["prior_pairs"] == 50_000
    assert doc["prior_weight"] == pytest.approx(1 - 135 / 10_000) and doc["warning"] is None
    assert calibrate_cmd.main([*flags, "--no-prior", "--dry-run"]) == 0
    assert "prior off (--no-prior)" in capsys.readouterr().out


def test_the_threshold_loader_takes_a_calibration_of_its_model_and_passes_over_another(gallery):
    store, model, _ = gallery
    live = LiveThreshold(None, {"cosine": 0.5, "source": "test checkpoint"}, model)
    live.refresh(store)
    assert (live.value, live.source) == (0.5, "the checkpoint (test checkpoint)")
    store.write_calibration({"model_version": "another-model", "threshold": 0.2})
    live.refresh(store)
    assert live.value == 0.5 and "of model 'another-model', ignored" in live.source
    store.write_calibration({"model_version": model, "threshold": 0.3, "far": 1e-3})
    live.refresh(store)
    assert live.value == 0.3 and live.source.startswith("the gallery's calibration")


def fake_checkpoint(tmp_path, model: str):
    """A checkpoint the matcher can start from: its sidecar (newer than the file) says all it reads."""
    pt = tmp_path / "fake.pt"
    pt.write_bytes(b"not weights: the matcher reads only the sidecar")
    time.sleep(0.01)
    (tmp_path / "fake.json").write_text(json.dumps({
        "model_version": model, "embedding_dim": DIM, "flip_average": True,
        "threshold": {"cosine": 0.5, "far": 1e-3, "source": "a test checkpoint"}}))
    return pt


def wait_for(check, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_a_running_matcher_applies_a_new_calibration_of_its_model_without_a_restart(gallery, kafka_bootstrap,
                                                                                     tmp_path):
    store, model, flags = gallery
    enroll(store, model)
    store.write_calibration({"model_version": "another-model", "threshold": 0.1, "far": 1e-3})
    run = uuid.uuid4().hex[:8]
    embs, events = f"cal-emb-{run}", f"cal-events-{run}"
    create_topics(kafka_bootstrap, {embs: 1, events: 1})
    ckpt = fake_checkpoint(tmp_path, model)
    pipe = LocalPipeline(tmp_path / "logs", env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                 "FACESTREAM_REDIS_URL": flags[1]})
    try:
        m = pipe.start("matcher", "--model", str(ckpt), "--embeddings-topic", embs, "--events-topic", events,
                       "--group-id", f"cal-{run}", "--gallery-prefix", store.p, "--metrics-host", "127.0.0.1")
        assert m.metric("facestream_match_threshold") == 0.5, "another model's calibration is passed over"
        assert "cosine threshold 0.5000 from the checkpoint (a test checkpoint); the gallery's calibration is of " \
               "model 'another-model', ignored" in m.log_text()
        res = facestream("calibrate", *flags, "--model", str(ckpt), "--force")
        assert res.returncode == 0, res.stderr
        want = json.loads(store.r.get(store.calibration_key))["threshold"]
        assert wait_for(lambda: m.metric("facestream_match_threshold") == pytest.approx(want)), m.log_tail()
        assert f"cosine threshold {want:.4f} from the gallery's calibration" in m.log_text()
        restarted = pipe.start("matcher", "--model", str(ckpt), "--embeddings-topic", embs, "--events-topic", events,
                               "--group-id", f"cal2-{run}", "--gallery-prefix", store.p, "--metrics-host", "127.0.0.1")
        assert restarted.metric("facestream_match_threshold") == pytest.approx(want), "and at start"
        assert pipe.stop() == {m.name: 0, restarted.name: 0}
    finally:
        pipe.stop()
        delete_topics(kafka_bootstrap, [embs, events])
