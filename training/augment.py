"""Batch augmentation of aligned face crops, on whatever device trains (one vectorized pass, no per-image
Python): random mirror, a small scale / shift / rotation jitter, and colour jitter.

The jitter stays small on purpose: the crops are aligned to a template and the embedder will only ever see
aligned crops, so the network should learn to tolerate the alignment's few pixels of error, not big poses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.vision.pixels import normalize


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5          # probability of a horizontal mirror (faces are nearly symmetric)
    scale: float = 0.08        # zoom in [1 - scale, 1 + scale]
    shift: float = 0.04        # translation, fraction of the crop side, each axis
    rotate_deg: float = 5.0    # rotation in [-rotate_deg, rotate_deg]
    brightness: float = 0.2    # pixel values times [1 - b, 1 + b]
    contrast: float = 0.2      # distance from the image mean times [1 - c, 1 + c]
    saturation: float = 0.2    # distance from grey times [1 - s, 1 + s] (no effect on grey images)


def augment(crops: np.ndarray | torch.Tensor, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...],
            generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Augmented, normalized network input from uint8 N x S x S x 3 crops. Random numbers come from
    `generator` (on the CPU) so that a seeded run is reproducible on any device."""
    x = torch.as_tensor(np.asarray(crops)).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(x.device)

    # Geometry in pixel space, before normalizing: outside the image is black, as in the aligner's crops.
    flip = torch.where(u(0, 1) < cfg.flip, -1.0, 1.0)
    zoom = u(1 - cfg.scale, 1 + cfg.scale)
    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    tx, ty = u(-cfg.shift, cfg.shift) * 2, u(-cfg.shift, cfg.shift) * 2  # grid units: the side is 2 long
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * u(1 - cfg.saturation, 1 + cfg.saturation).view(n, 1, 1, 1)
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mu + (x - mu) * u(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
    x = (x * u(1 - cfg.brightness, 1 + cfg.brightness).view(n, 1, 1, 1)).clamp(0, 255)

    return normalize(x, mean, std)
