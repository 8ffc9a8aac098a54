"""One camera's loop, run in a process of its own: open, read, pace, cap, encode; reconnect on a drop.

A process, not a thread, because OpenCV's FFmpeg backend opens captures under one lock for the whole process:
a camera that accepts the connection and never answers held every other camera's open, and so its first
frame and every reconnect, for the full open timeout (measured: a file's open waited 4 s behind a silent
RTSP camera's 4-s timeout). In its own process each camera opens, reads and backs off on its own clock.

`CameraReader` reports through `emit` alone, in events that cross the process boundary (`Captured`, `Status`,
`Log`, `Ended`); the ingest process (services/ingest/camera.py) turns them into frames, metrics and log lines.
A live camera (RTSP, HTTP, device) that fails to open or stops sending is retried with `Backoff`; a file
camera ends at the end of its file, or fails once if it cannot be read at all. `camera_process` is the
process's entry point.
"""
from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import cv2

from services.ingest.cameras import Backoff, FpsGate, Pacer, encode_to_fit
from services.ingest.config import CameraSpec
from shared.redact import Redactor, redact_output

STATES = ("connecting", "streaming", "backoff", "ended")
STATUS_EVERY_S = 0.5  # the camera's counters reach the metrics, and its liveness the health check, this often


@dataclass(frozen=True, slots=True)
class Captured:
    """A frame to publish, in capture order."""
    capture_ts: float
    width: int
    height: int
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """The camera's state and its counters since the process started; sent on each change and as a heartbeat."""
    state: str
    captured: int  # frames read
    skipped: int  # frames read and dropped by the fps cap
    reconnects: int  # reconnect attempts


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The last event: "eof" (a file played to its end), "max_frames", "stopped", "error" (the camera cannot be
    read: an unreadable file) or "crashed" (an exception: a bug, or a frame limit no frame fits); `error` says why."""
    outcome: str
    error: str | None = None


Event = Captured | Status | Log | Ended


def open_capture(spec: CameraSpec, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """A VideoCapture on the camera's source. The timeouts make FFmpeg give up instead of hanging the process
    on a camera that accepts the connection and never answers."""
    if spec.kind == "device":
        return cv2.VideoCapture(int(spec.source))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
    return cv2.VideoCapture(spec.source, cv2.CAP_FFMPEG, params)


class CameraReader:
    """Reads one camera until `stop` is set, the file ends, or `max_frames` frames were captured for publishing."""

    def __init__(self, spec: CameraSpec, emit: Callable[[Event], None], stop: threading.Event, *,
                 backoff: Backoff, max_frame_bytes: int, max_frames: int = 0, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, rng: random.Random | None = None):
        self.spec, self.emit, self.stop = spec, emit, stop
        self.backoff, self.max_frame_bytes, self.max_frames = backoff, max_frame_bytes, max_frames
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.rng = rng or random.Random()
        self.state, self.sent, self.captured, self.skipped, self.reconnects = "connecting", 0, 0, 0, 0
        self._status_at = 0.0

    def _status(self, state: str | None = None) -> None:
        self.state = state or self.state
        self._status_at = time.monotonic()
        self.emit(Status(self.state, self.captured, self.skipped, self.reconnects))

    def _log(self, level: int, text: str) -> None:
        self.emit(Log(level, text))

    def run(self) -> Ended:
        """Read until done; emit and return the `Ended` event."""
        end = self._run()
        self._status("ended")
        self.emit(end)
        return end

    def _run(self) -> Ended:
        cam, attempt = self.spec, 0
        while not self.stop.is_set():
            self._status("connecting")
            cap = open_capture(cam, self.open_timeout_s, self.read_timeout_s)
            try:
                outcome, frames_read = self._stream(cap) if cap.isOpened() else ("unopened", 0)
            finally:
                cap.release()
            if outcome in ("stopped", "max_frames"):
                return Ended(outcome)
            if not cam.live:
                return Ended("eof") if frames_read else Ended("error", f"cannot read video file {cam.source}")
            if frames_read:
                attempt = 0  # the camera worked for a while: the next drop starts the backoff afresh
            delay = self.backoff.delay(attempt, self.rng.random())
            self._log(logging.WARNING, f"{'cannot open the stream' if outcome == 'unopened' else 'stream dropped'}, "
                                       f"reconnecting in {delay:.1f} s (attempt {attempt + 1})")
            attempt += 1
            self.reconnects += 1
            self._status("backoff")
            self._wait(delay)
        return Ended("stopped")

    def _wait(self, seconds: float) -> None:
        """Sleep, waking for `stop`, with a heartbeat every second (a camera in backoff works as intended)."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            self.stop.wait(min(left, 1.0))
            self._status()

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
            if not ok or bgr is None:
                return "eof", frames_read
            frames_read += 1
            self.captured += 1
            if frames_read == 1:
                self._status("streaming")
                self._log(logging.INFO, f"streaming {bgr.shape[1]}x{bgr.shape[0]} from {cam.kind}")
            elif time.monotonic() - self._status_at > STATUS_EVERY_S:
                self._status()
            frame_time = time.monotonic() if cam.live else _media_time(cap, frames_read - 1, file_fps)
            if pacer is not None:
                self._wait(pacer.delay(frame_time, time.monotonic()))
                capture_ts = time.time()  # a paced file frame is "captured" when the camera would deliver it
            if not gate.admit(frame_time):
                self.skipped += 1
                continue
            enc = encode_to_fit(bgr, cam.jpeg_quality, cam.max_width, self.max_frame_bytes)
            self.emit(Captured(capture_ts, enc.width, enc.height, enc.jpeg))
            self.sent += 1
            if self.max_frames and self.sent >= self.max_frames:
                return "max_frames", frames_read
        return "stopped", frames_read


def _media_time(cap: cv2.VideoCapture, index: int, fps: float) -> float:
    """Presentation time of the frame just read, seconds; from the frame index where the container has none."""
    pos = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(pos) and pos >= 0 and (pos > 0 or index == 0):
        return pos / 1000.0
    return index / fps if fps and math.isfinite(fps) and fps > 0 else index / 30.0


def camera_process(spec: CameraSpec, conn, stop, reader_kw: dict, quiet_opencv: bool) -> None:
    """The camera process: run a `CameraReader` that sends its events over `conn` until `stop` (an event
    shared with ingest) is set. Only ingest stops it (`stop`, or SIGKILL after its grace): SIGINT and SIGTERM,
    which a terminal or a service manager may send to the whole group, are ingest's to handle. When ingest is
    gone the next send fails and the process ends (within a second, or when a blocking open returns)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    restore_output = redact_output(Redactor([spec.source]))  # what OpenCV and FFmpeg print may echo the URL
    if quiet_opencv:  # our log says why a camera failed; OpenCV's warnings repeat it every retry
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    reader = CameraReader(spec, conn.send, stop, rng=random.Random(), **reader_kw)
    try:
        reader.run()
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # ingest is gone: nobody to tell
    except BaseException as e:  # noqa: BLE001 (a bug or an impossible frame limit: ingest stops the process)
        try:
            conn.send(Ended("crashed", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        conn.close()
        restore_output()
