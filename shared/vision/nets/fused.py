"""Two towers, one descriptor: the fused embedding of a pair of networks (here the face-api ResNet and
MobileFaceNet), so that the matcher, the gallery and every index keep comparing one vector per face.

Each tower's descriptor is L2-normalized (after mirror averaging, when asked), optionally passed through a
learnt square map and normalized again (the fusion head `facestream train --fusion` fits), scaled by the
square root of its weight (weights sum to 1) and concatenated. The concatenation then has length 1, and
the cosine of two fused vectors is the weighted mean of the towers' cosines:

    <f(a), f(b)> = sum_i w_i <d_i(a), d_i(b)>

which is the score-level ensemble (a mean of z-scored cosines is this with w_i proportional to 1/sigma_i,
up to a shift of the threshold). The towers keep their own inputs: `forward` takes one batch per tower,
each aligned to that tower's template and normalized as its checkpoint says.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FusedTowers(nn.Module):
    """`towers`: [{"arch", "arch_config", "embedding_dim", ...}] as a checkpoint stores them; `weights`:
    one per tower (normalized to sum 1); `projection`: a learnt square map per tower (the fusion head)."""

    def __init__(self, towers: Sequence[dict], weights: Sequence[float], projection: bool = False):
        super().__init__()
        from shared.vision.checkpoint import ARCHS  # here: checkpoint imports the nets lazily, never at load

        if len(towers) != len(weights) or len(towers) < 1:
            raise ValueError(f"{len(towers)} towers and {len(weights)} weights")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"tower weights must be finite, >= 0 and not all 0: {list(weights)}")
        self.towers = nn.ModuleList(ARCHS[t["arch"]](t["arch_config"]) for t in towers)
        self.dims = [int(t["embedding_dim"]) for t in towers]
        self.register_buffer("weights", w / w.sum())
        self.projections = nn.ModuleList(nn.Linear(d, d, bias=False) for d in self.dims) if projection else None
        if self.projections is not None:
            for p in self.projections:
                nn.init.eye_(p.weight)

    @property
    def embedding_dim(self) -> int:
        return sum(self.dims)

    def tower_descriptors(self, xs: Sequence[torch.Tensor], flip: bool = False) -> list[torch.Tensor]:
        """Each tower's unit descriptor of its own input batch (mirror-averaged before normalizing)."""
        if len(xs) != len(self.towers):
            raise ValueError(f"{len(xs)} input batches for {len(self.towers)} towers")
        return [self.tower_descriptors_one(tower, x, flip) for tower, x in zip(self.towers, xs)]

    @staticmethod
    def tower_descriptors_one(tower: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
        d = tower(x).float()
        if flip:
            d = (d + tower(torch.flip(x, dims=[3])).float()) / 2
        return F.normalize(d, dim=1)

    def fuse(self, ds: Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Unit per-tower descriptors -> the fused unit vector (`weights`: override, for training)."""
        w = self.weights if weights is None else weights
        if self.projections is not None:
            ds = [F.normalize(p(d.to(p.weight.dtype)).float(), dim=1) for p, d in zip(self.projections, ds)]
        return F.normalize(torch.cat([w[i].sqrt() * d for i, d in enumerate(ds)], dim=1), dim=1)

    def forward(self, xs: Sequence[torch.Tensor], flip: bool = False) -> torch.Tensor:
        return self.fuse(self.tower_descriptors(xs, flip))
