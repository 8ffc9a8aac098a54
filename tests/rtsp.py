"""The `rtsp_cameras` fixture: real RTSP cameras (scripts/rtsp_cameras.py) that stop with the test."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest

from scripts.rtsp_cameras import RtspServerError, rtsp_server

__all__ = ["rtsp_cameras", "rtsp_server"]


@pytest.fixture
def rtsp_cameras() -> Iterator[Callable[..., dict[str, str]]]:
    """`rtsp_cameras({name: path}, loop=False) -> {name: url}`: servers that stop with the test, and a test
    that FAILS, with the server's reason, when one cannot start. Import it into a test module (or conftest)."""
    with ExitStack() as stack:
        def start(files: Mapping[str, str | Path], loop: bool = False) -> dict[str, str]:
            try:
                return stack.enter_context(rtsp_server(files, loop))
            except RtspServerError as e:
                pytest.fail(f"this test needs the RTSP server, which did not start: {e}")
        yield start
