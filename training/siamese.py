"""The Siamese network: two towers that are one module, so their weights are shared by construction."""
from __future__ import annotations

import torch
from torch import nn


class SiameseNet(nn.Module):
    """`forward(a, b) -> (tower(a), tower(b))` with ONE tower.

    Both halves run as a single concatenated batch: one pass instead of two, and the tower's batch-norm
    statistics come from both sides at once, as they would if the pair were embedded separately at
    inference. `tower` is the embedding network the embedder later runs on its own.
    """

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape != b.shape:
            raise ValueError(f"the two sides differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        e = self.tower(torch.cat([a, b]))
        return e[: len(a)], e[len(a):]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """One side only: the tower's raw descriptors."""
        return self.tower(x)
