"""The operating point, measured where it is thin: TAR at FAR 1e-3 and 1e-4 need far more impostor pairs
than View 2's 3,000 different pairs (FAR 1e-4 of 3,000 is a third of a pair). Within each fold, every pair
of images of two different people is an impostor pair; View 2's folds are people-disjoint, so a model
trained on the other folds' people has seen none of them. Fold by fold that is ~5 million pairs: TAR is
then measured on the 3,000 same pairs against a threshold that those impostors set.

Also here: the impostor tail that `facestream calibrate` uses as its prior, and McNemar's exact test of
two models' per-pair decisions.
"""
from __future__ import annotations

import math

import numpy as np

FARS = (1e-3, 1e-4)
# The calibration prior keeps the highest impostor scores down to this FAR (2x the matcher's default target,
# so that a prior can set a threshold at 1e-3): ~10,000 of LFW View 2's ~5 million pairs.
TAIL_FAR = 2e-3


def within_fold_impostors(emb: np.ndarray, found: np.ndarray, index: dict[str, int], pairs: list,
                          folds: list[int] | None = None, euclidean: bool = False) -> np.ndarray:
    """Scores of every pair of distinct images of different people within each fold (images with no face
    found left out: they have no score to give): the cosine of unit vectors, or with `euclidean` minus the
    Euclidean distance (dlib's score)."""
    out = []
    for k in sorted({p.fold for p in pairs} if folds is None else set(folds)):
        imgs: dict[str, str] = {}
        for p in pairs:
            if p.fold == k:
                imgs[p.path1], imgs[p.path2] = p.person1, p.person2
        rows = [(index[path], person) for path, person in imgs.items() if found[index[path]]]
        if len(rows) < 2:
            continue
        idx = np.array([r for r, _ in rows])
        _, who = np.unique([w for _, w in rows], return_inverse=True)
        e = emb[idx].astype(np.float32)
        s = e @ e.T
        if euclidean:
            sq = np.diag(s)
            s = -np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * s, 0))
        iu = np.triu_indices(len(idx), 1)
        diff = who[iu[0]] != who[iu[1]]
        out.append(s[iu][diff])
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def tar_at_fars(genuine: np.ndarray, impostors: np.ndarray, fars=FARS) -> dict:
    """{far: {tar, threshold, far_achieved}}: the loosest threshold letting at most floor(far * n) impostors
    through, and the share of genuine pairs at or above it."""
    neg = np.sort(np.asarray(impostors, np.float64))[::-1]
    g = np.asarray(genuine, np.float64)
    res = {"n_impostor_pairs": int(len(neg)), "n_genuine_pairs": int(len(g))}
    for far in fars:
        allowed = int(math.floor(far * len(neg) + 1e-9))
        if len(neg) == 0 or allowed >= len(neg):
            continue
        t = float(np.nextafter(neg[allowed], np.inf))
        res[f"{far:g}"] = {"tar": float(np.mean(g >= t)), "threshold": t, "far_achieved": float(np.mean(neg >= t))}
    return res


def impostor_tail(impostors: np.ndarray, down_to_far: float = TAIL_FAR) -> dict:
    """The prior `facestream calibrate` blends in when a gallery is small: the highest scores of n pairs,
    as many as reach `down_to_far` (rounded to 1e-5: far below the spread of any threshold estimate)."""
    k = int(math.ceil(down_to_far * len(impostors)))
    s = np.sort(np.asarray(impostors, np.float64))[::-1][:k]
    return {"n_pairs": int(len(impostors)), "down_to_far": down_to_far,
            "top_scores": [round(float(v), 5) for v in s]}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on paired decisions: b = pairs only A got right, c = only B; two-sided binomial
    p-value of min(b, c) under p = 1/2."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError(f"decisions of different pair sets: {a.shape} vs {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    n = b + c
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return {"only_a": b, "only_b": c, "p_value": min(1.0, 2 * tail)}


def fold_decisions(scores: np.ndarray, same: np.ndarray, folds: np.ndarray, fold_results: list[dict]) -> np.ndarray:
    """Per pair, whether the protocol's decision (its fold's threshold) was right: McNemar's input."""
    th = {f["fold"]: f["threshold"] for f in fold_results}
    t = np.array([th.get(int(k), np.nan) for k in folds])
    return (np.asarray(scores) >= t) == np.asarray(same, bool)
