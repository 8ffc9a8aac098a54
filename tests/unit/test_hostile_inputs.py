"""What a hostile tester sent after the first round of hardening (a review of this change), each refused in
one place, with the reason: pure functions and stand-ins, no server."""
import json

import numpy as np
import pytest

from services.detector.stage import Gates, make_process as detector_process
from services.matcher.index import GalleryIndex
from services.matcher.stage import Matcher
from services.matcher.tracks import TrackPolicy
from shared.config import ConfigError, StageConfig, load
from shared.redact import mask_url
from shared.schemas import EmbeddedFace, Frame, FrameEmbeddings, IdentityEvent, SchemaError, dead_letter
from shared.stage import InvalidMessage
from shared.vision.images import ImageRefused, decode_jpeg
from tests.fuzz_messages import jpeg


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    bomb = jpeg(64, 48) + b"\xff\xda\x00\x02" * 5000  # its own scan + 5000: each costs a pass over the image
    with pytest.raises(ImageRefused, match="5001 scans, over the limit of 64"):
        decode_jpeg(bomb, max_pixels=3840 * 2160)


def test_an_unknown_event_from_an_empty_gallery_is_valid_json():
    ev = IdentityEvent("e", "cam", "t", None, float("-inf"), 0.9, 1.0, 2.0, (0, 0, 1, 1), "m", 8, 3.0)
    raw = ev.encode()
    assert json.loads(raw)["score"] == -1.0 and IdentityEvent.decode(raw).score == -1.0


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"schema":"identity-event/v1","score":1' + b"0" * 400 + b"}"])
def test_an_event_that_breaks_the_json_parser_is_a_schema_error(raw):
    with pytest.raises(SchemaError):
        IdentityEvent.decode(raw)


def test_nan_is_refused_by_every_bounded_setting():
    with pytest.raises(ConfigError, match="not a finite number"):
        load(StageConfig, ["--max-invalid-ratio", "nan"], {})
    with pytest.raises(ConfigError, match="not a finite number"):
        load(StageConfig, [], {"FACESTREAM_LIVENESS_TIMEOUT_S": "inf"})


def test_a_camera_id_that_would_grow_state_without_bound_is_refused():
    with pytest.raises(SchemaError, match="camera_id must be 1 to 128 printable"):
        Frame.decode(Frame("c" * 129, 0, 1.0, 64, 48, jpeg(64, 48)).encode())
    with pytest.raises(SchemaError, match="camera_id"):
        Frame.decode(Frame("cam\n", 0, 1.0, 64, 48, jpeg(64, 48)).encode())


def test_a_dead_letter_whose_reason_escapes_to_many_bytes_is_cut_not_raised():
    raw = dead_letter("invalid: " + "😀" * 5000, "matcher", "embeddings", 0, 1, "😀".encode() * 2000,
                      b"x" * 100_000, 1.0, max_bytes=65_536)
    assert len(raw) <= 65_536 and json.loads(raw)["value_truncated"] is True


def test_frames_from_the_future_are_refused_by_the_detector_and_the_matcher():
    process = detector_process(lambda rgb: [], Gates(40, 0.9, 10.0, 2), "faces", max_frame_age_s=5,
                               clock=lambda: 1000.0)
    (res,) = process([Frame("cam", 0, 1e18, 64, 48, jpeg(64, 48))])
    assert isinstance(res, InvalidMessage) and "in the future" in res.reason
    v = np.zeros(3, np.float32)
    v[0] = 1
    m = Matcher(lambda: GalleryIndex.build({"ann": v[None]}, model_version="m"), 0.8, "m", "ev", TrackPolicy(),
                clock=lambda: 1000.0, embedding_dim=3)
    (res,) = m.process([FrameEmbeddings("cam", 0, 1e18, 640, 360, "m", (EmbeddedFace((0, 0, 9, 9), 0.99, v),))])
    assert isinstance(res, InvalidMessage) and "in the future" in res.reason


def test_the_matcher_forgets_a_quiet_cameras_state():
    v = np.zeros(3, np.float32)
    v[0] = 1
    now = [10.0]
    m = Matcher(lambda: GalleryIndex.build({}, model_version="m"), 0.8, "m", "ev", TrackPolicy(max_gap_s=1.0),
                clock=lambda: now[0], embedding_dim=3)
    m.process([FrameEmbeddings(f"cam-{i}", 0, 10.0, 640, 360, "m", ()) for i in range(100)])
    assert len(m.cameras) == 100
    now[0] = 20.0
    m.idle()
    assert m.cameras == {}


def test_one_person_of_another_dimension_does_not_stop_the_gallery_rebuild():
    idx = GalleryIndex.build({"ann": np.eye(1, 4, dtype=np.float32), "bob": np.eye(1, 4, 1, dtype=np.float32),
                              "odd": np.ones((1, 64), np.float32)})
    assert idx.names == ("ann", "bob") and idx.matrix.shape == (2, 4)


@pytest.mark.parametrize("url, secret", [("rtsp://h/s?auth_token=abc123", "abc123"),
                                         ("https://h/v?client_secret=s3cr3t&x=1", "s3cr3t"),
                                         ("http://h/o?X-Amz-Signature=deadbeef", "deadbeef")])
def test_secret_query_values_are_masked_by_their_name_s_ending(url, secret):
    assert secret not in mask_url(url)
