"""Fixtures for the integration tests that run the real pipeline (services as processes)."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
import redis

from services.local_pipeline import LocalPipeline, Service, clip_frames
from shared.kafka_admin import create_topics, delete_topics
from shared.schemas import IdentityEvent
from tests.conftest import ROOT, consume_all
from tests.rtsp import rtsp_cameras, rtsp_server  # noqa: F401 (rtsp_cameras: a fixture for every module)

FPS, WIDTH = 8, 960  # what one single-threaded detector holds on a 2-core machine


@dataclass
class Pipeline:
    pipe: LocalPipeline
    bootstrap: str
    frames: str
    events: str
    prefix: str


@pytest.fixture
def pipe(kafka_bootstrap, tmp_path):
    """The one process launcher (services.local_pipeline) for one test; what it started is stopped after."""
    p = LocalPipeline(tmp_path / "logs", env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap})
    yield p
    p.stop()


def start_ingest(pipe: LocalPipeline, topic: str, *args: str, label: str | None = None) -> Service:
    """`facestream ingest` publishing to `topic`, not waited for (a file camera may end before /readyz)."""
    return pipe.start("ingest", "--frames-topic", topic, "--metrics-host", "127.0.0.1", *args, wait_ready=False,
                      label=label)


def facestream(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="session")
def pipeline(kafka_bootstrap, redis_url, data_dir, tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    frames, faces, embs, events = (f"e2e-{t}-{run}" for t in ("frames", "faces", "embeddings", "events"))
    create_topics(kafka_bootstrap, {t: 4 for t in (frames, faces, embs, events)})
    prefix = f"facestream:test-{run}"
    enrolled = facestream("gallery", "--redis-url", redis_url, "--prefix", prefix, "enroll-all",
                          str(data_dir / "videos/enroll"), "--pick", "largest")
    assert enrolled.returncode == 0, enrolled.stderr
    pipe = LocalPipeline(tmp_path_factory.mktemp("pipeline-logs"), env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                                   "FACESTREAM_REDIS_URL": redis_url})
    try:
        pipe.start("detector", "--frames-topic", frames, "--faces-topic", faces, "--group-id", f"det-{run}",
                   wait_ready=False)
        pipe.start("embedder", "--faces-topic", faces, "--embeddings-topic", embs, "--group-id", f"emb-{run}",
                   "--threads", "1", wait_ready=False)
        pipe.start("matcher", "--embeddings-topic", embs, "--events-topic", events, "--group-id", f"match-{run}",
                   "--gallery-prefix", prefix, wait_ready=False)
        for svc in pipe.services:
            pipe.wait_ready(svc)
        yield Pipeline(pipe, kafka_bootstrap, frames, events, prefix)
        assert pipe.stop() == {s.name: 0 for s in pipe.services}, "every service stops cleanly on SIGTERM"
    finally:
        pipe.stop()
        delete_topics(kafka_bootstrap, [frames, faces, embs, events])
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


def play(p: Pipeline, clip_path, camera: str, fps: float = FPS) -> list[IdentityEvent]:
    """Serve one clip over RTSP as camera `camera`, run ingest over one play of it (capped at `fps`; 0: the
    clip's own frame rate, every frame), return its events."""
    with rtsp_server({camera: clip_path}) as urls:
        ingest = p.pipe.start("ingest", "--camera", f"{camera}={urls[camera]}", "--frames-topic", p.frames,
                              "--fps", str(fps), "--max-width", str(WIDTH),
                              "--max-frames", str(clip_frames(clip_path, fps or float("inf"))), wait_ready=False,
                              label=camera)
        assert ingest.proc.wait(timeout=300) == 0, ingest.log_tail()
    assert p.pipe.wait_drained(), "the pipeline did not drain"
    time.sleep(4)  # the camera's last tracks end (max gap + 1 s) and get their final decision
    events = [IdentityEvent.decode(r.value) for r in consume_all(p.bootstrap, p.events, timeout_s=6)]
    return [e for e in events if e.camera_id == camera and e.kind != "visit-ended"]
