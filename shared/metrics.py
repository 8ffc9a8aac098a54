"""Every Prometheus metric facestream exports, declared once, and the per-process HTTP endpoint.

The endpoint serves /metrics (Prometheus text), /healthz (liveness: 200 while the processing loop has
turned within `liveness_timeout_s`, so Kubernetes restarts a wedged worker) and /readyz (readiness: 200
once the process has connected to its broker and holds its assignment or is otherwise serving).
The Grafana dashboard and the alert rules in deploy/ use these names, and a test checks that every name
they use is exported by a running service.
"""
from __future__ import annotations

import threading
import time
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
_E2E_BUCKETS = (.05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 20, 60)

# --- every stage (label `stage`: ingest, detector, embedder, matcher) --------------------------------
MESSAGES_IN = Counter("facestream_messages_in_total", "Messages consumed", ["stage", "topic"])
MESSAGES_OUT = Counter("facestream_messages_out_total", "Messages produced and acknowledged", ["stage", "topic"])
PROCESS_SECONDS = Histogram("facestream_process_seconds", "Time in the stage's own work per batch", ["stage"],
                            buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("facestream_batch_size", "Inputs per processed batch", ["stage"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
STALE_DROPPED = Counter("facestream_stale_dropped_total", "Inputs dropped as older than the stage's max age",
                        ["stage"])
FRAMES_SHED = Counter("facestream_frames_shed_total",
                      "Frames skipped unread because a newer frame of the same camera was processed instead",
                      ["stage", "camera_id"])
FRAMES_UNCHANGED = Counter("facestream_frames_unchanged_total",
                           "Frames not detected because they hardly differ from the camera's last detected frame "
                           "(motion gating)", ["stage", "camera_id"])
DEAD_LETTERED = Counter("facestream_dead_lettered_total", "Messages sent to the dead-letter topic", ["stage", "reason"])
BATCH_ISOLATIONS = Counter("facestream_batch_isolations_total",
                           "Batches run input by input after an exception the stage did not attribute (a bug)",
                           ["stage"])
COMMITS = Counter("facestream_commits_total", "Offset commits after acknowledged output", ["stage"])
CONSUMER_LAG = Gauge("facestream_consumer_lag", "Messages behind the end of each assigned partition",
                     ["stage", "topic", "partition"])
ASSIGNED_PARTITIONS = Gauge("facestream_assigned_partitions", "Partitions this process holds", ["stage"])
CONSUMER_REJOINS = Counter("facestream_consumer_rejoins_total",
                           "Group rejoins forced by the membership watchdog (shared/membership.py)", ["stage"])
LOOP_HEARTBEAT = Gauge("facestream_loop_heartbeat_timestamp_seconds", "When the processing loop last turned",
                       ["stage"])
UP = Gauge("facestream_up", "1 while the process is serving", ["stage"])

# --- ingest ---------------------------------------------------------------------------------------
FRAMES_CAPTURED = Counter("facestream_frames_captured_total", "Frames read from a camera", ["camera_id"])
FRAMES_SKIPPED = Counter("facestream_frames_skipped_total", "Frames read but not sent (fps cap)", ["camera_id"])
FRAME_BYTES = Histogram("facestream_frame_bytes", "JPEG size of published frames", ["camera_id"],
                        buckets=(2e4, 5e4, 1e5, 2e5, 4e5, 6e5, 8e5, 1e6))
CAMERA_STATE = Gauge("facestream_camera_state", "1 for the camera's current state", ["camera_id", "state"])
CAMERA_RECONNECTS = Counter("facestream_camera_reconnects_total", "Reconnect attempts", ["camera_id"])
CAMERA_LAST_FRAME = Gauge("facestream_camera_last_frame_timestamp_seconds", "Capture time of the last frame",
                          ["camera_id"])

# --- detector / embedder --------------------------------------------------------------------------
FACES_PER_FRAME = Histogram("facestream_faces_per_frame", "Faces kept per frame", ["stage"],
                            buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50))
FACES_REJECTED = Counter("facestream_faces_rejected_total", "Faces dropped by a quality gate", ["gate"])
FACES_EMBEDDED = Counter("facestream_faces_embedded_total", "Faces through the embedding model", ["model_version"])
MODEL_BATCH_SECONDS = Histogram("facestream_model_batch_seconds", "Embedding model time per batch of faces",
                                ["device"], buckets=_LATENCY_BUCKETS)

# --- matcher --------------------------------------------------------------------------------------
END_TO_END_SECONDS = Histogram("facestream_end_to_end_latency_seconds",
                               "Capture time of a face to the matcher's decision on it", ["camera_id"],
                               buckets=_E2E_BUCKETS)
EVENT_LATENCY_SECONDS = Histogram("facestream_event_latency_seconds",
                                  "Capture time of a track's deciding face to its identity event",
                                  buckets=_E2E_BUCKETS)
IDENTITY_EVENTS = Counter("facestream_identity_events_total", "Identity events published",
                          ["camera_id", "known"])
ACTIVE_TRACKS = Gauge("facestream_active_tracks", "Tracks held in memory")
MATCH_THRESHOLD = Gauge("facestream_match_threshold",
                        "Cosine threshold the matcher applies: --threshold, the gallery's calibration "
                        "(facestream calibrate) or the checkpoint's")
GALLERY_IDENTITIES = Gauge("facestream_gallery_identities", "People in the loaded gallery")
GALLERY_EMBEDDINGS = Gauge("facestream_gallery_embeddings", "Embeddings in the loaded gallery")
GALLERY_RELOADS = Counter("facestream_gallery_reloads_total", "Gallery index rebuilds from Redis")
GALLERY_SYNCED = Gauge("facestream_gallery_synced_timestamp_seconds",
                       "When the matcher last found its in-memory gallery in step with Redis")
DEPENDENCY_UP = Gauge("facestream_dependency_up",
                      "1 while the process reaches the dependency, 0 while it serves without it and retries",
                      ["dependency"])
VISIT_WRITES_PENDING = Gauge("facestream_visit_writes_pending",
                             "Visits decided and committed to Kafka whose state is not yet written to Redis")


class Health:
    """Liveness and readiness of one process, read by the HTTP endpoint."""

    def __init__(self, stage: str, liveness_timeout_s: float = 60.0):
        self.stage = stage
        self.liveness_timeout_s = liveness_timeout_s
        self._beat = time.monotonic()
        self.ready = False
        # name -> callable giving why that part is degraded, or None: the process still serves, /readyz says so
        self.degraded: dict[str, Callable[[], str | None]] = {}

    def degradations(self) -> list[str]:
        return [why for check in self.degraded.values() if (why := check())]

    def beat(self) -> None:
        self._beat = time.monotonic()
        LOOP_HEARTBEAT.labels(self.stage).set(time.time())

    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.liveness_timeout_s


def serve(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the endpoint on a daemon thread; port 0 takes a free port (read it from `.server_port`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, code, ctype = generate_latest(REGISTRY), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                ok = health.alive()
                body, code, ctype = (b"ok\n" if ok else b"loop stalled\n"), (200 if ok else 503), "text/plain"
            elif path == "/readyz":
                ok = health.ready and health.alive()
                worse = health.degradations() if ok else []
                text = ("ready, degraded: " + "; ".join(worse) if worse else "ready") if ok else "not ready"
                body, code, ctype = (text + "\n").encode(), (200 if ok else 503), "text/plain"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every few seconds would flood the log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    UP.labels(health.stage).set(1)
    return server
