"""Motion gating: which frames of a camera the detector may leave undetected, and which it may not."""
import numpy as np
import pytest

from services.detector.motion import THUMB, MotionGate, MotionSettings, changed_fraction, thumbnail

S = MotionSettings(min_changed=0.003, pixel_delta=10, force_every_s=1.0, track_hold_s=3.0, faces_every_s=0.6)


def still(v=100):
    return np.full((THUMB[1], THUMB[0]), v, np.int16)


def test_a_new_camera_is_detected_then_a_still_one_waits_for_the_forced_detection():
    gate = MotionGate(S)
    assert gate.needs_detection("c", 0.0, still())
    gate.detected("c", 0.0, still(), faces=0)
    assert not gate.needs_detection("c", 0.5, still())
    assert not gate.needs_detection("c", 0.99, still() + 9), "sensor noise under pixel_delta is no motion"
    assert gate.needs_detection("c", 1.0, still()), "forced after force_every_s"
    assert gate.needs_detection("c", -5.0, still()), "a clock that went back"


def test_motion_is_a_fraction_of_the_thumbnail_that_changed():
    gate = MotionGate(S)
    gate.detected("c", 0.0, still(), faces=0)
    moved = still()
    moved[:2, :3] = 200  # 6 of 2,304 pixels: 0.26%, under 0.3%
    assert not gate.needs_detection("c", 0.2, moved)
    moved[2, :2] = 200  # 8 pixels
    assert changed_fraction(moved, still(), 10) == pytest.approx(8 / moved.size)
    assert gate.needs_detection("c", 0.2, moved)


def test_new_faces_are_detected_every_frame_until_their_track_has_had_time():
    gate = MotionGate(S)
    gate.detected("c", 0.0, still(), faces=1)
    for t in (0.2, 1.5, 2.9):
        assert gate.needs_detection("c", t, still()), "a track is being voted on"
        gate.detected("c", t, still(), faces=1)
    assert not gate.needs_detection("c", 3.1, still()), "the face has been seen for track_hold_s: settled"
    gate.detected("c", 3.0, still(), faces=2)  # a second person
    assert gate.needs_detection("c", 3.5, still()), "more faces: a new track, held again"
    gate.detected("c", 3.6, still(), faces=0)
    assert not gate.needs_detection("c", 3.8, still())


def test_a_settled_face_standing_still_is_seen_every_faces_every_s():
    gate = MotionGate(S)
    gate.detected("c", 0.0, still(), faces=1)
    gate.detected("c", 3.0, still(), faces=1)  # seen for track_hold_s: settled
    assert not gate.needs_detection("c", 3.4, still())
    assert gate.needs_detection("c", 3.6, still()), "faces_every_s, not force_every_s, while faces are there"


def test_settings_per_camera_and_off_detects_everything():
    gate = MotionGate(S, {"door": MotionSettings(min_changed=0)})
    gate.detected("door", 0.0, still(), faces=0)
    gate.detected("hall", 0.0, still(), faces=0)
    assert gate.needs_detection("door", 0.1, still()) and not gate.enabled("door")
    assert not gate.needs_detection("hall", 0.1, still())


def test_forged_camera_ids_do_not_grow_the_state_without_bound():
    gate = MotionGate(S, max_cameras=10)
    for i in range(100):
        gate.detected(f"cam-{i}", 0.0, still(), faces=0)
    assert len(gate._cams) == 10


def test_a_thumbnail_is_the_frame_averaged_down_to_64x36():
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[:, 320:] = 255
    t = thumbnail(rgb)
    assert t.shape == (36, 64) and t.dtype == np.int16 and t[:, :32].max() == 0 and t[:, 32:].min() == 255
