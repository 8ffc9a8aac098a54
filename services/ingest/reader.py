"""One thread per camera: open, read, pace, cap, encode, hand each frame to `publish`; reconnect on a drop.

A live camera (RTSP, HTTP, device) that fails to open or stops sending is retried with `Backoff` on its own
thread, so that one dead camera never delays the others. A file camera ends at the end of its file, or
fails once if it cannot be read at all. Sequence numbers count the frames handed to `publish`, from 0
without gaps for the life of the process: frames skipped by the fps cap or lost in a reconnect take none,
so downstream can account for every frame it was sent.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import Callable

import cv2

from services.ingest.cameras import Backoff, FpsGate, Pacer, encode_to_fit
from services.ingest.config import CameraSpec
from shared import metrics
from shared.schemas import Frame

log = logging.getLogger("facestream.ingest")
STATES = ("connecting", "streaming", "backoff", "ended")


def open_capture(spec: CameraSpec, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """A VideoCapture on the camera's source. The timeouts make FFmpeg give up instead of hanging the thread
    on a camera that accepts the connection and never answers."""
    if spec.kind == "device":
        return cv2.VideoCapture(int(spec.source))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
    return cv2.VideoCapture(spec.source, cv2.CAP_FFMPEG, params)


class CameraReader(threading.Thread):
    """Reads one camera until `stop` is set, the file ends, or `max_frames` frames were published."""

    def __init__(self, spec: CameraSpec, publish: Callable[[Frame], None], stop: threading.Event, *,
                 backoff: Backoff, max_frame_bytes: int, max_frames: int = 0, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, rng: random.Random | None = None):
        super().__init__(name=f"camera-{spec.id}", daemon=True)
        self.spec, self.publish, self.stop = spec, publish, stop
        self.backoff, self.max_frame_bytes, self.max_frames = backoff, max_frame_bytes, max_frames
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.rng = rng or random.Random()
        self.seq = 0                   # next sequence number: also the count of frames published
        self.state = "connecting"
        self.error: str | None = None  # why the camera failed for good (a file that cannot be read)
        self.fatal: BaseException | None = None  # publish raised: the process must stop
        self.last_progress = time.monotonic()  # for liveness: a thread stuck in a read stops updating it

    # -- states -------------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        self.last_progress = time.monotonic()
        for s in STATES:
            metrics.CAMERA_STATE.labels(self.spec.id, s).set(1 if s == state else 0)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 (reported to the main thread, which stops the process)
            self.fatal = e
            log.exception("camera %s: stopping the process: %s", self.spec.id, e)
        finally:
            self._set_state("ended")

    def _run(self) -> None:
        cam, attempt = self.spec, 0
        while not self.stop.is_set():
            self._set_state("connecting")
            cap = open_capture(cam, self.open_timeout_s, self.read_timeout_s)
            try:
                outcome, frames_read = self._stream(cap) if cap.isOpened() else ("unopened", 0)
            finally:
                cap.release()
            if outcome in ("stopped", "max_frames"):
                return
            if not cam.live:
                if frames_read == 0:
                    self.error = f"cannot read video file {cam.source}"
                    log.error("camera %s: %s", cam.id, self.error)
                else:
                    log.info("camera %s: end of file after %d frames published", cam.id, self.seq)
                return
            if frames_read:
                attempt = 0  # the camera worked for a while: the next drop starts the backoff afresh
            delay = self.backoff.delay(attempt, self.rng.random())
            log.warning("camera %s: %s, reconnecting in %.1f s (attempt %d)", cam.id,
                        "cannot open the stream" if outcome == "unopened" else "stream dropped", delay, attempt + 1)
            self._set_state("backoff")
            attempt += 1
            metrics.CAMERA_RECONNECTS.labels(cam.id).inc()
            self._wait(delay)

    def _wait(self, seconds: float) -> None:
        """Sleep, waking for `stop` and keeping liveness fresh (a camera in backoff is working as intended)."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            self.stop.wait(min(left, 1.0))
            self.last_progress = time.monotonic()

    # -- one session --------------------------------------------------------------------------------
    def _stream(self, cap: cv2.VideoCapture) -> tuple[str, int]:
        """Read until the stream ends ("eof"), `stop` ("stopped") or the frame budget ("max_frames");
        return that outcome and the number of frames read."""
        cam = self.spec
        pacer = Pacer() if not cam.live and cam.realtime else None
        gate = FpsGate(cam.fps)
        file_fps = cap.get(cv2.CAP_PROP_FPS) if not cam.live else 0.0
        frames_read = 0
        while not self.stop.is_set():
            ok, bgr = cap.read()
            capture_ts = time.time()
            self.last_progress = time.monotonic()
            if not ok or bgr is None:
                return "eof", frames_read
            if frames_read == 0:
                self._set_state("streaming")
                log.info("camera %s: streaming %dx%d from %s", cam.id, bgr.shape[1], bgr.shape[0], cam.kind)
            frames_read += 1
            metrics.FRAMES_CAPTURED.labels(cam.id).inc()
            if cam.live:
                frame_time = time.monotonic()
            else:
                frame_time = _media_time(cap, frames_read - 1, file_fps)
            if pacer is not None:
                self._wait(pacer.delay(frame_time, time.monotonic()))
                capture_ts = time.time()  # a paced file frame is "captured" when the camera would deliver it
            if not gate.admit(frame_time):
                metrics.FRAMES_SKIPPED.labels(cam.id).inc()
                continue
            enc = encode_to_fit(bgr, cam.jpeg_quality, cam.max_width, self.max_frame_bytes)
            self.publish(Frame(cam.id, self.seq, capture_ts, enc.width, enc.height, enc.jpeg))
            self.seq += 1
            metrics.FRAME_BYTES.labels(cam.id).observe(len(enc.jpeg))
            metrics.CAMERA_LAST_FRAME.labels(cam.id).set(capture_ts)
            if self.max_frames and self.seq >= self.max_frames:
                log.info("camera %s: published %d frames (--max-frames)", cam.id, self.seq)
                return "max_frames", frames_read
        return "stopped", frames_read


def _media_time(cap: cv2.VideoCapture, index: int, fps: float) -> float:
    """Presentation time of the frame just read, seconds; from the frame index where the container has none."""
    pos = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(pos) and pos >= 0 and (pos > 0 or index == 0):
        return pos / 1000.0
    return index / fps if fps and math.isfinite(fps) and fps > 0 else index / 30.0
