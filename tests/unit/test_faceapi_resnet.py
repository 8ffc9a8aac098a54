"""The face-api ResNet port: its structure, the weight conversion, and that it tells people apart."""

import json

import numpy as np
import pytest
import torch

from shared import paths
from shared.vision.nets.faceapi_resnet import (MEAN_RGB, ConvScale, FaceApiResNet, ResidualDown, preprocess,
                                               read_tfjs_tensors)

MODELS = paths.MODELS_DIR

CONVERTED = MODELS / "faceapi_resnet128.pt"

TFJS_DIR = MODELS / "cache" / "face-api-1.7.15"

DATA = paths.data_root()

IMAGES = DATA / "face_recognition_examples"


def _constant_main_branch(block: ResidualDown, value: float) -> None:
    """Make the main branch output `value` everywhere (zero filters, the last scale's bias = value)."""
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.conv2.scale_bias.fill_(value)


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
