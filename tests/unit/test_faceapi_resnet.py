"""The face-api ResNet port: its structure, the weight conversion, and that it tells people apart."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint
from training.faceapi_resnet import (EXPECTED_BYTES, EXPECTED_TENSORS, MANIFEST_NAME, MEAN_RGB, WEIGHTS_NAME,
                                     ConvScale, FaceApiResNet, ResidualDown, load_tfjs_state_dict, preprocess,
                                     read_tfjs_tensors)

MODELS = checkpoint.REPO_ROOT / "models"
CONVERTED = MODELS / "faceapi_resnet128.pt"
TFJS_DIR = MODELS / "cache" / "face-api-1.7.15"
DATA = Path(os.environ.get("FACESTREAM_DATA", checkpoint.REPO_ROOT.parent / "shared" / "data"))
IMAGES = DATA / "face_recognition_examples"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make models` first", pytrace=False)
    return path


@pytest.fixture(scope="module")
def tfjs_files():
    return _need(TFJS_DIR / MANIFEST_NAME), _need(TFJS_DIR / WEIGHTS_NAME)


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(2)
    return checkpoint.build_model(checkpoint.load(_need(CONVERTED)))


def test_spatial_sizes_follow_face_api():
    """150 -> 72 (7x7/2) -> 35 (max-pool) -> 17 -> 8 -> 4 (3 padded) -> 2 (1 padded) -> 128."""
    m = FaceApiResNet().eval()
    sizes = {}
    for name in ("conv32_down", "conv32_3", "conv64_down", "conv128_down", "conv256_down", "conv256_down_out"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: sizes.__setitem__(name, o.shape[1:]))
    with torch.inference_mode():
        out = m(torch.zeros(2, 3, 150, 150))
    assert out.shape == (2, 128)
    assert sizes == {"conv32_down": (32, 72, 72), "conv32_3": (32, 35, 35), "conv64_down": (64, 17, 17),
                     "conv128_down": (128, 8, 8), "conv256_down": (256, 4, 4), "conv256_down_out": (256, 2, 2)}


def _constant_main_branch(block: ResidualDown, value: float) -> None:
    """Make the main branch output `value` everywhere (zero filters, the last scale's bias = value)."""
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.conv2.scale_bias.fill_(value)


def test_residual_down_pads_bottom_and_right():
    block = ResidualDown(4, 4)
    _constant_main_branch(block, 1.0)
    out = block(torch.zeros(1, 4, 8, 8))  # main branch 3x3, shortcut 4x4
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[..., :3, :3] == 1) and torch.all(out[..., 3, :] == 0) and torch.all(out[..., :, 3] == 0)


def test_residual_down_appends_zero_channels_and_relus_the_sum():
    block = ResidualDown(2, 4)
    _constant_main_branch(block, -0.25)
    out = block(torch.ones(1, 2, 7, 7))  # shortcut: average of ones = 1 on channels 0-1, 0 on channels 2-3
    assert out.shape == (1, 4, 3, 3)
    assert torch.allclose(out[:, :2], torch.full((1, 2, 3, 3), 0.75))
    assert torch.all(out[:, 2:] == 0)  # -0.25 + 0 through the ReLU


def test_conv_scale_is_conv_then_affine():
    layer = ConvScale(1, 1, 1, 1, 0, relu=False)
    with torch.no_grad():
        layer.conv.weight.fill_(2.0)
        layer.conv.bias.fill_(1.0)
        layer.scale_weight.fill_(3.0)
        layer.scale_bias.fill_(-4.0)
    assert layer(torch.full((1, 1, 1, 1), 5.0)).item() == pytest.approx((2 * 5 + 1) * 3 - 4)


def test_preprocess_subtracts_the_mean_and_divides_by_256():
    crops = np.zeros((1, 2, 2, 3), np.uint8)
    crops[0, 0, 0] = [255, 0, 123]
    x = preprocess(crops)
    assert x.shape == (1, 3, 2, 2)
    assert x[0, 0, 0, 0].item() == pytest.approx((255 - MEAN_RGB[0]) / 256)
    assert x[0, 1, 0, 0].item() == pytest.approx(-MEAN_RGB[1] / 256)
    assert x[0, 2, 0, 0].item() == pytest.approx((123 - MEAN_RGB[2]) / 256)


def test_dequantizes_and_checks_the_byte_count(tmp_path):
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": "q", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "f", "shape": [2], "dtype": "float32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    (tmp_path / "w.bin").write_bytes(bytes([0, 1, 2, 255]) + np.array([1.5, -2.0], "<f4").tobytes())
    t = read_tfjs_tensors(tmp_path / "m.json", tmp_path / "w.bin")
    np.testing.assert_allclose(t["q"], [[-1.0, -0.5], [0.0, 126.5]])
    np.testing.assert_allclose(t["f"], [1.5, -2.0])
    (tmp_path / "w.bin").write_bytes(bytes([0, 1, 2, 255]) + b"\0" * 7)  # one byte short
    with pytest.raises(ValueError, match="bytes"):
        read_tfjs_tensors(tmp_path / "m.json", tmp_path / "w.bin")


def test_real_manifest_matches_the_binary(tfjs_files):
    manifest, weights = tfjs_files
    specs = [w for g in json.loads(manifest.read_text()) for w in g["weights"]]
    assert len(specs) == EXPECTED_TENSORS
    assert weights.stat().st_size == EXPECTED_BYTES
    tensors = read_tfjs_tensors(manifest, weights)  # raises unless the manifest accounts for every byte
    assert tensors["fc"].shape == (256, 128)


def test_filters_go_from_hwio_to_oihw(tfjs_files):
    tensors = read_tfjs_tensors(*tfjs_files)
    sd = load_tfjs_state_dict(*tfjs_files)
    hwio = tensors["conv64_down/conv1/conv/filters"]  # plain float32 in the file
    assert hwio.shape == (3, 3, 32, 64) and sd["conv64_down.conv1.conv.weight"].shape == (64, 32, 3, 3)
    assert sd["conv64_down.conv1.conv.weight"][5, 7, 2, 1].item() == hwio[2, 1, 7, 5]
    assert torch.equal(sd["fc.weight"], torch.from_numpy(tensors["fc"].T.copy()))


def _descriptors(net, files):
    from services.detector.align import DLIB_150
    from services.detector.faces import FaceDetector, load_rgb, pick_face

    det = FaceDetector(DLIB_150)
    crops = []
    for f in files:
        img = load_rgb(IMAGES / f)
        crops.append(pick_face(det.detect(img), img.shape, "largest").crop)
    with torch.inference_mode():
        return net(preprocess(np.stack(crops))).numpy()


def test_same_person_closer_than_0_6_and_strangers_further(net):
    """dlib's rule of thumb for this network: Euclidean distance below 0.6 means the same person."""
    d = _descriptors(net, ["tests/test_images/obama.jpg", "tests/test_images/obama2.jpg",
                           "tests/test_images/biden.jpg", "examples/knn_examples/train/biden/biden2.jpg",
                           "examples/knn_examples/train/rose_leslie/img1.jpg"])
    dist = np.linalg.norm(d[:, None] - d[None], axis=2)
    assert dist[0, 1] < 0.6 and dist[2, 3] < 0.6            # Obama-Obama, Biden-Biden
    assert dist[0, 2] > 0.6 and dist[1, 3] > 0.6 and dist[0, 4] > 0.6 and dist[2, 4] > 0.6


def test_embedding_model_normalizes_and_flip_averages(tfjs_files):
    from training.embedding_model import EmbeddingModel

    model = EmbeddingModel.load(_need(CONVERTED), device="cpu", flip_average=True)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    e = model.embed(crops)
    assert e.shape == (3, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # With flip averaging, a crop and its mirror image get the same descriptor.
    np.testing.assert_allclose(model.embed(crops[:, :, ::-1]), e, atol=1e-5)
    assert model.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        model.embed(np.zeros((1, 112, 112, 3), np.uint8))
