"""The product, end to end: RTSP cameras -> ingest -> detector -> embedder -> matcher -> identity events,
on the real broker and Redis, with the real model and the people of ../shared/data/videos/enroll enrolled.

One pipeline (detector, embedder, matcher) serves every clip of this module; each clip is a camera of its
own id, and its events are told apart by camera id. Topics, groups and the gallery prefix are unique to
the run, so nothing here touches the demo's or another run's data.
"""
from __future__ import annotations

import pytest

from tests.integration.conftest import play

pytestmark = pytest.mark.integration


def test_biden_clip_names_joe_biden_and_nobody_else(pipeline, data_dir):
    events = play(pipeline, data_dir / "videos/biden_2021_7s.mp4", "cam-biden")
    names = {e.identity for e in events}
    assert "Joe_Biden" in names, events
    assert names <= {"Joe_Biden", None}, events
    for e in events:  # every event carries the documented fields, with capture times in order
        assert e.first_seen <= e.last_seen <= e.event_ts and e.threshold > 0 and e.model_version


def test_hamilton_clip_names_lin_manuel_miranda_and_no_one_absent(pipeline, data_dir):
    events = play(pipeline, data_dir / "videos/hamilton_lin_manuel_miranda_9s.mp4", "cam-hamilton")
    names = {e.identity for e in events}
    assert "Lin_Manuel_Miranda" in names, events
    # Alex Lacamoire and Barack Obama are in the clip (hard cases); Joe Biden is not
    assert names <= {"Lin_Manuel_Miranda", "Alex_Lacamoire", "Barack_Obama", None}, events


def test_crowd_clip_names_no_enrolled_person(pipeline, data_dir):
    events = play(pipeline, data_dir / "videos/crowd_royal_opera_house_unlabeled_4s.mp4", "cam-crowd")
    assert events, "the crowd clip gave no event at all: no track was decided, so 'nobody named' proves nothing"
    assert all(e.identity is None for e in events), [e for e in events if e.identity]


def test_hamilton_at_its_native_30_fps_with_one_detector_still_names_lin_manuel_miranda(pipeline, data_dir):
    """Every frame of the clip (--fps 0: 30 frames/s), several times what one detector holds: the pool sheds
    by keeping each camera's newest frame, so tracks still gather faces (it once published no event at all)."""
    det = next(s for s in pipeline.pipe.services if s.name.startswith("detector"))
    skipped_before = det.metric("facestream_frames_shed_total", camera_id="cam-hamilton-30")
    events = play(pipeline, data_dir / "videos/hamilton_lin_manuel_miranda_9s.mp4", "cam-hamilton-30", fps=0)
    names = {e.identity for e in events}
    assert "Lin_Manuel_Miranda" in names, events
    assert names <= {"Lin_Manuel_Miranda", "Alex_Lacamoire", "Barack_Obama", None}, events
    assert det.metric("facestream_frames_shed_total", camera_id="cam-hamilton-30") > skipped_before, \
        "at 30 frames/s one detector is behind: it must have shed frames"
