"""Tower helpers that only training needs (the networks themselves are in `shared.vision.nets`)."""
from __future__ import annotations

from torch import nn


def freeze_faceapi_blocks(net: nn.Module, n: int) -> list[str]:
    """Freeze the first `n` stages of the face-api ResNet, counting its stem (`conv32_down`) as the first:
    0 freezes nothing. Early features generalize; retraining them on a few thousand faces mostly forgets.
    Returns the names frozen."""
    names = ["conv32_down", *getattr(net, "BLOCKS", ())][:max(0, n)]
    for name in names:
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)
    return names
