"""The contrastive loss of Hadsell, Chopra and LeCun (CVPR 2006), "Dimensionality Reduction by Learning an
Invariant Mapping", eq. 4, with Y = 1 meaning *similar* (the same person):

    L = 1/2 * Y * D^2  +  1/2 * (1 - Y) * max(0, m - D)^2,    averaged over the batch

Same-person pairs are pulled together (D^2 is smallest at D = 0); different-person pairs are pushed apart,
but only until they are `margin` apart, beyond which they cost nothing. (The original project's README states
the two cases the wrong way round; the paper and this module do not.) The paper's label convention is the
opposite (Y = 0 similar); the formula is the same once the label is read as "same person".

`same_margin` m_s > 0 gives the double-margin variant, same: 1/2 max(0, D - m_s)^2: same-person pairs are
pulled only until they are m_s apart. Fine-tuning a tower that already separates people (the pretrained
ResNet) needs it: Hadsell's D^2 pulls every same pair towards 0 and reshapes the whole space for the few
pairs near the threshold; with m_s and m set on either side of that threshold, only the pairs on the wrong
side of it move (as in dlib's own training loss, a hinge on Euclidean distance around 0.6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pair_distance(ea: torch.Tensor, eb: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Euclidean distance between rows of `ea` and `eb` (N, D) -> (N,), in float32. With `normalize`, both
    are first scaled to unit length, so D lies in [0, 2] and D^2 = 2 - 2 cos: the same geometry as the
    cosine similarity the matcher thresholds."""
    ea, eb = ea.float(), eb.float()
    if normalize:
        ea, eb = F.normalize(ea, dim=1), F.normalize(eb, dim=1)
    # sqrt has an infinite slope at 0: the clamp keeps identical pairs (D = 0) from producing NaN gradients.
    return (ea - eb).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()


class ContrastiveLoss(nn.Module):
    """Hadsell-Chopra-LeCun contrastive loss on embedding pairs.

    forward(ea, eb, same) with ea, eb (N, D) embeddings and `same` (N,) bool or {0, 1} (1 = same person)
    returns the scalar mean over the batch of

        same:       1/2 * D^2
        different:  1/2 * max(0, margin - D)^2

    The 1/2 is the paper's (it makes the gradient of the similar term simply D); it scales the loss and
    the gradient only, not the optimum. D is the Euclidean distance between the L2-normalized embeddings by
    default (`normalize=False` uses the raw embeddings). The loss is computed in float32 under autocast.
    """

    def __init__(self, margin: float = 1.0, normalize: bool = True, same_margin: float = 0.0):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        if not 0 <= same_margin < margin:
            raise ValueError(f"same_margin must be in [0, margin), got {same_margin} (margin {margin})")
        self.margin = float(margin)
        self.same_margin = float(same_margin)
        self.normalize = bool(normalize)

    def per_pair(self, ea: torch.Tensor, eb: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """The loss of each pair, (N,), before the batch mean."""
        d = pair_distance(ea, eb, self.normalize)
        y = same.to(d.dtype)
        pull = F.relu(d - self.same_margin) if self.same_margin else d
        return 0.5 * (y * pull.pow(2) + (1.0 - y) * F.relu(self.margin - d).pow(2))

    def balanced(self, ea: torch.Tensor, eb: torch.Tensor, same: torch.Tensor, active: bool = False) -> torch.Tensor:
        """The mean over same pairs plus the mean over different pairs, halved: the loss a batch with as
        many same as different pairs would give. For all pairs of a batch, where different pairs outnumber
        same ones by about (people - 1) to (images per person - 1), and would otherwise drown them.
        `active`: each mean is over the pairs that still cost something (hard-pair mining): when few pairs
        violate a margin, as with a pretrained tower, they are not averaged away by the many that do not."""
        per, same = self.per_pair(ea, eb, same), same.bool()
        if not active:
            return torch.stack([per[m].mean() for m in (same, ~same) if m.any()]).mean()
        hit = per > 0
        return sum(per[m & hit].sum() / (m & hit).sum().clamp_min(1) for m in (same, ~same)) / 2

    def forward(self, ea: torch.Tensor, eb: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        if ea.shape != eb.shape or ea.ndim != 2 or same.shape != ea.shape[:1]:
            raise ValueError(f"expected (N, D), (N, D), (N,), got {tuple(ea.shape)}, {tuple(eb.shape)}, "
                             f"{tuple(same.shape)}")
        return self.per_pair(ea, eb, same).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, same_margin={self.same_margin}, normalize={self.normalize}"
