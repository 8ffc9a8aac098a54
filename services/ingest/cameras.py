"""The decisions ingest makes about a camera's frames, as small pure functions and classes: no I/O.

`Backoff` spaces reconnect attempts, `Pacer` plays a file at its own speed, `FpsGate` caps the published
frame rate, `encode_to_fit` makes a JPEG that fits under the broker's message limit, and `session_id` names
one run of a camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def session_id(unix_ms: int, rand80: int) -> str:
    """A ULID (26 characters of Crockford base32): 48 bits of milliseconds since the epoch, then 80 random bits.

    Ingest names each run of a camera with one, so that (camera, session, seq) stays unique across restarts.
    A ULID rather than 16 random hex digits: sessions of a camera sort by their start time, as strings, so
    that a reader of the topic sees which run came later without another field; 80 random bits still make
    two ingests that start a camera in the same millisecond collide about never.
    """
    if not 0 <= unix_ms < 1 << 48 or not 0 <= rand80 < 1 << 80:
        raise ValueError("a ULID holds 48 bits of time and 80 random bits")
    n = unix_ms << 80 | rand80
    return "".join(_CROCKFORD[(n >> shift) & 31] for shift in range(125, -1, -5))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits about initial * 2**n, capped at `max_s`."""
    initial_s: float = 1.0
    max_s: float = 30.0
    jitter: float = 0.5  # share of the delay drawn at random: cameras that fail together retry apart

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0-based), for a uniform `rand` in [0, 1).

        The result lies in [base * (1 - jitter), base] with base = min(max_s, initial_s * 2**attempt):
        never longer than the cap, so an operator knows how soon a camera that came back is read again.
        """
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt, 0), 62))
        return base * (1.0 - self.jitter * min(max(rand, 0.0), 1.0))


class Pacer:
    """Delivers a file's frames at their media times, like a camera, instead of as fast as they decode.

    `delay(media_ts, now)` is how long to wait before delivering the frame whose presentation time is
    `media_ts` (seconds from the file's start), `now` being a monotonic clock. A reader that falls more
    than `max_lag_s` behind (a slow machine) plays on from where it is rather than rushing to catch up, as a
    camera would drop rather than burst; a jump forward in media time of more than `max_wait_s` (a gap in a
    broken file) is not waited out either.
    """

    def __init__(self, max_lag_s: float = 1.0, max_wait_s: float = 2.0):
        self.max_lag_s, self.max_wait_s = max_lag_s, max_wait_s
        self._anchor: float | None = None  # monotonic time at which media time 0 is due

    def delay(self, media_ts: float, now: float) -> float:
        if self._anchor is None:
            self._anchor = now - media_ts
        wait = self._anchor + media_ts - now
        if wait < -self.max_lag_s or wait > self.max_wait_s:
            self._anchor = now - media_ts
            return 0.0
        return max(0.0, wait)


class FpsGate:
    """Caps a stream at `fps` frames per second, keeping frames spread evenly; None or 0 keeps every frame.

    `admit(ts)` takes the frame's time (media time for files, a monotonic clock for live sources) and says
    whether to publish it. Slots lie on a grid `1/fps` apart, and a frame up to a quarter period early takes
    its slot, so that arrival jitter on a live stream does not halve the rate (30 fps capped at 15 keeps
    every second frame, not every third). After a stall the grid restarts from the next frame: no burst.
    """

    def __init__(self, fps: float | None):
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def admit(self, ts: float) -> bool:
        if not self.period:
            return True
        if self._next is not None and ts < self._next - self.period / 4:
            return False
        on_grid = self._next is not None and ts - self._next < self.period
        self._next = (self._next if on_grid else ts) + self.period  # type: ignore[operator]
        return True


class FrameTooLarge(ValueError):
    """No size down to `min_width` gives a JPEG under the byte limit (a limit set absurdly low)."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    jpeg: bytes
    width: int
    height: int


def scaled_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """(w, h) no wider than `max_width`, same aspect ratio; unchanged when it fits or there is no limit."""
    if not max_width or width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def encode_to_fit(bgr: np.ndarray, quality: int, max_width: int | None, max_bytes: int,
                  min_width: int = 64) -> EncodedFrame:
    """JPEG-encode a BGR frame at `quality`, no wider than `max_width`, and no larger than `max_bytes`.

    A frame whose JPEG is too large is downscaled, keeping the quality: a smaller sharp face is worth more
    to the detector than a blocky large one. JPEG size grows about with the pixel count, so each retry
    shrinks the area by the overshoot plus a margin; it takes one or two tries in practice.
    Raises FrameTooLarge when even `min_width` pixels wide does not fit.
    """
    h0, w0 = bgr.shape[:2]
    w, h = scaled_size(w0, h0, max_width)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    while True:
        # always resize from the original, so that retries do not compound resampling blur
        img = bgr if (w, h) == (w0, h0) else cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, params)
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {w0}x{h0} frame")
        if buf.nbytes <= max_bytes:
            return EncodedFrame(buf.tobytes(), w, h)
        scale = min(0.9, 0.95 * math.sqrt(max_bytes / buf.nbytes))
        if round(w * scale) < min_width:
            raise FrameTooLarge(f"a {w0}x{h0} frame does not fit in {max_bytes} bytes even at {w}x{h} "
                                f"({buf.nbytes} bytes at quality {quality})")
        w, h = round(w * scale), max(1, round(h * scale))
