"""Ingest under faults, as a process against the real broker and a real RTSP server: killed and restarted,
next to a camera that never answers, stopped while a camera is stuck in its open, and with credentials in a
camera's URL."""
from __future__ import annotations

import os
import signal
import socket
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from services.local_pipeline import LocalPipeline, Service
from shared.schemas import Frame
from tests.conftest import consume_all
from tests.integration.conftest import start_ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_url():
    """An RTSP URL on a port that accepts connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"rtsp://127.0.0.1:{s.getsockname()[1]}/never"
    s.close()


def wait_for(cond, timeout_s: float, what: str, svc: Service) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert svc.proc.poll() is None, f"ingest exited ({svc.proc.returncode}):\n{svc.log_tail()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s:\n{svc.log_tail()}"
        time.sleep(0.1)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (ingest's forkserver and the camera processes), from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(d.name))
        except (ValueError, OSError, IndexError):
            continue
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_and_restarted_ingest_never_reuses_a_frame_name(kafka_bootstrap, pipe, make_topic, data_dir,
                                                                 rtsp_cameras):
    """(camera, session, seq) names one frame: a restart takes a new session instead of counting seq from 0
    again under the old name; and the camera processes of a killed ingest do not outlive it."""
    topic = make_topic("ingest-restart")
    urls = rtsp_cameras({"cam": data_dir / "videos" / "biden_2021_7s.mp4"}, loop=True)
    args = ("--camera", f"cam={urls['cam']}", "--fps", "10", "--max-width", "320")
    first = start_ingest(pipe, topic, *args, label="ingest-first")
    wait_for(lambda: first.metric("facestream_messages_out_total") >= 15, 30, "15 frames", first)
    below = descendants(first.proc.pid)
    assert below, "ingest runs its camera in a process of its own"
    os.kill(first.proc.pid, signal.SIGKILL)  # ingest alone: its camera processes must notice and end
    first.proc.wait(10)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in below), "a camera process outlived the ingest that started it"

    second = start_ingest(pipe, topic, *args, label="ingest-second")
    wait_for(lambda: second.metric("facestream_messages_out_total") >= 15, 30, "15 frames", second)
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait(20) == 0, second.log_tail()

    frames = [Frame.decode(r.value) for r in consume_all(kafka_bootstrap, topic, timeout_s=20)]
    by_name: dict[tuple[str, str, int], set[bytes]] = defaultdict(set)
    for f in frames:
        by_name[(f.camera_id, f.session, f.seq)].add(f.jpeg)
    reused = [k for k, jpegs in by_name.items() if len(jpegs) > 1]
    assert not reused, f"{len(reused)} frame names carry different pictures, e.g. {reused[:3]}"
    sessions = {f.session for f in frames}
    assert len(sessions) == 2 and all(len(s) == 26 for s in sessions), sessions
    for s in sessions:  # from 0 without gaps (the killed run's last frames may be lost, never skipped)
        seqs = sorted({f.seq for f in frames if f.session == s})
        assert seqs == list(range(len(seqs))) and len(seqs) >= 15
    assert max(sessions) == Frame.decode(consume_all(kafka_bootstrap, topic, timeout_s=5)[-1].value).session, \
        "sessions sort by start time: the second run's is the larger"


def first_record(bootstrap: str, topic: str, camera: str, timeout_s: float):
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    if r.key == camera.encode():
                        return r
    finally:
        c.close()
    raise AssertionError(f"no frame of {camera} within {timeout_s} s")


@pytest.mark.parametrize("run", range(3))
def test_a_silent_camera_does_not_delay_another_cameras_first_frame(kafka_bootstrap, pipe, make_topic, data_dir,
                                                                    rtsp_cameras, silent_url, run):
    topic = make_topic("ingest-first-frame")
    urls = rtsp_cameras({"live": data_dir / "videos" / "biden_2021_7s.mp4"}, loop=True)
    t0 = time.time()
    # the silent camera first, and the default 10-s open timeout: an open that blocked the other camera's
    # would hold its first frame for 10 s
    ingest = start_ingest(pipe, topic, "--camera", f"dead={silent_url}", "--camera", f"live={urls['live']}")
    rec = first_record(kafka_bootstrap, topic, "live", timeout_s=20)
    frame = Frame.decode(rec.value)
    to_capture, to_broker = frame.capture_ts - t0, rec.timestamp / 1000 - t0
    print(f"\nrun {run}: first frame of the live camera {to_capture:.2f} s after ingest started "
          f"(record timestamp {to_broker:.2f} s)")
    assert frame.seq == 0 and to_capture < 2.0, f"first frame {to_capture:.2f} s after start:\n{ingest.log_tail()}"
    assert ingest.metric("facestream_camera_reconnects_total", camera_id="dead") == 0, \
        "the silent camera is still inside its first open"
    ingest.proc.send_signal(signal.SIGTERM)
    assert ingest.wait(20) == 0, ingest.log_tail()


def test_a_silent_camera_does_not_delay_another_cameras_reconnect(kafka_bootstrap, pipe, make_topic, data_dir,
                                                                  rtsp_cameras, silent_url):
    topic = make_topic("ingest-reconnect")
    # without --loop the server ends the session with the clip (4 s at 15 fps): the camera drops, and the
    # reconnect plays it again from the start
    urls = rtsp_cameras({"live": data_dir / "videos" / "obama_whcd2016_4s.mp4"})
    ingest = start_ingest(pipe, topic, "--camera", f"dead={silent_url}", "--camera", f"live={urls['live']}",
                          "--fps", "0", "--read-timeout-s", "1", "--backoff-initial-s", "0.2",
                          "--backoff-max-s", "0.5")
    wait_for(lambda: ingest.metric("facestream_messages_out_total", topic=topic) >= 75, 30,
             "a second play of the clip", ingest)
    ingest.proc.send_signal(signal.SIGTERM)
    assert ingest.wait(20) == 0, ingest.log_tail()
    frames = sorted((Frame.decode(r.value) for r in consume_all(kafka_bootstrap, topic, timeout_s=20)),
                    key=lambda f: f.seq)
    assert {f.camera_id for f in frames} == {"live"} and [f.seq for f in frames] == list(range(len(frames)))
    gaps = [(b.capture_ts - a.capture_ts, a.seq) for a, b in zip(frames, frames[1:])]
    gap, at = max(gaps)
    print(f"\nthe live camera's reconnect took {gap:.2f} s (after frame {at}) next to a silent camera")
    assert 55 <= at + 1 <= 61, f"the longest gap is the drop at the clip's end, not after frame {at}"
    # read timeout 1 s + backoff <= 0.5 s + the open: far below the silent camera's 10-s open timeout
    assert gap < 3.5, f"the reconnect waited {gap:.2f} s"


def test_sigterm_does_not_wait_for_a_camera_stuck_in_its_open(kafka_bootstrap, pipe, make_topic, data_dir,
                                                              silent_url):
    topic = make_topic("ingest-stop")
    clip = data_dir / "videos" / "biden_2021_7s.mp4"
    ingest = start_ingest(pipe, topic, "--camera", f"dead={silent_url}", "--camera", f"live={clip}",
                          "--open-timeout-s", "60")
    wait_for(lambda: ingest.metric("facestream_messages_out_total", topic=topic) >= 3, 30, "3 frames", ingest)
    assert ingest.metric("facestream_camera_state", camera_id="dead", state="connecting") == 1
    t = time.monotonic()
    ingest.proc.send_signal(signal.SIGTERM)
    assert ingest.wait(20) == 0, ingest.log_tail()
    took = time.monotonic() - t
    print(f"\ningest stopped {took:.2f} s after SIGTERM with a camera stuck in its open")
    assert took < 2.0 + 2.5, f"ingest took {took:.1f} s to stop (grace 2 s for the camera stuck in its open)"
    assert "camera dead: its process did not stop within 2.0 s; killed" in ingest.log_text()
    sent = {f.seq for f in (Frame.decode(r.value) for r in consume_all(kafka_bootstrap, topic, timeout_s=10))}
    assert sent == set(range(len(sent))) and len(sent) >= 3, "what was captured before the stop is published"


def test_no_log_line_carries_a_cameras_password(kafka_bootstrap, make_topic, tmp_path, rtsp_cameras, data_dir):
    topic = make_topic("ingest-secret")
    urls = rtsp_cameras({"cam": data_dir / "videos" / "faceapi_test_5frames.mp4"})
    port = urls["cam"].split(":")[2].split("/")[0]
    # FFmpeg at its verbose level (48) prints every URL it opens, credentials included: ingest must mask them
    pipe = LocalPipeline(tmp_path / "logs", env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                 "OPENCV_FFMPEG_LOGLEVEL": "48"})
    try:
        ingest = start_ingest(pipe, topic, "--log-level", "DEBUG", "--open-timeout-s", "2",
                              "--camera", f"rtsp=rtsp://user:secret@127.0.0.1:{port}/x",
                              "--camera", "http=http://admin:secret@127.0.0.1:1/video?token=s3cr3t-token",
                              "--backoff-initial-s", "0.2", "--backoff-max-s", "0.5")
        wait_for(lambda: min(ingest.metric("facestream_camera_reconnects_total", camera_id=c)
                             for c in ("rtsp", "http")) >= 2, 30, "two failed opens of each camera", ingest)
        ingest.proc.send_signal(signal.SIGTERM)
        assert ingest.wait(20) == 0, ingest.log_tail()
    finally:
        pipe.stop()
    text = ingest.log_text()
    assert "secret" not in text and "s3cr3t" not in text, [ln for ln in text.splitlines() if "secret" in ln][:5]
    assert f"rtsp://user:***@127.0.0.1:{port}/x" in text and "token=***" in text, "the sources are logged, masked"
    assert "cannot open the stream" in text and "[OPENCV:FFMPEG:48]" in text, "FFmpeg's own lines came through"
