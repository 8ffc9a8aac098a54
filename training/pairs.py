"""Pairs for the Siamese network: identity folders, a balanced same/different pair sampler, and hard
negatives mined within a batch.

An identity folder is `root/<person>/<images>`; the folder name is the label. Only people with two or more
images can give a same-person pair; everybody can be half of a different-person pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp")


@dataclass(frozen=True)
class IdentityList:
    """Image paths with integer labels; `names[label]` is the person."""
    paths: list[Path]
    labels: np.ndarray  # (N,) int64
    names: list[str]


def scan_identity_folders(root: str | Path, exts: Sequence[str] = IMAGE_EXTS) -> IdentityList:
    """Every image under `root/<person>/`, people and files in sorted order (so labels are reproducible)."""
    root = Path(root)
    people = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    paths, labels, names = [], [], []
    for person in people:
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in exts)
        if files:
            labels += [len(names)] * len(files)
            paths += files
            names.append(person.name)
    if not paths:
        raise ValueError(f"no images in identity folders under {root}")
    return IdentityList(paths, np.array(labels, np.int64), names)


@dataclass
class PairSampler:
    """Random pairs of row indices, `same_fraction` of each batch same-person (exactly, rounded), seeded.

    Iterating yields (a, b, same): int64 arrays of `batch_pairs` rows and a bool array. Same pairs pick a
    person uniformly among those with >= 2 images, then two distinct images; different pairs pick two
    distinct people uniformly, then one image each. Sampling people rather than images keeps a few
    heavily photographed people (LFW's George_W_Bush: 530 images) from dominating.
    """
    labels: np.ndarray
    batch_pairs: int
    same_fraction: float = 0.5
    seed: int = 0
    _by_person: list[np.ndarray] = field(init=False, repr=False)
    _multi: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        people = np.unique(labels)
        self._by_person = [np.flatnonzero(labels == p) for p in people]
        self._multi = np.array([i for i, rows in enumerate(self._by_person) if len(rows) >= 2], np.int64)
        if len(self._by_person) < 2:
            raise ValueError("need at least two people for different-person pairs")
        if len(self._multi) == 0 and self.same_fraction > 0:
            raise ValueError("nobody has two images: no same-person pair is possible")
        if not 0.0 <= self.same_fraction <= 1.0 or self.batch_pairs < 1:
            raise ValueError("same_fraction must be in [0, 1] and batch_pairs >= 1")

    def batches(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Endless batches; batch i depends only on (seed, i), so a resumed run at step `start` sees the
        same pairs as an uninterrupted one."""
        i = start
        while True:
            yield self.batch(i)
            i += 1

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        n_same = int(round(self.batch_pairs * self.same_fraction))
        n_diff = self.batch_pairs - n_same
        a, b = np.empty(self.batch_pairs, np.int64), np.empty(self.batch_pairs, np.int64)
        for k, p in enumerate(rng.choice(self._multi, n_same) if n_same else []):
            a[k], b[k] = rng.choice(self._by_person[p], 2, replace=False)
        n_people = len(self._by_person)
        for k in range(n_same, self.batch_pairs):
            p, q = rng.choice(n_people, 2, replace=False)
            a[k], b[k] = rng.choice(self._by_person[p]), rng.choice(self._by_person[q])
        same = np.zeros(self.batch_pairs, bool)
        same[:n_same] = True
        order = rng.permutation(self.batch_pairs)  # do not leave all same pairs at the front
        return a[order], b[order], same[order]


@dataclass
class PeopleSampler:
    """Batches of `people` people with up to `per_person` images each (all of a person's images when they
    have fewer), people drawn among those with >= 2 images; batch i depends only on (seed, i).

    For "batch-all" training: every pair within the batch is a training pair (`all_pairs`), so one forward
    pass of P x K images yields P K(K-1)/2 same pairs and far more different ones, instead of one pair per
    two images.
    """
    labels: np.ndarray
    people: int
    per_person: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        self._by_person = [rows for p in np.unique(labels) if len(rows := np.flatnonzero(labels == p)) >= 2]
        if len(self._by_person) < self.people or self.people < 2 or self.per_person < 2:
            raise ValueError(f"need people >= 2 and per_person >= 2, and {self.people} people with two images "
                             f"or more (there are {len(self._by_person)})")

    def batch(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i])
        rows = [rng.choice(self._by_person[p], min(self.per_person, len(self._by_person[p])), replace=False)
                for p in rng.choice(len(self._by_person), self.people, replace=False)]
        return np.concatenate(rows)


def all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every unordered pair (i < j) of a batch: (i, j, same)."""
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    return i, j, labels[i] == labels[j]


def hardest_negatives(emb: torch.Tensor, labels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """For each row of `emb` (N, D), the index of the nearest row (Euclidean, on unit vectors by default)
    whose label differs, or -1 where every row shares its label. Indices only: no gradient flows here."""
    with torch.no_grad():
        e = F.normalize(emb.float(), dim=1) if normalize else emb.float()
        d = torch.cdist(e, e)
        d = d.masked_fill(labels[:, None] == labels[None, :], float("inf"))
        best = d.argmin(dim=1)
        return torch.where(torch.isinf(d.gather(1, best[:, None])[:, 0]), torch.full_like(best, -1), best)


def with_hard_negatives(ea: torch.Tensor, eb: torch.Tensor, la: torch.Tensor, lb: torch.Tensor,
                        same: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """The right-hand embeddings with each different-person pair's partner replaced by the hardest negative
    of its left image among all 2N embeddings of the batch (the closest one of another person). Same pairs
    keep their partner. Gradients flow through whichever embedding is chosen."""
    emb, lab = torch.cat([ea, eb]), torch.cat([la, lb])
    hard = hardest_negatives(emb, lab, normalize)[: len(ea)]
    use = (~same.bool()) & (hard >= 0)
    return torch.where(use[:, None], emb[hard.clamp_min(0)], eb)
