#!/usr/bin/python3
"""Serve video files over RTSP, playing the part of IP cameras in tests and in `make demo`.

    /usr/bin/python3 scripts/rtsp_server.py [--port 8554] [--loop] biden=../shared/data/videos/biden_2021_7s.mp4 ...

Runs on Debian's python3 (GStreamer's GstRtspServer through python3-gi; the project's venv has no gi).
Each NAME=PATH is served at rtsp://HOST:PORT/NAME (a bare PATH is served under its file stem), over
RTP/UDP and RTP/TCP (interleaved), whichever the client asks for. The H.264 stream of the file is passed
through without decoding: no x264 encoder is installed here, a pass-through costs almost no CPU, and the
clips keep their exact frames. GStreamer paces the stream by its timestamps, so a client receives the clip
at its real frame rate. Every client gets its own session from the first frame: the sample clips hold a
single key frame, so a client joining a shared stream mid-way could decode nothing.

With --loop a session plays its file again and again with continuous timestamps; without it the session
ends with the file (the client sees the stream drop, as when a camera goes away).
When it listens it prints one line `READY <url> <url> ...` on stdout; SIGTERM or SIGINT stops it (exit 0).
Port 0 takes a free port, which the READY line reports. MP4/MOV files with H.264 video only.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# One H.264 access unit per buffer with its timestamps, straight from the container: no decoding.
READER = ("filesrc name=file ! qtdemux name=demux demux.video_0 ! h264parse ! "
          "video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false max-buffers=16")
# config-interval=-1: SPS/PPS before every key frame, so that a decoder can start from any of them
SESSION = "( appsrc name=src format=time is-live=true ! rtph264pay name=pay0 pt=96 config-interval=-1 )"


class FileFeed:
    """The access units of one file, in decode order, with timestamps shifted by one clip per loop."""

    def __init__(self, path: Path, loop: bool):
        self.path, self.loop = path, loop
        self.pipeline = Gst.parse_launch(READER)
        self.pipeline.get_by_name("file").set_property("location", str(path))
        self.sink = self.pipeline.get_by_name("sink")
        self.offset = 0  # ns added to every timestamp: the length of the loops already played
        self.end = 0     # latest pts + duration of this loop: where the next loop starts
        self.lock = threading.Lock()
        self.closed = False

    def open(self, timeout_s: float = 10.0) -> Gst.Caps:
        """Start reading; return the stream's caps, or raise with the reason the file cannot be served."""
        self.pipeline.set_state(Gst.State.PLAYING)
        sample = self.sink.emit("try-pull-preroll", int(timeout_s * Gst.SECOND))
        if sample is None:
            msg = self.pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
            why = msg.parse_error()[0].message if msg else "no H.264 video stream found (MP4/MOV with H.264 only)"
            self.close()
            raise RuntimeError(f"{self.path}: {why}")
        return sample.get_caps()

    def next_buffer(self) -> Gst.Buffer | None:
        """The next access unit, or None at the end of a file that does not loop (or once closed)."""
        with self.lock:
            while not self.closed:
                sample = self.sink.emit("pull-sample")
                if sample is not None:
                    return self._shift(sample.get_buffer())
                if not self.loop or self.end == 0:
                    return None
                # end of file: play it again, after everything already sent
                self.offset, self.end = self.offset + self.end, 0
                self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
            return None

    def _shift(self, buf: Gst.Buffer) -> Gst.Buffer:
        buf = buf.copy()  # metadata copy (the payload is shared) so that its timestamps can be changed
        if buf.pts != Gst.CLOCK_TIME_NONE:
            dur = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0
            self.end = max(self.end, buf.pts + dur)
            buf.pts += self.offset
        if buf.dts != Gst.CLOCK_TIME_NONE:
            buf.dts += self.offset
        return buf

    def close(self) -> None:
        self.closed = True
        self.pipeline.set_state(Gst.State.NULL)


class FileFactory(GstRtspServer.RTSPMediaFactory):
    """One RTSP mount: a new FileFeed for every session, fed to appsrc when it asks for data."""

    def __init__(self, path: Path, loop: bool):
        super().__init__()
        self.path, self.loop = path, loop
        self.set_launch(SESSION)
        self.set_shared(False)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media: GstRtspServer.RTSPMedia) -> None:
        feed = FileFeed(self.path, self.loop)
        src = media.get_element().get_by_name_recurse_up("src")
        src.set_property("caps", feed.open())

        def need_data(appsrc, _length):
            buf = feed.next_buffer()
            if buf is None:
                appsrc.emit("end-of-stream")
            else:
                appsrc.emit("push-buffer", buf)

        src.connect("need-data", need_data)
        media.connect("unprepared", lambda _m: feed.close())


def parse_source(arg: str) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH` (served under its stem) -> (name, path); raise ValueError with the reason."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = Path(arg).stem, arg
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{arg!r}: the mount name must be letters, digits, '-' or '_'")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{arg!r}: no such file {p}")
    return name, p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", metavar="NAME=PATH", help="a file to serve at rtsp://HOST:PORT/NAME")
    ap.add_argument("--port", type=int, default=8554, help="TCP port of the RTSP server (0: a free port)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--loop", action="store_true", help="play each file again and again instead of ending")
    args = ap.parse_args(argv)
    Gst.init(None)
    try:
        sources = dict(parse_source(s) for s in args.sources)
        for path in sources.values():  # refuse an unservable file now, not when a client asks for it
            probe = FileFeed(path, False)
            probe.open()
            probe.close()
    except (ValueError, RuntimeError) as e:
        print(f"rtsp_server: {e}", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name, path in sources.items():
        mounts.add_factory("/" + name, FileFactory(path, args.loop))
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    port = server.get_bound_port()
    print("READY " + " ".join(f"rtsp://{args.host}:{port}/{name}" for name in sources), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
