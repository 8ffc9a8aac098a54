"""A camera's reader on a dead URL and an unreadable file, in a thread, its events collected in a list."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from services.ingest.cameras import Backoff
from services.ingest.config import CameraSpec
from services.ingest.reader import Captured, CameraReader, Ended, Log, Status


def test_an_unreadable_file_ends_with_an_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    events: list = []
    reader = CameraReader(CameraSpec("bad", str(bad), "file"), events.append, threading.Event(),
                          backoff=Backoff(0.05, 0.2, 0.5), max_frame_bytes=900_000)
    assert reader.run() == Ended("error", f"cannot read video file {bad}")
    assert events[-1] == Ended("error", f"cannot read video file {bad}")
    assert [e.state for e in events if isinstance(e, Status)] == ["connecting", "ended"]
    assert not any(isinstance(e, Captured) for e in events)


def test_a_dead_stream_backs_off_and_retries_until_stopped():
    cam = CameraSpec(f"dead-{uuid.uuid4().hex[:6]}", "rtsp://127.0.0.1:1/nothing", "rtsp")
    stop, events = threading.Event(), []
    reader = CameraReader(cam, events.append, stop, backoff=Backoff(0.05, 0.2, 0.5), max_frame_bytes=900_000,
                          open_timeout_s=1.0)
    t = threading.Thread(target=reader.run)
    t.start()
    deadline = time.monotonic() + 10
    while reader.reconnects < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(5)
    assert not t.is_alive() and reader.reconnects >= 3
    statuses = [e for e in events if isinstance(e, Status)]
    assert {"connecting", "backoff"} <= {s.state for s in statuses} and statuses[-1].state == "ended"
    assert [s.reconnects for s in statuses] == sorted(s.reconnects for s in statuses)  # counters only grow
    warnings = [e.text for e in events if isinstance(e, Log) and e.level == logging.WARNING]
    assert len(warnings) >= 3 and warnings[0].startswith("cannot open the stream, reconnecting in ")
    assert events[-1] == Ended("stopped") and not any(isinstance(e, Captured) for e in events)
