"""Verification metrics on pair scores (higher score = more alike), pure numpy.

The LFW View 2 protocol: for each fold k, the threshold is the one that maximizes accuracy on the other
folds' pairs, and accuracy is measured on fold k with it; report the mean and the standard deviation
(np.std, ddof=0, as facenet and insightface do) over the folds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximizing accuracy of `score >= threshold` == same. Candidates are midpoints
    between consecutive distinct scores (and one below / above all); among equally good ones, the middle."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    # accuracy(t) = (#same with s >= t + #diff with s < t) / n, for all candidates at once via sorted counts
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = len(pos) - np.searchsorted(pos, cands, side="left")
    tn = np.searchsorted(neg, cands, side="left")
    acc = (tp + tn) / len(s)
    best = np.flatnonzero(acc == acc.max())
    i = best[len(best) // 2]
    return float(cands[i]), float(acc[i])


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, bool)))


@dataclass(frozen=True)
class FoldResult:
    fold: int
    threshold: float
    accuracy: float
    n_pairs: int


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray,
                   test_folds: list[int] | None = None) -> list[FoldResult]:
    """Accuracy of each test fold with the threshold chosen on all the other pairs."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(folds)
    out = []
    for k in (sorted(set(folds.tolist())) if test_folds is None else test_folds):
        test = folds == k
        if not test.any() or test.all():
            continue
        t, _ = best_threshold(scores[~test], same[~test])
        out.append(FoldResult(int(k), t, accuracy_at(scores[test], same[test], t), int(test.sum())))
    return out


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a same pair > score of a different pair), ties counting half
    (the Mann-Whitney U statistic over its maximum)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, tied scores share their mean rank
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) for every distinct score as threshold, from strictest to loosest."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    th = np.unique(s)[::-1]
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tar = (len(pos) - np.searchsorted(pos, th, side="left")) / max(len(pos), 1)
    far = (len(neg) - np.searchsorted(neg, th, side="left")) / max(len(neg), 1)
    return far, tar, th


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float, float]:
    """(threshold, tar, achieved far): the loosest threshold whose false-accept rate on the different pairs
    is at most `far`. With n different pairs, at most floor(far * n) of them may score >= threshold, so
    the threshold sits just above the (floor(far * n) + 1)-th highest different-pair score."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    neg = np.sort(s[~y])[::-1]
    allowed = int(np.floor(far * len(neg) + 1e-9))
    t = float(np.nextafter(neg[allowed], np.inf)) if allowed < len(neg) else float(neg[-1])
    return t, float(np.mean(s[y] >= t)), float(np.mean(neg >= t))
