"""The detector's settings for landmark refinement and motion gating: per camera, and refused when malformed."""
import pytest

from services.detector.main import DetectorConfig, motion_cameras
from shared.config import ConfigError, parse


def cfg(*argv, env=None):
    return parse(DetectorConfig, list(argv), env or {})[0]


def test_defaults_refine_with_onet_and_gate_on_motion():
    c = cfg()
    assert c.refine == "onet" and c.motion_min_changed == 0.003 and c.motion_force_every_s == 2.0
    assert c.motion_faces_every_s == 0.6, "a still person's track must not end on one missed face (2 s gap)"
    assert motion_cameras(c) == {}


def test_a_camera_gets_its_own_gate_and_zero_turns_it_off():
    c = cfg("--motion-camera", "lobby=0", "--motion-camera", "gate-2=0.01:5", "--motion-track-hold-s", "2")
    per = motion_cameras(c)
    assert per["lobby"].min_changed == 0 and not per["lobby"].enabled
    assert (per["gate-2"].min_changed, per["gate-2"].force_every_s, per["gate-2"].track_hold_s) == (0.01, 5.0, 2.0)


@pytest.mark.parametrize("spec", ["lobby", "=0.1", "lobby=x", "lobby=2", "lobby=0.1:1:2", "lobby=0.1:-1"])
def test_a_malformed_camera_gate_stops_the_service_at_start_with_the_setting_named(spec):
    with pytest.raises(ConfigError, match="motion_camera"):
        cfg("--motion-camera", spec)


def test_refinement_modes_are_checked():
    assert cfg("--refine-landmarks", "cascade").refine == "cascade"
    with pytest.raises(ConfigError, match="refine_landmarks"):
        cfg("--refine-landmarks", "twice")
    assert cfg(env={"FACESTREAM_REFINE_LANDMARKS": "off"}).refine == "off"
    # the setting was a boolean: its old values still start the service, meaning on (onet) and off
    assert cfg(env={"FACESTREAM_REFINE_LANDMARKS": "true"}).refine == "onet"
    assert cfg(env={"FACESTREAM_REFINE_LANDMARKS": "false"}).refine == "off"
