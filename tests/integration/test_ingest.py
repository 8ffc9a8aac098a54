"""`facestream ingest` as a process against the real broker, with files and a real RTSP server as cameras."""
from __future__ import annotations

import ast
import re
import signal
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.local_pipeline import Service
from shared.schemas import Frame
from tests.conftest import consume_all
from tests.integration.conftest import start_ingest

pytestmark = pytest.mark.integration


def published(ingest: Service) -> dict[str, int]:
    """Frames published per camera, from the last line ingest logs."""
    for line in reversed(ingest.log_text().splitlines()):
        if m := re.search(r"frames published per camera: (\{.*\})", line):
            return ast.literal_eval(m.group(1))
    raise AssertionError(f"ingest did not log what it published:\n{ingest.log_tail()}")


def frames_of(records: list) -> list[Frame]:
    return sorted((Frame.decode(r.value) for r in records), key=lambda f: (f.camera_id, f.seq))


def jpeg_image(f: Frame) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"frame {f.camera_id}/{f.seq} is not a valid JPEG"
    assert img.shape[:2] == (f.height, f.width)
    return img


def test_a_file_camera_publishes_every_frame_then_exits(kafka_bootstrap, pipe, make_topic, data_dir):
    topic = make_topic("ingest-file", partitions=3)
    clip = data_dir / "videos" / "faceapi_test_5frames.mp4"
    ingest = start_ingest(pipe, topic, "--camera", f"clip={clip}", "--fps", "0")
    assert ingest.wait(60) == 0, ingest.log_tail()
    records = consume_all(kafka_bootstrap, topic, expect=5)
    frames = frames_of(records)
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4] and {r.key for r in records} == {b"clip"}
    assert len({r.partition for r in records}) == 1, "one camera's frames share a partition (keyed by camera)"
    cap = cv2.VideoCapture(str(clip))
    for f in frames:
        ok, bgr = cap.read()
        assert ok and (f.width, f.height) == (820, 460)
        assert np.abs(jpeg_image(f).astype(int) - bgr).mean() < 4, "the published frame is the file's frame"
    ts = [f.capture_ts for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:])) and abs(ts[0] - time.time()) < 60


def test_an_rtsp_camera_publishes_at_the_clips_frame_rate(kafka_bootstrap, pipe, make_topic, data_dir, rtsp_cameras):
    topic = make_topic("ingest-rtsp")
    urls = rtsp_cameras({"biden": data_dir / "videos" / "biden_2021_7s.mp4"})
    ingest = start_ingest(pipe, topic, "--camera", f"biden={urls['biden']}", "--max-frames", "150", "--fps", "0")
    assert ingest.wait(60) == 0, ingest.log_tail()
    frames = frames_of(consume_all(kafka_bootstrap, topic, expect=150, timeout_s=60))
    assert [f.seq for f in frames] == list(range(150))
    assert {(f.width, f.height) for f in frames} == {(1280, 720)}
    for f in frames:
        jpeg_image(f)
    ts = [f.capture_ts for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:])), "capture_ts must increase monotonically"
    # a few frames may come together while the decoder starts (B-frame reordering); then real time
    steady_fps = (150 - 1 - 10) / (ts[-1] - ts[10])
    assert 24 <= steady_fps <= 36, f"{steady_fps:.1f} frames/s for a 30 fps clip"
    assert ts[-1] - ts[0] > 149 / 30 * 0.85, "the clip must not arrive in a burst"


def test_a_camera_that_never_answers_backs_off_while_another_keeps_publishing(kafka_bootstrap, pipe, make_topic,
                                                                              data_dir):
    topic = make_topic("ingest-dead")
    # a port that accepts connections and never says a word: the open must time out, not hang the process
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    dead_url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/never"
    clip = data_dir / "videos" / "biden_2021_7s.mp4"
    try:
        ingest = start_ingest(pipe, topic, "--camera", f"dead={dead_url}", "--camera", f"live={clip}", "--max-width",
                              "640", "--open-timeout-s", "1", "--backoff-initial-s", "0.2", "--backoff-max-s", "1",
                              "--fps", "0")
        pipe.wait_ready(ingest, 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ingest.metric("facestream_camera_reconnects_total", camera_id="dead") >= 3 \
                    and ingest.metric("facestream_camera_state", camera_id="dead", state="backoff") == 1:
                break
            time.sleep(0.2)
        text = ingest.get("/metrics")[1]
        assert ingest.metric("facestream_camera_state", camera_id="dead", state="backoff") == 1, text
        assert ingest.metric("facestream_camera_state", camera_id="live", state="streaming") == 1, text
        assert ingest.metric("facestream_camera_reconnects_total", camera_id="dead") >= 3
        assert ingest.get("/healthz")[0] == 200
        assert ingest.get("/readyz")[0] == 200
        ingest.proc.send_signal(signal.SIGTERM)
        assert ingest.wait(20) == 0, ingest.log_tail()
        sent = published(ingest)
    finally:
        silent.close()
    assert sent["dead"] == 0 and sent["live"] >= 60
    frames = frames_of(consume_all(kafka_bootstrap, topic, expect=sent["live"], timeout_s=60))
    assert {f.camera_id for f in frames} == {"live"} and {(f.width, f.height) for f in frames} == {(640, 360)}
    assert [f.seq for f in frames] == list(range(sent["live"])), "every published frame, no gap"
    gaps = np.diff([f.capture_ts for f in frames])
    assert gaps.max() < 0.5, f"the live camera stalled {gaps.max():.2f} s while the dead one was retried"


def test_frames_over_the_byte_limit_are_downscaled(kafka_bootstrap, pipe, make_topic, data_dir):
    topic = make_topic("ingest-big")
    clip: Path = data_dir / "videos" / "crowd_royal_opera_house_unlabeled_4s.mp4"
    ingest = start_ingest(pipe, topic, "--camera", f"crowd={clip}", "--no-realtime", "--max-frames", "5",
                          "--jpeg-quality", "95", "--max-frame-bytes", "60000")
    assert ingest.wait(60) == 0, ingest.log_tail()
    frames = frames_of(consume_all(kafka_bootstrap, topic, expect=5, timeout_s=60))
    assert [f.seq for f in frames] == list(range(5))
    for f in frames:
        assert len(f.jpeg) <= 60_000 and f.width < 1920 and f.width / f.height == pytest.approx(16 / 9, rel=0.01)
        jpeg_image(f)


def test_by_default_a_camera_is_capped_at_5_frames_per_second_of_one_session(kafka_bootstrap, pipe, make_topic,
                                                                             data_dir, rtsp_cameras):
    topic = make_topic("ingest-default-fps")
    urls = rtsp_cameras({"biden": data_dir / "videos" / "biden_2021_7s.mp4"})  # 30 fps
    ingest = start_ingest(pipe, topic, "--camera", f"biden={urls['biden']}", "--max-frames", "16",
                          "--max-width", "320")
    assert ingest.wait(60) == 0, ingest.log_tail()
    frames = frames_of(consume_all(kafka_bootstrap, topic, expect=16, timeout_s=30))
    assert [f.seq for f in frames] == list(range(16))
    (session,) = {f.session for f in frames}
    assert len(session) == 26 and f"camera biden: session {session}" in ingest.log_text()
    ts = [f.capture_ts for f in frames]
    rate = (16 - 2) / (ts[-1] - ts[1])  # from the second frame: the decoder may hand over the first ones together
    assert 4.5 <= rate <= 5.5, f"{rate:.2f} frames/s published by default from a 30 fps camera"
