"""The detector's and embedder's batch functions with stand-ins for MTCNN and the model (pure logic);
the real MTCNN and model are exercised by test_faces, test_faceapi_resnet and the end-to-end tests."""
from dataclasses import dataclass, field

import cv2
import numpy as np

from services.detector.stage import Gates, make_process as detector_process
from services.embedder.stage import make_process as embedder_process
from shared.stage import InvalidMessage
from shared.schemas import DetectedFace, Frame, FrameEmbeddings, FrameFaces


def jpeg(h=48, w=64) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@dataclass
class FakeFace:
    box: tuple
    prob: float
    face_size: float
    blur: float
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))
    crop: np.ndarray = field(default_factory=lambda: np.zeros((150, 150, 3), np.uint8))


GATES = Gates(min_face_size=40, min_prob=0.9, min_sharpness=10.0, max_faces=2)
FACES = [FakeFace((0, 0, 50, 50), 0.99, 50, 100), FakeFace((0, 0, 30, 30), 0.99, 30, 100),  # too small
         FakeFace((0, 0, 60, 60), 0.5, 60, 100), FakeFace((0, 0, 45, 45), 0.99, 45, 2.0),  # unsure, blurred
         FakeFace((0, 0, 90, 90), 0.95, 90, 50), FakeFace((0, 0, 41, 41), 0.99, 41, 50)]  # 3rd good: over max


def test_detector_gates_faces_and_keeps_the_largest():
    process = detector_process(lambda rgb: FACES, GATES, "faces", max_frame_age_s=5, clock=lambda: 100.0)
    (out,), = process([Frame("cam", 3, 99.0, 64, 48, jpeg())])
    ff = FrameFaces.decode(out.value)
    assert (out.topic, out.key, ff.seq, ff.status) == ("faces", b"cam", 3, "ok")
    assert [f.face_size for f in ff.faces] == [90, 50]


def test_detector_marks_old_frames_stale_without_reading_them():
    def never(rgb):
        raise AssertionError("a stale frame must not be run through MTCNN")

    process = detector_process(never, GATES, "faces", max_frame_age_s=2, clock=lambda: 100.0)
    (out,), = process([Frame("cam", 0, 97.0, 64, 48, b"\xff\xd8 corrupt but never decoded")])
    ff = FrameFaces.decode(out.value)
    assert ff.status == "stale" and ff.faces == ()


def test_detector_rejects_a_corrupt_jpeg_as_invalid():
    process = detector_process(lambda rgb: [], GATES, "faces", max_frame_age_s=0)
    (refused,) = process([Frame("cam", 0, 1.0, 64, 48, b"\xff\xd8\xff\xe0 truncated")])
    assert isinstance(refused, InvalidMessage) and "not a decodable JPEG" in refused.reason


def crop_jpeg(v: int, size=150) -> bytes:
    return cv2.imencode(".jpg", np.full((size, size, 3), v, np.uint8))[1].tobytes()


def ff(seq, n, status="ok", size=150):
    faces = tuple(DetectedFace((0.0, 0.0, 10.0, 10.0), 0.99, (0.0,) * 10, crop_jpeg(10 * i, size), 10.0, 50.0)
                  for i in range(n))
    return FrameFaces("cam", seq, 1.0, 64, 48, faces, status=status)


def test_embedder_makes_one_model_call_and_one_output_per_live_frame():
    calls = []

    def embed(crops):
        calls.append(crops.shape)
        v = np.zeros((len(crops), 4), np.float32)
        v[np.arange(len(crops)), 0] = 1
        return v

    process = embedder_process(embed, 150, "m1", "embeddings")
    outs = process([ff(0, 2), ff(1, 0), ff(2, 1, status="stale"), ff(3, 3)])
    assert calls == [(5, 150, 150, 3)], "all crops of the batch in one forward pass"
    assert [len(o) for o in outs] == [1, 1, 0, 1], "stale frames end here; frames without faces go on"
    decoded = [FrameEmbeddings.decode(o[0].value) for o in outs if o]
    assert [len(d.faces) for d in decoded] == [2, 0, 3] and {d.model_version for d in decoded} == {"m1"}


def test_embedder_rejects_crops_of_another_size():
    process = embedder_process(lambda c: np.zeros((len(c), 4), np.float32), 150, "m1", "embeddings")
    (refused,) = process([ff(0, 1, size=112)])
    assert isinstance(refused, InvalidMessage) and "disagree on the checkpoint" in refused.reason


def test_a_bad_frame_among_good_ones_is_refused_alone_and_mtcnn_runs_once_per_frame():
    seen = []

    def detect(rgb):
        seen.append(rgb.shape)
        return FACES[:1]

    process = detector_process(detect, GATES, "faces", max_frame_age_s=0)
    frames = [Frame("cam0", 0, 1.0, 64, 48, jpeg()), Frame("cam1", 0, 1.0, 64, 48, b"\xff\xd8 corrupt"),
              Frame("cam2", 0, 1.0, 64, 48, jpeg())]
    results = process(frames)
    assert isinstance(results[1], InvalidMessage) and [len(r) for r in (results[0], results[2])] == [1, 1]
    assert len(seen) == 2, "each good frame detected once, the corrupt one never"


def test_a_frame_with_a_bad_crop_is_refused_and_the_others_share_one_model_call():
    calls = []

    def embed(crops):
        calls.append(len(crops))
        return np.eye(len(crops), 4, dtype=np.float32)

    process = embedder_process(embed, 150, "m1", "embeddings")
    bad = FrameFaces("cam", 1, 1.0, 64, 48, (DetectedFace((0.0, 0.0, 1.0, 1.0), 0.9, (0.0,) * 10, b"junk", 1.0, 1.0),))
    results = process([ff(0, 2), bad, ff(2, 1)])
    assert isinstance(results[1], InvalidMessage) and "not a decodable JPEG" in results[1].reason
    assert calls == [3], "the good frames' three crops in one forward pass"
    assert [len(FrameEmbeddings.decode(r[0].value).faces) for r in (results[0], results[2])] == [2, 1]


def test_a_pool_behind_a_camera_detects_its_newest_frame_and_marks_the_older_ones_skipped():
    from shared import metrics

    seen = []

    def detect(rgb):
        seen.append(rgb.shape)
        return FACES[:1]

    process = detector_process(detect, GATES, "faces", max_frame_age_s=10, clock=lambda: 100.0)
    frames = [Frame("a", 0, 99.0, 64, 48, jpeg()), Frame("b", 7, 99.1, 64, 48, jpeg()),
              Frame("a", 1, 99.2, 64, 48, jpeg()), Frame("a", 2, 99.3, 64, 48, jpeg()),
              Frame("old", 0, 80.0, 64, 48, jpeg())]
    before = metrics.FRAMES_SHED.labels("detector", "a")._value.get()
    out = [FrameFaces.decode(r[0].value) for r in process(frames)]
    assert [(f.camera_id, f.seq, f.status) for f in out] == [
        ("a", 0, "skipped"), ("b", 7, "ok"), ("a", 1, "skipped"), ("a", 2, "ok"), ("old", 0, "stale")]
    assert len(seen) == 2, "one detection per camera: the newest frames of a and b"
    assert metrics.FRAMES_SHED.labels("detector", "a")._value.get() == before + 2


def test_when_the_newest_frame_is_corrupt_the_next_newest_is_detected():
    process = detector_process(lambda rgb: FACES[:1], GATES, "faces", max_frame_age_s=0)
    res = process([Frame("a", 0, 1.0, 64, 48, jpeg()), Frame("a", 1, 2.0, 64, 48, b"\xff\xd8 corrupt")])
    assert isinstance(res[1], InvalidMessage) and FrameFaces.decode(res[0][0].value).status == "ok"


def test_a_frame_whose_header_is_over_the_pixel_limit_is_refused_unread():
    def never(rgb):
        raise AssertionError("decoded a frame over the limit")

    process = detector_process(never, GATES, "faces", max_frame_age_s=0, max_pixels=32 * 32)
    (res,) = process([Frame("a", 0, 1.0, 64, 48, jpeg())])
    assert isinstance(res, InvalidMessage) and "64x48 is 3,072 pixels, over the limit of 1,024" in res.reason


def test_any_exception_of_the_detector_costs_that_frame_only():
    def detect(rgb):
        if rgb.shape[0] == 20:
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return FACES[:1]

    process = detector_process(detect, GATES, "faces", max_frame_age_s=0)
    res = process([Frame("a", 0, 1.0, 20, 20, jpeg(20, 20)), Frame("b", 0, 1.0, 64, 48, jpeg())])
    assert isinstance(res[0], InvalidMessage) and res[0].reason.startswith("RuntimeError: torch.cat()")
    assert FrameFaces.decode(res[1][0].value).status == "ok"


def test_a_crop_bomb_is_refused_by_its_header_without_decoding():
    from tests.fuzz_messages import claim_size

    calls = []
    process = embedder_process(lambda c: calls.append(len(c)) or np.eye(len(c), 4, dtype=np.float32), 150, "m1", "e")
    bomb = FrameFaces("cam", 0, 1.0, 64, 48, (DetectedFace((0.0, 0.0, 1.0, 1.0), 0.9, (0.0,) * 10,
                                                           claim_size(crop_jpeg(0), 16000, 16000), 1.0, 1.0),))
    empty = FrameFaces("cam", 1, 1.0, 64, 48, (DetectedFace((0.0, 0.0, 1.0, 1.0), 0.9, (0.0,) * 10, b"", 1.0, 1.0),))
    res = process([bomb, empty, ff(2, 1)])
    assert "16000x16000 where 150x150 is required" in res[0].reason
    assert isinstance(res[1], InvalidMessage) and calls == [1]


def test_the_frames_session_travels_through_the_detector_and_the_embedder():
    process = detector_process(lambda rgb: FACES[:1], GATES, "faces", max_frame_age_s=0)
    (out,), = process([Frame("cam", 0, 1.0, 64, 48, jpeg(), session="01JSESSION")])
    faces = FrameFaces.decode(out.value)
    assert faces.session == "01JSESSION"
    emb = embedder_process(lambda c: np.eye(len(c), 4, dtype=np.float32), 150, "m1", "e")
    (eo,), = emb([FrameFaces("cam", 0, 1.0, 64, 48, (), session="01JSESSION")])
    assert FrameEmbeddings.decode(eo.value).session == "01JSESSION"
