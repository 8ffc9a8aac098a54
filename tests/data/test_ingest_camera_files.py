"""A camera's process over a real video file (../shared/data/videos)."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import uuid
from multiprocessing.connection import Connection

from services.ingest.camera import Camera
from services.ingest.cameras import Backoff
from services.ingest.config import CameraSpec
from services.ingest.reader import Captured, Ended
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


def test_a_file_cameras_process_that_dies_is_an_error_not_a_replay(data_dir):
    clip = data_dir / "videos" / "faceapi_test_5frames.mp4"
    out: list[Frame] = []
    cam, _ = camera(scripted([*captured(2)], [*captured(5), Ended("eof")]), out.append, kind="file",
                    source=str(clip))
    cam.start()
    cam.join(10)
    assert cam.error == "the camera's process died" and [f.seq for f in out] == [0, 1]
