"""Ingest's side of a camera (services/ingest/camera.py) against scripted camera processes, run as threads:
frames named by session and seq, a dead process started again, a stuck one killed, failures reported."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
import time
import uuid
from multiprocessing.connection import Connection

from services.ingest.camera import Camera
from services.ingest.cameras import Backoff
from services.ingest.config import CameraSpec
from services.ingest.reader import Captured, Ended, Log, Status
from shared import metrics
from shared.schemas import Frame

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 50


class FakeProcess:
    """A camera "process" run as a thread, with its own copy of the pipe's end (as a child process has)."""
    killed: list["FakeProcess"] = []

    def __init__(self, target, name, daemon, args):
        spec, conn, stop, kw, quiet = args
        self.kill_event = threading.Event()
        own = Connection(os.dup(conn.fileno()), readable=False)
        self.thread = threading.Thread(target=target, args=(spec, own, stop, kw, self.kill_event), daemon=True)
        self.pid = None

    def start(self):
        self.thread.start()

    def join(self, timeout=None):
        self.thread.join(timeout)

    def is_alive(self):
        return self.thread.is_alive()

    def kill(self):
        self.kill_event.set()
        FakeProcess.killed.append(self)


class FakeContext:
    Pipe = staticmethod(multiprocessing.Pipe)
    Event = threading.Event
    Process = FakeProcess


def scripted(*runs):
    """A target playing one list of events per start of the process; a run without Ended dies (EOF)."""
    runs_left = list(runs)

    def target(spec, conn, stop, kw, killed):
        events = runs_left.pop(0)
        try:
            for e in events:
                if e == "hang":  # ignore `stop` until killed
                    killed.wait(10)
                    return
                if e == "until-stop":
                    stop.wait(10)
                    continue
                conn.send(e)
        finally:
            conn.close()
    return target


def camera(target, publish, kind="rtsp", source="rtsp://u:hunter22@cam/x", **kw) -> tuple[Camera, threading.Event]:
    stop = threading.Event()
    spec = CameraSpec(f"c-{uuid.uuid4().hex[:6]}", source, kind)
    cam = Camera(spec, publish, stop, ctx=FakeContext(), backoff=Backoff(0.01, 0.02, 0.5), reader_kw={},
                 rng=random.Random(1), target=target, **kw)
    return cam, stop


def captured(n: int, t0: float = 100.0) -> list[Captured]:
    return [Captured(t0 + i, 4, 3, JPEG + bytes([i])) for i in range(n)]


def test_a_process_started_again_keeps_the_session_and_counts_on():
    out: list[Frame] = []
    target = scripted([Status("connecting", 0, 0, 0), Status("streaming", 3, 1, 0), *captured(3)],  # dies
                      [Status("connecting", 0, 0, 0), *captured(2, 200.0), Status("streaming", 2, 0, 0),
                       Ended("max_frames")])
    cam, _ = camera(target, out.append)
    reconnects = metrics.CAMERA_RECONNECTS.labels(cam.spec.id)._value.get()
    cam.start()
    cam.join(10)
    assert not cam.is_alive() and cam.error is None and cam.fatal is None
    assert [f.seq for f in out] == [0, 1, 2, 3, 4] and {f.session for f in out} == {cam.session}
    assert len(cam.session) == 26 and [f.capture_ts for f in out] == [100, 101, 102, 200, 201]
    assert all(f.camera_id == cam.spec.id and f.jpeg.startswith(JPEG) for f in out)
    assert metrics.CAMERA_RECONNECTS.labels(cam.spec.id)._value.get() == reconnects + 1
    assert metrics.FRAMES_CAPTURED.labels(cam.spec.id)._value.get() == 5  # 3 + 2: per-process counters summed
    assert metrics.FRAMES_SKIPPED.labels(cam.spec.id)._value.get() == 1
    assert metrics.CAMERA_STATE.labels(cam.spec.id, "ended")._value.get() == 1


def test_two_cameras_never_share_a_session():
    a, _ = camera(scripted([]), print)
    b, _ = camera(scripted([]), print)
    assert a.session != b.session


def test_a_crash_in_the_reader_stops_ingest_and_a_refused_frame_too():
    cam, _ = camera(scripted([*captured(1), Ended("crashed", "FrameTooLarge: no size fits")]), lambda f: None)
    cam.start()
    cam.join(10)
    assert "FrameTooLarge: no size fits" in str(cam.fatal)

    def refuse(frame):
        raise RuntimeError("not publishing: the broker refused an earlier frame")
    cam, _ = camera(scripted([*captured(1), "hang"]), refuse)
    FakeProcess.killed.clear()
    cam.start()
    cam.join(10)
    assert "broker refused" in str(cam.fatal) and len(FakeProcess.killed) == 1, "its process is killed"


def test_on_stop_a_process_stuck_in_an_open_is_killed_after_the_grace():
    out: list[Frame] = []
    cam, stop = camera(scripted([*captured(2), "hang"]), out.append, stop_grace_s=0.3)
    FakeProcess.killed.clear()
    cam.start()
    deadline = time.monotonic() + 5
    while len(out) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t = time.monotonic()
    stop.set()
    cam.join(5)
    assert not cam.is_alive() and 0.3 <= time.monotonic() - t < 1.5
    assert len(FakeProcess.killed) == 1 and [f.seq for f in out] == [0, 1] and cam.error is None


def test_its_log_lines_are_masked(caplog):
    target = scripted([Log(logging.WARNING, "cannot open rtsp://u:hunter22@cam/x (hunter22)"), "until-stop",
                       Ended("stopped")])
    cam, stop = camera(target, lambda f: None)
    with caplog.at_level(logging.INFO, logger="facestream.ingest"):
        cam.start()
        time.sleep(0.3)
        stop.set()
        cam.join(5)
    assert not cam.is_alive() and cam.error is None and cam.fatal is None
    assert f"camera {cam.spec.id}: cannot open rtsp://u:***@cam/x (***)" in caplog.messages
    assert "hunter22" not in caplog.text


def test_a_file_cameras_process_that_dies_is_an_error_not_a_replay(tmp_path):
    """A file camera's process that dies mid-file is not started again: replaying the file would publish
    its frames twice under new seqs. (The scripted process never opens the path.)"""
    out: list[Frame] = []
    cam, _ = camera(scripted([*captured(2)], [*captured(5), Ended("eof")]), out.append, kind="file",
                    source=str(tmp_path / "clip.mp4"))
    cam.start()
    cam.join(10)
    assert cam.error == "the camera's process died" and [f.seq for f in out] == [0, 1]
