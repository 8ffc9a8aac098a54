"""Ingest's side of one camera: a thread that runs the camera's reader in a process of its own
(services/ingest/reader.py), publishes what it captures as frames of the camera's session, mirrors its state
into the metrics and its messages into the log, and starts it again if the process dies.

Session and seq: the session is a ULID (`session_id`) chosen when ingest starts the camera, and seq counts the
frames published under it from 0 without gaps (frames skipped by the fps cap or lost in a reconnect take
none), so that downstream can account for every frame it was sent and (camera, session, seq) names one frame
across ingest restarts. A camera process started again after a crash keeps the session and the count.
"""
from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from typing import Any, Callable

from services.ingest.cameras import Backoff, session_id
from services.ingest.config import CameraSpec
from services.ingest.reader import Captured, Ended, Log, Status, camera_process
from shared.redact import Redactor
from shared import metrics
from shared.schemas import Frame

log = logging.getLogger("facestream.ingest")


def new_session() -> str:
    return session_id(int(time.time() * 1000), secrets.randbits(80))


class Camera(threading.Thread):
    """Runs one camera until `stop` is set or its reader ends. `ctx` is a multiprocessing context (ingest uses
    forkserver: the parent holds the producer's threads, which a plain fork would copy mid-operation)."""

    def __init__(self, spec: CameraSpec, publish: Callable[[Frame], None], stop: threading.Event, *, ctx: Any,
                 backoff: Backoff, reader_kw: dict[str, Any], stop_grace_s: float = 2.0, quiet_opencv: bool = True,
                 rng: random.Random | None = None, target: Callable[..., None] = camera_process):
        super().__init__(name=f"camera-{spec.id}", daemon=True)
        self.spec, self.publish, self.stop, self.ctx = spec, publish, stop, ctx
        self.backoff, self.reader_kw, self.stop_grace_s = backoff, reader_kw, stop_grace_s
        self.quiet_opencv = quiet_opencv
        self.rng, self.target = rng or random.Random(), target
        self.redact = Redactor([spec.source])
        self.session = new_session()
        self.seq = 0                   # next sequence number: also the count of frames published this session
        self.error: str | None = None  # why the camera failed for good (a file that cannot be read)
        self.fatal: BaseException | None = None  # the process must stop (the broker refused a frame, a crash)
        self.last_progress = time.monotonic()  # for liveness: a camera stuck in a read stops updating it
        self.pid: int | None = None    # of the camera's current process

    def _set_state(self, state: str) -> None:
        for s in ("connecting", "streaming", "backoff", "ended"):
            metrics.CAMERA_STATE.labels(self.spec.id, s).set(1 if s == state else 0)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 (reported to the main thread, which stops the process)
            self.fatal = e
            log.error("camera %s: stopping ingest: %s", self.spec.id, self.redact(str(e)))
        finally:
            self._set_state("ended")

    def _run(self) -> None:
        cam, attempt, max_frames = self.spec, 0, self.reader_kw.get("max_frames", 0)
        while not self.stop.is_set():
            if max_frames and self.seq >= max_frames:  # the last process died right after its last frame
                return
            seq_before = self.seq
            end = self._run_process(max_frames - self.seq if max_frames else 0)
            if self.stop.is_set():
                return
            outcome = end.outcome if end is not None else "died"  # died: a crash inside FFmpeg, a kill
            if outcome == "eof":
                log.info("camera %s: end of file after %d frames published", cam.id, self.seq)
                return
            if outcome == "max_frames":
                log.info("camera %s: published %d frames (--max-frames)", cam.id, self.seq)
                return
            if outcome == "crashed":
                raise RuntimeError(f"camera process failed: {end.error}")
            if outcome == "error" or not cam.live:  # a file started again would replay from its start
                self.error = end.error if outcome == "error" else "the camera's process died"
                log.error("camera %s: %s", cam.id, self.redact(self.error or ""))
                return
            if self.seq > seq_before:
                attempt = 0
            delay = self.backoff.delay(attempt, self.rng.random())
            log.warning("camera %s: its process died, starting it again in %.1f s (attempt %d)", cam.id, delay,
                        attempt + 1)
            attempt += 1
            metrics.CAMERA_RECONNECTS.labels(cam.id).inc()
            self._set_state("backoff")
            end_at = time.monotonic() + delay
            while not self.stop.is_set() and (left := end_at - time.monotonic()) > 0:
                self.stop.wait(min(left, 1.0))
                self.last_progress = time.monotonic()

    def _run_process(self, max_frames: int) -> Ended | None:
        """Start the camera's process and handle its events until it ends; its `Ended`, or None when it died
        or had to be killed (it did not stop within `stop_grace_s` of `stop`, or a frame was refused)."""
        recv, send = self.ctx.Pipe(duplex=False)
        child_stop = self.ctx.Event()
        proc = self.ctx.Process(target=self.target, name=f"facestream-camera-{self.spec.id}", daemon=True,
                                args=(self.spec, send, child_stop, {**self.reader_kw, "max_frames": max_frames},
                                      self.quiet_opencv))
        proc.start()
        send.close()  # ours: the child's exit then reads as EOF here
        self.pid, last, kill_at, end = proc.pid, Status("connecting", 0, 0, 0), None, None
        try:
            while end is None:
                if kill_at is None and self.stop.is_set():
                    child_stop.set()
                    kill_at = time.monotonic() + self.stop_grace_s
                if kill_at is not None and time.monotonic() >= kill_at:
                    log.warning("camera %s: its process did not stop within %.1f s; killed", self.spec.id,
                                self.stop_grace_s)
                    return None
                if not recv.poll(0.2):
                    continue
                try:
                    event = recv.recv()
                except EOFError:
                    return None
                self.last_progress = time.monotonic()
                if isinstance(event, Captured):
                    self._publish(event)
                elif isinstance(event, Status):
                    self._count(last, event)
                    last = event
                elif isinstance(event, Log):
                    log.log(event.level, "camera %s: %s", self.spec.id, self.redact(event.text))
                elif isinstance(event, Ended):
                    end = event
            return end
        finally:
            child_stop.set()
            proc.join(1.0 if end is not None else 0.05)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
            recv.close()

    def _publish(self, c: Captured) -> None:
        self.publish(Frame(self.spec.id, self.seq, c.capture_ts, c.width, c.height, c.jpeg, self.session))
        self.seq += 1
        metrics.FRAME_BYTES.labels(self.spec.id).observe(len(c.jpeg))
        metrics.CAMERA_LAST_FRAME.labels(self.spec.id).set(c.capture_ts)

    def _count(self, last: Status, now: Status) -> None:
        """Metrics from the process's counters (which count from 0 in each process)."""
        cam = self.spec.id
        metrics.FRAMES_CAPTURED.labels(cam).inc(max(0, now.captured - last.captured))
        metrics.FRAMES_SKIPPED.labels(cam).inc(max(0, now.skipped - last.skipped))
        metrics.CAMERA_RECONNECTS.labels(cam).inc(max(0, now.reconnects - last.reconnects))
        self._set_state(now.state)
