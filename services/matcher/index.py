"""Exact cosine search over the gallery, vectorized; pure numpy.

The gallery holds several embeddings per person. A query's score for a person is its best cosine
similarity over that person's embeddings; the top-1 person is the owner of the best-scoring embedding.
All vectors are L2-normalized, so cosine similarity is a dot product and one matrix product answers a
whole batch of queries.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
BUILD_CHUNK = 10_000  # people per step of a build


@dataclass(frozen=True)
class GalleryIndex:
    names: tuple[str, ...]  # one per person
    matrix: np.ndarray  # (N, D) float32, unit rows
    owner: np.ndarray  # (N,) int: index into names of each row's person
    version: int = 0  # the gallery version it was built from
    model_version: str = ""

    @classmethod
    def build(cls, people: dict[str, np.ndarray], version: int = 0, model_version: str = "",
              chunk: int = BUILD_CHUNK) -> "GalleryIndex":
        """From {name: (k, D) embeddings}; rows are re-normalized so that a stored vector's rounding never matters.

        Built `chunk` people at a time: the matcher builds in its sync thread while its loop goes on, and
        any one numpy call over a million people (a concatenate, a sort) holds the GIL, and so the loop,
        for its whole length (4-7 s at 1M, before). Each step here is short, so the loop waits at most
        one chunk (`bench/matcher_stage.py`: the longest stall during a rebuild)."""
        names = sorted(n for n, e in people.items() if len(e))  # timsort of sorted input: linear
        dims = {n: np.asarray(people[n]).reshape(len(people[n]), -1).shape[1] for n in names}
        if len(set(dims.values())) > 1:  # one odd entry must not stop every rebuild: keep the common size
            common = Counter(dims.values()).most_common(1)[0][0]
            odd = [n for n in names if dims[n] != common]
            log.warning("gallery: skipping %d person(s) whose embeddings are not %d-d: %s", len(odd), common,
                        ", ".join(odd[:10]))
            names = [n for n in names if dims[n] == common]
        if not names:
            return cls((), np.zeros((0, 0), np.float32), np.zeros(0, np.int64), version, model_version)
        counts = [len(people[n]) for n in names]
        total, dim = sum(counts), dims[names[0]]
        matrix = np.empty((total, dim), np.float32)
        owner = np.empty(total, np.int64)
        row = 0
        for i in range(0, len(names), chunk):
            part = np.concatenate([np.asarray(people[n], np.float32).reshape(-1, dim) for n in names[i:i + chunk]])
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
            matrix[row:row + len(part)] = part
            owner[row:row + len(part)] = np.repeat(np.arange(i, i + len(counts[i:i + chunk])), counts[i:i + chunk])
            row += len(part)
        return cls(tuple(names), matrix, owner, version, model_version)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int:
        return len(self.owner)

    def search(self, queries: np.ndarray) -> tuple[list[str | None], np.ndarray]:
        """Top-1 person and score for each (M, D) query; (None, -inf) when the gallery is empty."""
        q = np.asarray(queries, np.float32).reshape(len(queries), -1)
        if self.size == 0 or len(q) == 0:
            return [None] * len(q), np.full(len(q), -np.inf, np.float32)
        if q.shape[1] != self.matrix.shape[1]:
            raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {self.matrix.shape[1]}")
        scores = q @ self.matrix.T  # (M, N)
        best = scores.argmax(axis=1)
        return [self.names[self.owner[b]] for b in best], scores[np.arange(len(q)), best].astype(np.float32)
