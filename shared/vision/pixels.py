"""The one pixel normalisation: how aligned uint8 crops become network input, for every caller
(the embedder, enrollment, eval, the training loop and its augmentation, the feature cache).

    x = (pixel - mean) / std, per RGB channel, in pixel units, as the checkpoint's `input_norm` says
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float N x 3 x H x W pixels (0-255) -> (x - mean) / std per channel."""
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def to_input(crops: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float],
             device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x S x S x 3 RGB crops -> float N x 3 x S x S network input. The permuted view is already
    channels-last in memory, which is the layout the networks run in."""
    t = torch.as_tensor(np.asarray(crops) if not isinstance(crops, torch.Tensor) else crops)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 crops, got {tuple(t.shape)}")
    x = t.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return normalize(x, mean, std)
