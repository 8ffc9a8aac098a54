"""Property-based fuzzing of every stage's decode + process (the loop's `shared.stage.handle`), with
stand-ins for MTCNN and the model: no input, however hostile, raises out of the stage, and a valid
message beside it is processed as if it were alone. The real MTCNN and model: tests/data/test_fuzz_real.py."""
import numpy as np
from hypothesis import given

from services.detector.stage import Gates, make_process as detector_process
from services.embedder.stage import make_process as embedder_process
from services.matcher.index import GalleryIndex
from services.matcher.stage import Matcher
from services.matcher.tracks import TrackPolicy
from shared.schemas import Frame, FrameEmbeddings, FrameFaces
from shared.stage import InvalidMessage, Stage
from tests.fuzz_messages import FUZZ, check_outcomes, hostile, valid_embeddings, valid_faces, valid_frame


class Face:
    """What FaceDetector.detect returns, for a stand-in detector that finds one face in any big-enough image."""

    def __init__(self, rgb: np.ndarray):
        self.box, self.prob, self.face_size, self.blur = (0.0, 0.0, 50.0, 50.0), 0.99, 50.0, 100.0
        self.landmarks = np.zeros((5, 2), np.float32)
        self.crop = np.ascontiguousarray(np.resize(rgb, (150, 150, 3)))


def fake_detect(rgb: np.ndarray) -> list:
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    return [Face(rgb)] if min(rgb.shape[:2]) >= 40 else []


def fake_embed(crops: np.ndarray) -> np.ndarray:
    assert crops.shape[1:] == (150, 150, 3)
    v = np.zeros((len(crops), 128), np.float32)
    v[:, 0] = 1
    return v


GATES = Gates(min_face_size=40, min_prob=0.9, min_sharpness=10.0, max_faces=4)
DETECTOR = Stage("detector", "frames", Frame.decode,
                 detector_process(fake_detect, GATES, "faces", max_frame_age_s=0, max_pixels=3840 * 2160))
EMBEDDER = Stage("embedder", "faces", FrameFaces.decode, embedder_process(fake_embed, 150, "m1", "embeddings"))


def matcher_stage() -> Stage:
    v = np.zeros((1, 128), np.float32)
    v[0, 0] = 1
    index = GalleryIndex.build({"ann": v}, model_version="m1")
    m = Matcher(lambda: index, 0.9, "m1", "events", TrackPolicy(), embedding_dim=128)
    return Stage("matcher", "embeddings", FrameEmbeddings.decode, m.process, m.idle)


def assert_valid_one_survives(results: list) -> None:
    assert isinstance(results[-1], list), f"the valid message beside a hostile one was refused: {results[-1]}"


@FUZZ
@given(raw=hostile(valid_frame()))
def test_no_frame_stops_the_detector(raw):
    results = check_outcomes(DETECTOR, [raw, valid_frame(1, camera="other")])
    assert_valid_one_survives(results)
    assert FrameFaces.decode(results[-1][0].value).status == "ok"


@FUZZ
@given(raw=hostile(valid_faces()))
def test_no_faces_message_stops_the_embedder(raw):
    results = check_outcomes(EMBEDDER, [raw, valid_faces(1)])
    assert_valid_one_survives(results)
    assert len(FrameEmbeddings.decode(results[-1][0].value).faces) == 2


@FUZZ
@given(raw=hostile(valid_embeddings()))
def test_no_embeddings_message_stops_the_matcher(raw):
    results = check_outcomes(matcher_stage(), [raw, valid_embeddings(1, camera="other")])
    assert_valid_one_survives(results)


def test_the_named_regressions_each_cost_one_dead_letter():
    """The inputs that stopped a stage before, as a tester found them (issue 11)."""
    import msgpack

    from tests.fuzz_messages import claim_size, jpeg

    garbage = bytes(np.random.default_rng(0).integers(0, 256, 1_000_000, np.uint8))
    frame_bomb = Frame("cam", 0, 1.0, 30000, 30000, claim_size(jpeg(64, 64), 30000, 30000)).encode()
    tiny = Frame("cam2", 1, 1.0, 20, 20, jpeg(20, 20)).encode()
    lone_bad_crop = msgpack.unpackb(valid_faces(2, n=2), raw=False)
    lone_bad_crop["faces"][1]["crop"] = b"\xff\xd8 not a crop"
    empty_crop = msgpack.unpackb(valid_faces(3, n=1), raw=False)
    empty_crop["faces"][0]["crop"] = b""
    crop_bomb = msgpack.unpackb(valid_faces(4, n=1), raw=False)
    crop_bomb["faces"][0]["crop"] = claim_size(jpeg(150, 150), 16000, 16000)
    d = check_outcomes(DETECTOR, [garbage, frame_bomb, tiny, valid_frame(5, camera="z")])
    assert [type(r).__name__ for r in d] == ["InvalidMessage", "InvalidMessage", "list", "list"]
    assert "over the limit" in d[1].reason and FrameFaces.decode(d[2][0].value).faces == ()
    e = check_outcomes(EMBEDDER, [msgpack.packb(x) for x in (lone_bad_crop, empty_crop, crop_bomb)] + [valid_faces(6)])
    assert [type(r).__name__ for r in e] == ["InvalidMessage"] * 3 + ["list"]
    assert "16000x16000" in e[2].reason
    m = check_outcomes(matcher_stage(), [valid_embeddings(7, dim=64), valid_embeddings(8)])
    assert isinstance(m[0], InvalidMessage) and "64-d" in m[0].reason and m[1] == []
