"""The 128-d face-descriptor ResNet of face-api.js (a port of dlib's), in PyTorch, and its tfjs weights.

Architecture from face-api.js `src/faceRecognitionNet/*.ts` (see shared/notes/face-models.md). Every
"conv layer" there is conv + bias, then a per-channel affine "scale" (dlib's folded batch norm), then
optionally ReLU. Input: 150x150 RGB aligned to dlib's 5-point chip, minus the mean RGB, over 256.

The tfjs weights file holds 117 tensors in manifest order; most are uint8 with a per-tensor (scale, min),
filters are HWIO. `load_tfjs_state_dict` turns them into this module's state_dict (OIHW).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_STD = (256.0, 256.0, 256.0)
INPUT_SIZE = 150
EMBEDDING_DIM = 128
MANIFEST_NAME = "face_recognition_model-weights_manifest.json"
WEIGHTS_NAME = "face_recognition_model.bin"
EXPECTED_TENSORS = 117
EXPECTED_BYTES = 6_444_032


class ConvScale(nn.Module):
    """conv + bias, then a per-channel affine (x * weight + bias), then optionally ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=True)
        self.scale_weight = nn.Parameter(torch.ones(cout))
        self.scale_bias = nn.Parameter(torch.zeros(cout))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "folded_weight", None) is not None:
            x = F.conv2d(x, self.folded_weight, self.folded_bias, self.conv.stride, self.conv.padding)
        else:
            x = self.conv(x) * self.scale_weight[:, None, None] + self.scale_bias[:, None, None]
        return F.relu(x) if self.relu else x

    def fold(self) -> None:
        """Fold the affine into the convolution for inference: w' = w * s, b' = b * s + t. The folded
        tensors are non-persistent buffers: the state dict (and every cache keyed by its hash) is unchanged,
        and they follow .to() and .half(). Training builds its networks unfolded."""
        with torch.no_grad():
            s, t = self.scale_weight.detach(), self.scale_bias.detach()
            self.register_buffer("folded_weight", self.conv.weight.detach() * s[:, None, None, None], persistent=False)
            self.register_buffer("folded_bias", self.conv.bias.detach() * s + t, persistent=False)


def fold_scales(net: nn.Module) -> nn.Module:
    """Every ConvScale of `net` folded (`ConvScale.fold`): one pass less over each activation map. The same
    descriptors within float rounding (`tests/data/test_faceapi_resnet.py`)."""
    for m in net.modules():
        if isinstance(m, ConvScale):
            m.fold()
    return net


class Residual(nn.Module):
    """Two 3x3 'same' convs (ReLU after the first only), plus the input, then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = ConvScale(c, c, 3, 1, 1, relu=True)
        self.conv2 = ConvScale(c, c, 3, 1, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + x)


class ResidualDown(nn.Module):
    """Main branch: 3x3 stride-2 'valid' conv + ReLU, 3x3 'same' conv. Shortcut: 2x2 average pool, with
    zero channels appended when the width doubles. Where the two differ in size (odd inputs), the main
    branch gets a zero row at the bottom and a zero column at the right, as tfjs' concat does."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvScale(cin, cout, 3, 2, 0, relu=True)
        self.conv2 = ConvScale(cout, cout, 3, 1, 1, relu=False)
        self.extra_channels = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        short = F.avg_pool2d(x, 2, 2)
        dh, dw = short.shape[2] - out.shape[2], short.shape[3] - out.shape[3]
        if dh or dw:
            out = F.pad(out, (0, dw, 0, dh))  # (left, right, top, bottom): pad right and bottom only
        if self.extra_channels:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(out + short)


class FaceApiResNet(nn.Module):
    """N x 3 x 150 x 150 (already normalized by `preprocess`) -> N x 128 raw descriptors (not normalized;
    dlib compares them by Euclidean distance, with 0.6 as its usual threshold)."""

    BLOCKS = ("conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3",
              "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2",
              "conv256_down_out")

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.conv32_down = ConvScale(3, 32, 7, 2, 0, relu=True)
        widths = {"conv32": 32, "conv64": 64, "conv128": 128, "conv256": 256}
        prev = 32
        for name in self.BLOCKS:
            c = widths[name.split("_")[0]]
            setattr(self, name, ResidualDown(prev, c) if "down" in name else Residual(c))
            prev = c
        self.fc = nn.Linear(256, embedding_dim, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything but the last layer: N x 256 pooled features (what `fc` maps to the descriptor)."""
        x = F.max_pool2d(self.conv32_down(x), 3, 2)
        for name in self.BLOCKS:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def preprocess(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB crops -> float N x 3 x H x W, minus the mean RGB, over 256 (dlib's scaling;
    face-api.js divides by 255, which moves descriptors by under 0.5%)."""
    from shared.vision.pixels import to_input

    return to_input(crops, MEAN_RGB, INPUT_STD).contiguous()


def _torch_key(tfjs_name: str) -> tuple[str, str]:
    """tfjs 'conv64_down/conv1/scale/weights' -> ('conv64_down.conv1.scale_weight', 'vector')."""
    parts = tfjs_name.split("/")
    if parts == ["fc"]:
        return "fc.weight", "fc"
    kind = {("conv", "filters"): ("conv.weight", "filters"), ("conv", "bias"): ("conv.bias", "vector"),
            ("scale", "weights"): ("scale_weight", "vector"), ("scale", "biases"): ("scale_bias", "vector")}
    leaf, how = kind[tuple(parts[-2:])]
    return ".".join(parts[:-2] + [leaf]), how


def read_tfjs_tensors(manifest_path: Path, weights_path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the tfjs model as float32 numpy, by tfjs name, in manifest order. Raises when the
    binary's size does not match what the manifest describes (a truncated or different file)."""
    groups = json.loads(Path(manifest_path).read_text())
    specs = [w for g in groups for w in g["weights"]]
    raw = Path(weights_path).read_bytes()
    width = {"uint8": 1, "float32": 4}
    need = sum(int(np.prod(w["shape"])) * width[(w.get("quantization") or w)["dtype"]] for w in specs)
    if need != len(raw):
        raise ValueError(f"{weights_path}: manifest describes {need} bytes, file has {len(raw)}")
    out, pos = {}, 0
    for spec in specs:
        shape, q = spec["shape"], spec.get("quantization")
        n = int(np.prod(shape)) if shape else 1
        if q:
            if q["dtype"] != "uint8":
                raise ValueError(f"{spec['name']}: unsupported quantization {q['dtype']}")
            vals = np.frombuffer(raw, np.uint8, n, pos).astype(np.float64) * q["scale"] + q["min"]
            pos += n
        else:
            if spec["dtype"] != "float32":
                raise ValueError(f"{spec['name']}: unsupported dtype {spec['dtype']}")
            vals = np.frombuffer(raw, "<f4", n, pos)
            pos += 4 * n
        out[spec["name"]] = vals.astype(np.float32).reshape(shape)
    return out


def load_tfjs_state_dict(manifest_path: Path, weights_path: Path) -> dict[str, torch.Tensor]:
    """The tfjs weights as a FaceApiResNet state_dict: filters HWIO -> OIHW, fc [256,128] -> [128,256]."""
    tensors = read_tfjs_tensors(manifest_path, weights_path)
    sd = {}
    for name, arr in tensors.items():
        key, how = _torch_key(name)
        if how == "filters":
            arr = arr.transpose(3, 2, 0, 1)
        elif how == "fc":
            arr = arr.T
        sd[key] = torch.from_numpy(np.ascontiguousarray(arr))
    expected = FaceApiResNet().state_dict()
    missing, extra = set(expected) - set(sd), set(sd) - set(expected)
    if missing or extra:
        raise ValueError(f"tfjs weights do not fit the network: missing {sorted(missing)}, extra {sorted(extra)}")
    for k, v in expected.items():
        if v.shape != sd[k].shape:
            raise ValueError(f"{k}: weights {tuple(sd[k].shape)}, network {tuple(v.shape)}")
    return sd
