"""`facestream ingest`: one process, many cameras, one Kafka producer.

    facestream ingest --camera door=rtsp://10.0.0.7/main --camera lobby=lobby.mp4 --fps 10
    facestream ingest --cameras-file cameras.yaml --frames-topic frames

Each camera is read in a process of its own (services/ingest/reader.py says why), so that a camera that
never answers delays no other camera's open or reconnect; this process holds the one producer and a thread
per camera (services/ingest/camera.py). Every frame goes to `--frames-topic` as a `Frame` (schema frames/v2:
camera id, session, seq) keyed by its camera id, so that one camera's frames stay in order in one partition,
with acks from every in-sync replica. The process runs until SIGTERM or SIGINT, or until every camera has
ended (file cameras at their end, any camera after `--max-frames`); then it flushes what is in flight and
exits 0. On SIGTERM a camera's process gets `--stop-grace-s` (2 s) to finish the read or open it is in, then
is killed, so a camera stuck in a blocking open delays the exit by at most that. It exits 1 when the broker
refuses a frame (a transient fault that the orchestrator answers with a restart) or a video file cannot be
read. No log line carries a camera's password (services/ingest/redact.py).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from multiprocessing import forkserver

from services.ingest.camera import Camera
from services.ingest.cameras import Backoff
from services.ingest.config import IngestConfig, load_cameras
from shared.redact import Redactor, mask_url, redact_logging
from shared import kafka_loop, metrics
from shared.config import describe, load
from shared.kafka_clients import KafkaAccess
from shared.schemas import Frame
from shared.service import client_id, setup_logging, start_metrics

log = logging.getLogger("facestream.ingest")
STAGE = "ingest"


class Publisher:
    """Sends frames without waiting for each acknowledgement; remembers the first refusal."""

    def __init__(self, producer, topic: str, failed: threading.Event):
        self.producer, self.topic, self.failed = producer, topic, failed
        self.error: BaseException | None = None

    def __call__(self, frame: Frame) -> None:
        if self.failed.is_set():
            raise RuntimeError(f"not publishing: the broker refused an earlier frame ({self.error})")
        fut = self.producer.send(self.topic, key=frame.camera_id.encode(), value=frame.encode())
        fut.add_callback(lambda _md: metrics.MESSAGES_OUT.labels(STAGE, self.topic).inc())
        fut.add_errback(self._refused, frame)

    def _refused(self, frame: Frame, exc: BaseException) -> None:
        # After retries ran out: later frames would leave a gap in the sequence, so stop the whole process.
        if not self.failed.is_set():
            self.error = exc
            log.error("ingest: broker refused frame %s/%s/%d: %s", frame.camera_id, frame.session, frame.seq, exc)
        self.failed.set()


def main(argv: list[str] | None = None) -> int:
    """Run ingest until stopped; return the process exit status."""
    cfg: IngestConfig = load(IngestConfig, argv, prog="facestream ingest")
    setup_logging(cfg.log_level)
    cameras = load_cameras(cfg)  # a bad camera stops us here, before anything connects
    # every line this process logs, its libraries' too
    redact_logging(Redactor([*(c.source for c in cameras), cfg.kafka_bootstrap],
                            secrets=[cfg.kafka_password, cfg.redis_password]))
    # Read by OpenCV's FFmpeg at every open, in every camera's process; an operator's own setting wins.
    # fpsprobesize 0: FFmpeg otherwise decodes ~20 frames at open to guess a frame rate that the stream
    # description already gives, then hands them over in a burst with one capture time (0.8 s of video
    # at 30 fps, 1.9 s at 15 fps, measured against scripts/rtsp_server.py).
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{cfg.rtsp_transport}|fpsprobesize;0")
    # FFmpeg logs each failed connect and each packet of a broken stream: thousands of lines that our one
    # line per reconnect already sums up. AV_LOG_FATAL (8) unless debugging, AV_LOG_WARNING (24) then.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "24" if cfg.log_level == "DEBUG" else "8")
    # forkserver, not fork: this process runs the producer's and the metrics' threads, which a fork would copy
    # mid-operation. Started now, it imports OpenCV while the producer connects; each camera then forks from it.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["services.ingest.reader"])
    forkserver.ensure_running()
    log.info("ingest: starting with %s", mask_url(describe(cfg)))
    health = start_metrics(STAGE, cfg)

    stop, failed = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # max_request_size above the frame limit: the msgpack envelope adds about a hundred bytes. batch_size as
    # large: kafka-python's 16 kB default closes a batch per frame, one round trip each (4.6x slower at
    # 640x360, bench/results/kafka.json).
    try:
        producer = kafka_loop.make_producer(KafkaAccess.of(cfg), client_id(STAGE),
                                            max_request_size=cfg.max_frame_bytes + 65_536,
                                            batch_size=cfg.max_frame_bytes + 65_536)
    except Exception as e:  # kafka-python raises several types; all mean "no broker to publish to"
        log.error("ingest: cannot reach Kafka at %s: %s: %s", cfg.kafka_bootstrap, type(e).__name__, e)
        return 1
    health.ready = True
    publish = Publisher(producer, cfg.frames_topic, failed)
    backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, cfg.backoff_jitter)
    reader_kw = {"backoff": backoff, "max_frame_bytes": cfg.max_frame_bytes, "max_frames": cfg.max_frames,
                 "open_timeout_s": cfg.open_timeout_s, "read_timeout_s": cfg.read_timeout_s}
    rng = random.Random()
    readers = [Camera(cam, publish, stop, ctx=ctx, backoff=backoff, reader_kw=reader_kw,
                      stop_grace_s=cfg.stop_grace_s, quiet_opencv=cfg.log_level != "DEBUG",
                      rng=random.Random(rng.random())) for cam in cameras]
    for r in readers:
        log.info("ingest: camera %s: session %s, %s %s (fps cap %s, quality %d, max width %s)", r.spec.id,
                 r.session, r.spec.kind, mask_url(r.spec.source), r.spec.fps or "none", r.spec.jpeg_quality,
                 r.spec.max_width or "none")
    try:
        for r in readers:
            r.start()
        while not stop.is_set() and not failed.is_set() and any(r.is_alive() for r in readers):
            if any(r.fatal for r in readers):
                break
            # liveness: every running camera has moved lately (a frame, a reconnect, or a backoff tick)
            now = time.monotonic()
            if all(now - r.last_progress < cfg.liveness_timeout_s for r in readers if r.is_alive()):
                health.beat()
            stop.wait(0.5)
    finally:
        stop.set()
        for r in readers:  # each kills its camera's process stop_grace_s after `stop` at the latest
            r.join(cfg.stop_grace_s + 5)
        for p in multiprocessing.active_children():  # none unless a camera thread is stuck: never wait on one
            p.kill()
        # Reap the forkserver (it reaped the camera processes), so that none outlives ingest and their CPU
        # time counts as ours (RUSAGE_CHILDREN). `_stop` is private to multiprocessing, hence the guard.
        getattr(forkserver._forkserver, "_stop", lambda: None)()
        producer.flush(timeout=30)
        producer.close(timeout=10)
        metrics.UP.labels(STAGE).set(0)
    published = {r.spec.id: r.seq for r in readers}
    log.info("ingest: stopped; frames published per camera: %s", published)
    log.info("ingest: sessions per camera: %s", {r.spec.id: r.session for r in readers})
    errors = [f"camera {r.spec.id}: {r.error}" for r in readers if r.error]
    errors += [f"camera {r.spec.id}: {r.fatal}" for r in readers if r.fatal]
    if failed.is_set():
        errors.append(f"broker refused a frame: {publish.error}")
    for e in errors:
        log.error("ingest: %s", e)
    return 1 if errors else 0
