"""Two towers, one descriptor (pure logic; the real towers are tests/data/test_mobilefacenet_port.py and the
end-to-end tests): the fused cosine is the weighted mean of the towers' cosines, the detector sends one crop
per tower, the embedder refuses a face that carries the wrong number, and faces/v3 reads v2."""
import msgpack
import numpy as np
import pytest
import torch

from services.detector.stage import Gates, make_process as detector_process
from services.embedder.stage import make_process as embedder_process
from shared.schemas import DetectedFace, Frame, FrameFaces, SchemaError
from shared.stage import InvalidMessage
from shared.vision.align import ARCFACE_112, DLIB_150
from shared.vision.checkpoint import tower_inputs
from shared.vision.nets.fused import FusedTowers
from tests.unit.test_stages import FakeFace, crop_jpeg, jpeg

TOWERS = [{"arch": "scratch_cnn", "arch_config": {"input_size": 32, "embedding_dim": 8, "width": 4},
           "embedding_dim": 8},
          {"arch": "scratch_cnn", "arch_config": {"input_size": 48, "embedding_dim": 6, "width": 4},
           "embedding_dim": 6}]


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2), (3.0, 1.0), (0.0, 1.0)])
def test_the_fused_cosine_is_the_weighted_mean_of_the_towers_cosines(weights):
    torch.manual_seed(0)
    net = FusedTowers(TOWERS, weights).eval()
    xs = [torch.randn(5, 3, 32, 32), torch.randn(5, 3, 48, 48)]
    with torch.no_grad():
        ds = net.tower_descriptors(xs)
        f = net.fuse(ds)
    w = np.array(weights) / sum(weights)
    want = w[0] * (ds[0] @ ds[0].T).numpy() + w[1] * (ds[1] @ ds[1].T).numpy()
    assert f.shape == (5, 14)
    np.testing.assert_allclose(f.norm(dim=1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose((f @ f.T).numpy(), want, atol=1e-6)


def test_a_fusion_head_starts_as_the_fixed_fusion():
    torch.manual_seed(0)
    fixed, head = FusedTowers(TOWERS, (0.6, 0.4)), FusedTowers(TOWERS, (0.6, 0.4), projection=True)
    head.load_state_dict(fixed.state_dict(), strict=False)
    ds = [torch.nn.functional.normalize(torch.randn(4, d), dim=1) for d in (8, 6)]
    torch.testing.assert_close(head.fuse(ds), fixed.fuse(ds))


@pytest.mark.parametrize("weights", [(0.0, 0.0), (-1.0, 2.0), (float("nan"), 1.0), (1.0,)])
def test_weights_that_cannot_fuse_are_refused(weights):
    with pytest.raises(ValueError):
        FusedTowers(TOWERS, weights)


def test_a_fused_checkpoint_names_every_tower_input_without_torch():
    ckpt = {"arch": "fused", "input_size": 150, "template": DLIB_150.to_dict(),
            "arch_config": {"towers": [{"arch": "faceapi_resnet128", "input_size": 150, "template": DLIB_150.to_dict()},
                                       {"arch": "mobilefacenet", "input_size": 112,
                                        "template": ARCFACE_112.to_dict()}], "weights": [1, 1]}}
    got = tower_inputs(ckpt)
    assert [t["template"] for t in got] == [DLIB_150, ARCFACE_112] and [t["input_size"] for t in got] == [150, 112]
    assert got[1]["input_norm"] == {"mean": [127.5] * 3, "std": [128.0] * 3}


class TwoCropFace(FakeFace):
    @property
    def crops(self):
        return (self.crop, np.full((112, 112, 3), 7, np.uint8))


def test_the_detector_sends_one_crop_per_tower():
    face = TwoCropFace((0, 0, 90, 90), 0.99, 90, 100)
    process = detector_process(lambda rgb: [face], Gates(40, 0.9, 10.0, 5), "faces", max_frame_age_s=5,
                               clock=lambda: 100.0)
    (out,), = process([Frame("cam", 0, 99.0, 64, 48, jpeg())])
    ff = FrameFaces.decode(out.value)
    assert len(ff.faces) == 1 and len(ff.faces[0].more_crops) == 1


def two_tower_frame(n_more: int, size2: int = 112) -> FrameFaces:
    faces = tuple(DetectedFace((0.0, 0.0, 10.0, 10.0), 0.99, (0.0,) * 10, crop_jpeg(i, 150), 10.0, 50.0,
                               tuple(crop_jpeg(i, size2) for _ in range(n_more))) for i in range(2))
    return FrameFaces("cam", 0, 1.0, 64, 48, faces)


def test_the_embedder_gives_each_tower_its_own_crops_in_one_call():
    calls = []

    def embed(crops):
        calls.append([c.shape for c in crops])
        return np.eye(len(crops[0]), 4, dtype=np.float32)

    (out,) = embedder_process(embed, [150, 112], "pair", "embeddings")([two_tower_frame(1)])
    assert calls == [[(2, 150, 150, 3), (2, 112, 112, 3)]] and len(out) == 1


@pytest.mark.parametrize("n_more,size2,why", [(0, 112, "need 2"), (2, 112, "need 2"), (1, 150, "disagree")])
def test_a_face_with_the_wrong_crops_for_the_towers_is_refused(n_more, size2, why):
    (got,) = embedder_process(lambda c: np.zeros((len(c[0]), 4), np.float32), [150, 112], "pair",
                              "embeddings")([two_tower_frame(n_more, size2)])
    assert isinstance(got, InvalidMessage) and why in got.reason


def test_faces_v3_round_trips_more_crops_and_reads_v2_as_none():
    ff = two_tower_frame(1)
    assert FrameFaces.decode(ff.encode()) == ff and msgpack.unpackb(ff.encode())["v"] == 3
    o = msgpack.unpackb(ff.encode())
    o["v"] = 2
    for f in o["faces"]:
        del f["more_crops"]
    assert all(f.more_crops == () for f in FrameFaces.decode(msgpack.packb(o)).faces)


@pytest.mark.parametrize("bad", ["x", [1, 2], [b"a"] * 5])
def test_forged_more_crops_are_a_schema_error(bad):
    o = msgpack.unpackb(two_tower_frame(1).encode())
    o["faces"][0]["more_crops"] = bad
    with pytest.raises(SchemaError):
        FrameFaces.decode(msgpack.packb(o))
