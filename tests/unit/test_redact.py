"""Credentials out of ingest's logs: URLs masked, known secrets replaced, log handlers and C output filtered."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest

from shared.redact import Redactor, mask_url, redact_logging, url_secrets


@pytest.mark.parametrize("url, masked", [
    ("rtsp://user:pass@host/stream", "rtsp://user:***@host/stream"),
    ("rtsp://user:pass@10.0.0.5:554/Streaming/Channels/101", "rtsp://user:***@10.0.0.5:554/Streaming/Channels/101"),
    ("RTSPS://Admin:Pa55@cam.example/live", "RTSPS://Admin:***@cam.example/live"),
    ("rtsp://only-a-token@host/s", "rtsp://***@host/s"),
    ("rtsp://user:p@ss:w0rd@host/s", "rtsp://user:***@host/s"),  # FFmpeg: the userinfo ends at the last '@'
    ("rtsp://user:@host/s", "rtsp://user:***@host/s"),
    ("http://cam/snap.cgi?user=admin&pwd=hunter22&res=hd", "http://cam/snap.cgi?user=admin&pwd=***&res=hd"),
    ("https://cam/live.m3u8?token=abc123#t", "https://cam/live.m3u8?token=***#t"),
    ("http://a:b@cam/x?password=c", "http://a:***@cam/x?password=***"),
    # nothing to hide: unchanged, an '@' after the host included
    ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
    ("http://cam/path@2x.jpg", "http://cam/path@2x.jpg"),
    ("clips/door.mp4", "clips/door.mp4"),
    ("0", "0"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_every_url_of_a_line_is_masked():
    line = "camera=['a=rtsp://u:one@h1/x', 'b=http://v:two@h2:8080/y?key=three'] opening 'rtsp://w:four@h3'"
    assert mask_url(line) == ("camera=['a=rtsp://u:***@h1/x', 'b=http://v:***@h2:8080/y?key=***'] "
                              "opening 'rtsp://w:***@h3'")


def test_a_redactor_also_replaces_the_bare_secrets_of_its_sources():
    assert url_secrets("rtsp://user:s%40fe%20pw@h/x?token=tok-1") == {"s%40fe%20pw", "s@fe pw", "tok-1"}
    redact = Redactor(["rtsp://user:s%40fe%20pw@h/x", "rtsp://cam/no-secret", "http://u:ab@h/"])
    assert redact("auth failed for user with password s@fe pw (s%40fe%20pw)") == \
        "auth failed for user with password *** (***)"
    # secrets under MIN_SECRET_CHARS are masked inside URLs only, so that "ab" stays readable elsewhere
    assert redact("tab http://u:ab@h/") == "tab http://u:***@h/"
    assert Redactor([])("nothing http://x/y") == "nothing http://x/y"


def test_redact_logging_masks_whole_lines_tracebacks_included():
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        redact_logging(Redactor(["rtsp://u:hunter22@cam/x"]))
        log = logging.getLogger("facestream.test-redact")
        log.warning("opening %s", "rtsp://u:hunter22@cam/x")
        try:
            raise RuntimeError("cv2 said: cannot open rtsp://u:hunter22@cam/x (hunter22)")
        except RuntimeError:
            log.exception("failed")
    finally:
        root.handlers = saved
    text = stream.getvalue()
    assert "hunter22" not in text
    assert "WARNING opening rtsp://u:***@cam/x" in text and "RuntimeError: cv2 said: cannot open " in text


def test_redact_output_filters_what_c_code_writes_to_stdout_and_stderr():
    # in a subprocess: the test would otherwise redirect pytest's own descriptors
    code = textwrap.dedent("""
        import ctypes, os, sys
        from shared.redact import Redactor, redact_output
        restore = redact_output(Redactor(["rtsp://u:hunter22@cam/x"]))
        libc = ctypes.CDLL(None)
        libc.printf(b"[OPENCV:FFMPEG:48] Opening 'rtsp://u:hunter22@cam/x' for reading\\n")  # buffered C stdio
        os.write(2, b"stderr: password hunter22\\n")
        print("python: rtsp://u:hunter22@cam/x", file=sys.stderr)
        restore()
        print("restored: hunter22")  # after restore: unfiltered again
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[OPENCV:FFMPEG:48] Opening 'rtsp://u:***@cam/x' for reading\nrestored: hunter22\n"
    assert out.stderr == "stderr: password ***\npython: rtsp://u:***@cam/x\n"
