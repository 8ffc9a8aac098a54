"""Start scripts/rtsp_server.py around a block of code: cameras for `make demo`, the benchmarks and the tests.

    with rtsp_server({"biden": DATA / "videos/biden_2021_7s.mp4"}, loop=True) as urls:
        urls["biden"]  # rtsp://127.0.0.1:<free port>/biden

The server runs on Debian's python3 (GStreamer's RTSP server is reachable only from there; override with
FACESTREAM_RTSP_PYTHON). It picks a free port itself and reports it on its READY line, so that two servers
never race for one port. A server that cannot start raises RtspServerError with its stderr: a test that
needs it fails with the reason instead of skipping (`tests/rtsp.py`'s fixture).
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rtsp_server.py"
PYTHON = os.environ.get("FACESTREAM_RTSP_PYTHON", "/usr/bin/python3")


class RtspServerError(RuntimeError):
    """The RTSP server did not start (missing GStreamer packages, a bad file, no READY line in time)."""


@contextmanager
def rtsp_server(files: Mapping[str, str | Path], loop: bool = False, host: str = "127.0.0.1",
                start_timeout_s: float = 20.0) -> Iterator[dict[str, str]]:
    """Serve `files` ({mount name: video path}) over RTSP; yield {mount name: rtsp URL}; stop on exit."""
    if not Path(PYTHON).exists():
        raise RtspServerError(f"{PYTHON} not found: the RTSP server needs Debian's python3 with python3-gi "
                              "and gir1.2-gst-rtsp-server-1.0 (make setup installs them)")
    cmd = [PYTHON, str(SCRIPT), "--port", "0", "--host", host, *(["--loop"] if loop else []),
           *(f"{name}={path}" for name, path in files.items())]
    with tempfile.TemporaryFile(mode="w+") as err:  # a file, not a pipe: GStreamer warnings cannot block it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        try:
            line = _ready_line(proc, start_timeout_s)
            if line is None:
                err.seek(0)
                why = err.read().strip()[-2000:] or "no output"
                state = f"exited with status {proc.returncode}" if proc.poll() is not None else "did not say READY"
                raise RtspServerError(f"RTSP server {state} (waited up to {start_timeout_s:.0f} s): {why}\n"
                                      f"command: {cmd}")
            urls = line.split()[1:]
            yield dict(zip(files, urls))
        finally:
            _stop(proc)


def _ready_line(proc: subprocess.Popen, timeout_s: float) -> str | None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:  # end of output: the server died
                proc.wait(5)
                return None
            if line.startswith("READY "):
                return line.strip()
    return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout:
        proc.stdout.close()
