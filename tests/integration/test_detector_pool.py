"""Two detector processes share the frames of a multi-partition topic; one is SIGKILLed mid-run; every
published frame is still accounted for (processed, or dropped as stale) in the faces topic."""
from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest

from services.local_pipeline import LocalPipeline
from shared.schemas import Frame, FrameFaces
from tests.conftest import consume_all
from shared.kafka_admin import create_topics, delete_topics

pytestmark = pytest.mark.integration
CAMERAS = [f"pool-cam-{i}" for i in range(6)]  # keys spread over the 4 partitions


def test_two_detectors_share_partitions_and_a_kill_loses_no_frame(kafka_bootstrap, data_dir, tmp_path):
    run = uuid.uuid4().hex[:8]
    frames, faces = f"pool-frames-{run}", f"pool-faces-{run}"
    create_topics(kafka_bootstrap, {frames: 4, faces: 4})
    pipe = LocalPipeline(tmp_path, env={"FACESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap})
    group = f"pool-{run}"
    try:
        args = ("--frames-topic", frames, "--faces-topic", faces, "--group-id", group, "--max-batch-size", "2")
        a = pipe.start("detector", *args, wait_ready=False)
        b = pipe.start("detector", *args, wait_ready=False)
        pipe.wait_ready(a)
        pipe.wait_ready(b)
        deadline = time.monotonic() + 60  # both members join, then the group splits the partitions
        while True:
            held = (a.metric("facestream_assigned_partitions"), b.metric("facestream_assigned_partitions"))
            if sum(held) == 4 and min(held) >= 1:
                break
            assert time.monotonic() < deadline, f"partitions never split between the two detectors: {held}"
            time.sleep(0.5)

        clip = data_dir / "videos/obama_whcd2016_4s.mp4"  # 60 frames at 15 fps
        cams = [x for c in CAMERAS for x in ("--camera", f"{c}={clip}")]
        ingest = pipe.start("ingest", *cams, "--frames-topic", frames, "--fps", "5", "--max-width", "640",
                            wait_ready=False)
        deadline = time.monotonic() + 120
        while a.metric("facestream_messages_in_total") < 4:  # a is mid-run
            assert time.monotonic() < deadline, "detector a never got frames"
            time.sleep(0.2)
        pipe.kill(a)
        # the broker notices the dead member when its session (10 s) expires, then b gets every partition
        deadline = time.monotonic() + 60
        while b.metric("facestream_assigned_partitions") != 4:
            assert time.monotonic() < deadline, "the survivor never took over the dead member's partitions"
            time.sleep(0.5)
        assert ingest.proc.wait(timeout=120) == 0, ingest.log_tail()
        assert pipe.wait_drained(quiet_s=5), "the surviving detector did not drain the topic"
    finally:
        pipe.stop()
    published = defaultdict(set)
    for r in consume_all(kafka_bootstrap, frames, timeout_s=10):
        f = Frame.decode(r.value)
        published[f.camera_id].add(f.seq)
    accounted = defaultdict(set)
    statuses = defaultdict(int)
    for r in consume_all(kafka_bootstrap, faces, timeout_s=10):
        ff = FrameFaces.decode(r.value)
        accounted[ff.camera_id].add(ff.seq)
        statuses[ff.status] += 1
    delete_topics(kafka_bootstrap, [frames, faces])
    assert set(published) == set(CAMERAS)
    for cam in CAMERAS:
        assert published[cam] == set(range(len(published[cam]))), f"{cam}: ingest published a gap"
        missing = published[cam] - accounted[cam]
        assert not missing, f"{cam}: frames neither processed nor dropped as stale: {sorted(missing)}"
    assert statuses["ok"] > 0
