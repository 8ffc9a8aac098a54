"""The fuzz of tests/unit/test_fuzz_stages.py through the real MTCNN and the real embedding model
(needs `make models`): hostile frames and crops never raise out of the detector or the embedder."""
import pytest
from hypothesis import given, settings

from services.detector.stage import Gates, make_process as detector_process
from services.embedder.stage import make_process as embedder_process
from shared.schemas import Frame, FrameEmbeddings, FrameFaces
from shared.stage import Stage
from tests.fuzz_messages import FUZZ, check_outcomes, default_model_sizes, hostile, valid_faces, valid_frame

SIZES = default_model_sizes()  # a fused default: every face carries each tower's crop

FEW = settings(FUZZ, max_examples=40)  # MTCNN and the ResNet cost tens of ms per example on the CPU


@pytest.fixture(scope="module")
def detector_stage():
    from shared.vision.detect import FaceDetector

    det = FaceDetector(min_face_size=20)
    gates = Gates(min_face_size=20, min_prob=0.0, min_sharpness=0.0, max_faces=8)
    return Stage("detector", "frames", Frame.decode, detector_process(det.detect, gates, "faces", max_frame_age_s=0))


@pytest.fixture(scope="module")
def embedder_stage():
    from shared.vision.embed import EmbeddingModel

    model = EmbeddingModel.load(device="cpu")
    return Stage("embedder", "faces", FrameFaces.decode,
                 embedder_process(model.embed, list(SIZES), model.model_version, "embeddings"))


@FEW
@given(raw=hostile(valid_frame(w=96, h=72)))
def test_no_frame_stops_the_real_detector(detector_stage, raw):
    results = check_outcomes(detector_stage, [raw, valid_frame(1, w=96, h=72, camera="other")])
    assert isinstance(results[-1], list)


@FEW
@given(raw=hostile(valid_faces(size=SIZES[0], more=SIZES[1:])))
def test_no_faces_message_stops_the_real_embedder(embedder_stage, raw):
    results = check_outcomes(embedder_stage, [raw, valid_faces(1, size=SIZES[0], more=SIZES[1:])])
    assert isinstance(results[-1], list) and len(FrameEmbeddings.decode(results[-1][0].value).faces) == 2
