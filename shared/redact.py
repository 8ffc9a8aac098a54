"""Credentials out of logs: no URL's password (a camera's, Redis's, the broker's) reaches a log line or a message.

`mask_url("rtsp://user:pass@host/stream")` is `rtsp://user:***@host/stream`; a user part without a password
(often a token) becomes `***`, and so do the values of query parameters that name a secret (`password=`,
`token=`, ...). `Redactor` applies the same to any text (a whole log line, an FFmpeg message, a traceback) and
also replaces every secret of the configured sources wherever it appears, raw or percent-decoded, in case a
library echoes it without its URL. `redact_logging` and `redact_output` put it in front of Python's log
handlers and of file descriptors 1 and 2 (where OpenCV and FFmpeg write).
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading
from typing import Callable, Iterable
from urllib.parse import unquote

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter secrets are masked inside URLs only: replacing "ab" everywhere would garble logs
_SECRET_PARAMS = ("password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "apikey",
                  "api_key", "secret", "sig", "signature")
# userinfo as FFmpeg reads it: the authority ends at the first '/', '?' or '#', the userinfo at its last '@'
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#]*)@")
# a value ends at the next parameter, the fragment, or what quotes or brackets a URL in a line of text
# a parameter is secret when its name is one of these or ends with one (auth_token, client_secret, X-Amz-Signature)
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:[\w.\-]*[_.\-])?(?:%s)=)([^&#\s'\"<>()\[\]{}]*)" % "|".join(_SECRET_PARAMS))


def _mask_userinfo(m: re.Match) -> str:
    user, sep, _password = m.group(2).partition(":")
    return f"{m.group(1)}{user}:{MASK}@" if sep else f"{m.group(1)}{MASK}@"


def mask_url(text: str) -> str:
    """`text` (a URL, or any line holding URLs) with the password of every URL and each secret query value
    replaced by `***`."""
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(_mask_userinfo, text))


def url_secrets(url: str) -> set[str]:
    """The secrets a URL holds (its password, a user part without one, secret query values), raw and decoded."""
    found: set[str] = set()
    for m in _USERINFO.finditer(url):
        user, sep, password = m.group(2).partition(":")
        found.add(password if sep else user)
    found.update(m.group(2) for m in _QUERY_SECRET.finditer(url))
    return {s for raw in found for s in (raw, unquote(raw)) if s}


class Redactor:
    """Masks URLs in any text, and every known secret of at least MIN_SECRET_CHARS characters."""

    def __init__(self, sources: Iterable[str] = (), secrets: Iterable[str] = ()):
        """`sources`: URLs whose secrets are masked; `secrets`: plain secrets (a password from a file)."""
        secrets = {s for src in sources for s in url_secrets(src)} | {s for s in secrets if s}
        secrets = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        # longest first, so that a secret containing another is replaced whole
        self._secret = re.compile("|".join(map(re.escape, sorted(secrets, key=len, reverse=True)))) \
            if secrets else None

    def __call__(self, text: str) -> str:
        text = mask_url(text)
        return self._secret.sub(MASK, text) if self._secret else text


class _RedactingFormatter(logging.Formatter):
    def __init__(self, inner: logging.Formatter, redact: Redactor):
        super().__init__()
        self.inner, self.redact = inner, redact

    def format(self, record: logging.LogRecord) -> str:  # the whole line, traceback included
        return self.redact(self.inner.format(record))


def redact_logging(redact: Redactor) -> None:
    """Mask every line the root logger's handlers write (this process's own log lines and its libraries')."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_RedactingFormatter(handler.formatter or logging.Formatter(), redact))


def redact_output(redact: Redactor, fds: tuple[int, ...] = (1, 2)) -> Callable[[], None]:
    """Route file descriptors 1 and 2 through `redact`, line by line: what C libraries print goes there
    (OpenCV writes FFmpeg's messages to stdout, its own to stderr). Returns `restore`, which flushes what is
    buffered, points the descriptors back and waits (up to a second) for the last lines to be written."""
    threads, originals = [], []
    for fd in fds:
        read_fd, write_fd = os.pipe()
        originals.append((fd, os.dup(fd)))
        os.dup2(write_fd, fd)
        os.close(write_fd)

        def forward(read_fd: int = read_fd, original: int = originals[-1][1]) -> None:
            with os.fdopen(read_fd, "rb") as lines:
                for line in lines:
                    os.write(original, redact(line.decode("utf-8", "replace")).encode())

        threads.append(threading.Thread(target=forward, name=f"redact-fd{fd}", daemon=True))
        threads[-1].start()

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)  # C's stdio buffers (FFmpeg's lines through OpenCV's printf)
        for fd, original in originals:
            os.dup2(original, fd)  # closes the pipe's last write end: its reader drains it and ends
        for t in threads:
            t.join(1.0)

    return restore
