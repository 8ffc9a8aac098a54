"""The compact CNN that `facestream train` can train from scratch as the Siamese network's tower.

Every tower takes N x 3 x S x S input already normalized by the checkpoint's `input_norm` (the embedder
always hands over three channels) and returns N x 128 raw descriptors; the loss and the matcher normalize.
"""
from __future__ import annotations

import torch
from torch import nn

# ITU-R BT.601 luma: the grey level a greyscale tower sees, whatever colour the camera gives.
LUMA = (0.299, 0.587, 0.114)


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ScratchCNN(nn.Module):
    """A compact VGG-style CNN, as in the original project, trained from scratch.

    stem 3x3/2 -> four stages of two 3x3 conv-BN-ReLU (widths w, 2w, 4w, 8w), max-pool between stages ->
    a global depthwise conv over the last map (MobileFaceNet's "GDC": unlike global average pooling, it
    keeps *where* a feature is, which matters on aligned faces) -> dropout -> linear -> BN -> 128-d.
    `in_channels=1` turns RGB input into luma first, so the same checkpoint embeds colour or grey crops.
    """

    def __init__(self, input_size: int = 64, in_channels: int = 3, width: int = 32, embedding_dim: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if input_size < 32:
            raise ValueError(f"input_size {input_size} is too small for four poolings")
        self.input_size, self.in_channels, self.embedding_dim = int(input_size), int(in_channels), int(embedding_dim)
        w = int(width)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.features = nn.Sequential(
            conv_bn(in_channels, w, stride=2),
            conv_bn(w, w), conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_bn(2 * w, 4 * w), conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
            conv_bn(4 * w, 8 * w), conv_bn(8 * w, 8 * w),
        )
        with torch.no_grad():  # the last map's size follows from input_size; measure rather than derive
            side = self.features(torch.zeros(1, in_channels, input_size, input_size)).shape[-1]
        self.gdc = nn.Sequential(nn.Conv2d(8 * w, 8 * w, side, groups=8 * w, bias=False), nn.BatchNorm2d(8 * w))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(8 * w, embedding_dim, bias=False),
                                  nn.BatchNorm1d(embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3 and self.in_channels == 1:
            x = (x * self.luma.to(x.dtype)).sum(dim=1, keepdim=True)
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} input, got {tuple(x.shape[-2:])}")
        return self.head(self.gdc(self.features(x)))

