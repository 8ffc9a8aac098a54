"""The matcher's cosine threshold at a target false-accept rate, from the deployment's own gallery; pure numpy.

Why the gallery: `facestream eval` calibrates on LFW View 2, press photos of celebrities. A deployment's people,
cameras and enrollment photos make their own impostor distribution, and a threshold at FAR 1e-3 on one may
be 1e-2 on the other. Every pair of embeddings of two different enrolled people is an impostor pair of the
deployment itself: 30 people x 5 embeddings give 10,875 of them.

The rule (`calibrate`), with n_g gallery impostor pairs and an optional LFW prior of N_p pairs:
    FAR(t) = (k_g(t) + w0 * k_p(t) / N_p) / (n_g + w0),   w0 = min(N_p, max(0, 10 / far - n_g))
k_g(t), k_p(t): the pairs of each scoring >= t. This is the posterior mean of FAR(t) under a Beta prior of mean
k_p(t)/N_p worth w0 pseudo-pairs. The prior tops the gallery up to the 10 / far pairs that resolve the target
(10 expected false accepts at it): it weighs w0 / (n_g + w0), less as the gallery grows, and nothing once the
gallery resolves the target alone. The threshold is the smallest t with FAR(t) <= far (a score >= t is a
match): just above the score where the cumulative weight first exceeds far * (n_g + w0), which is
training/pair_metrics.threshold_at_far's rule without a prior. A tail (the prior's top_scores, the gallery's
kept scores) says nothing below its lowest score, so t never goes below it: when it would, t is held just
above it, stricter than the target needs, with a warning. Fewer than 10 / far pairs in all still give an
answer, with a warning.

Uncertainty. The threshold's interval comes from a bootstrap over *people*, not pairs: the pairs of one person
share that person's face (one who looks like many others brings many high scores), so 30 people are 30
independent units, not 10,875 pairs, and an order-statistic binomial interval, which assumes independent
pairs, is far too narrow. Resampling c_i copies of person i weighs pair (i, j) by c_i * c_j (the pairs of two
copies of one person are genuine pairs, left out); the prior's tail is resampled pair by pair (Poisson weights).
The interval is the basic (reflected) one, 2t - q_hi .. 2t - q_lo: the estimate is biased low in a small
gallery (a few people carry the tail, and a typical sample holds fewer of them than the population), the
bootstrap repeats that bias below t, and the reflection turns it back; the percentile interval would sit
below the truth, and where t is just above the highest impostor score the reflected interval rightly
reaches above it. In simulation (scores with a per-person effect, 30-100 people x 5) it held the true
quantile ~80% of the time, the percentile interval ~70%, a pair-level interval ~30%: read it as a lower
bound on the uncertainty of a small gallery. The FAR's interval is Clopper-Pearson on the pooled counts
(gallery pairs plus the prior's pseudo-pairs; the gallery's own interval when the prior weighs nothing).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

RESOLVE = 10.0  # expected false accepts at the target for a sample to resolve it
TAIL_FACTOR, MIN_TAIL = 20, 5000  # gallery scores kept: 20x the target's rank, room for every bootstrap draw
MAX_BLOCK = 4_000_000  # similarities computed at once (32 MB as float64)


@dataclass(frozen=True)
class Impostors:
    """The highest impostor scores of a gallery (descending), each pair's two people, and the embeddings per
    person, from which any resampling's total pair count follows without keeping every pair."""
    scores: np.ndarray  # (K,) float64, the top K of n_pairs
    a: np.ndarray  # (K,) person index of each pair's two embeddings
    b: np.ndarray
    per_person: np.ndarray  # (P,) embeddings per person

    @property
    def n_pairs(self) -> int:
        return int(round(pair_total(self.per_person)))

    @property
    def n_people(self) -> int:
        return len(self.per_person)


@dataclass(frozen=True)
class Calibration:
    far: float  # the target
    threshold: float
    threshold_interval: tuple[float, float]
    far_estimate: float  # FAR(threshold) by the rule above
    far_interval: tuple[float, float]  # Clopper-Pearson, pooled counts
    n_gallery_pairs: int
    n_people: int
    prior_pairs: int  # N_p (0: no prior)
    prior_weight: float  # w0 / (n_g + w0): 0 once the gallery resolves the target alone
    gallery_false_accepts: int  # gallery pairs scoring >= threshold
    warning: str | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["threshold_interval"], d["far_interval"] = list(self.threshold_interval), list(self.far_interval)
        return d


def pair_total(per_person: np.ndarray) -> float:
    """Pairs of embeddings of two different people: ((sum k)^2 - sum k^2) / 2."""
    k = np.asarray(per_person, np.float64)
    return float((k.sum() ** 2 - (k ** 2).sum()) / 2)


def gallery_impostors(people: Mapping[str, np.ndarray], far: float) -> Impostors:
    """Every impostor score of {name: (k, D) embeddings}, as the matcher computes it (float32 rows renormalized,
    services/matcher/index.py), keeping the top scores that any FAR near `far` can reach."""
    check_far(far)
    mats = [np.asarray(people[n], np.float32).reshape(len(people[n]), -1) for n in sorted(people) if len(people[n])]
    if len({m.shape[1] for m in mats}) > 1:
        raise ValueError("embeddings of different dimensions in one gallery")
    per_person = np.array([len(m) for m in mats], np.int64)
    if not mats:
        return Impostors(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), per_person)
    x = np.concatenate(mats)
    if not np.isfinite(x).all():
        raise ValueError("the gallery holds embeddings that are not finite (NaN or inf)")
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    owner = np.repeat(np.arange(len(mats)), per_person)
    keep = int(min(pair_total(per_person), max(MIN_TAIL, math.ceil(TAIL_FACTOR * far * pair_total(per_person)))))
    s_top, i_top, j_top = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    step = max(1, MAX_BLOCK // len(x))
    for start in range(0, len(x), step):
        rows = np.arange(start, min(start + step, len(x)))
        sim = (x[rows] @ x.T).astype(np.float64)
        mask = (owner[None, :] != owner[rows][:, None]) & (np.arange(len(x))[None, :] > rows[:, None])
        if keep and len(s_top) >= keep:  # only what beats the lowest kept score can enter the tail
            mask &= sim > s_top.min()
        ii, jj = np.nonzero(mask)
        s_top, i_top, j_top = (np.concatenate(z) for z in ((s_top, sim[ii, jj]), (i_top, rows[ii]), (j_top, jj)))
        if len(s_top) > keep:
            top = np.argpartition(-s_top, keep - 1)[:keep]
            s_top, i_top, j_top = s_top[top], i_top[top], j_top[top]
    order = np.lexsort((j_top, i_top, -s_top))  # descending, ties in a fixed order
    return Impostors(s_top[order], owner[i_top[order]], owner[j_top[order]], per_person)


def check_far(far: float) -> None:
    if not (isinstance(far, (int, float)) and math.isfinite(far) and 0.0 < far < 1.0):
        raise ValueError(f"target FAR {far!r} is not in (0, 1)")


def parse_prior(prior: Mapping) -> tuple[np.ndarray, int]:
    """(descending scores, N_p) of an impostor tail {"n_pairs": N, "top_scores": [...]}; ValueError if malformed."""
    try:
        n, scores = int(prior["n_pairs"]), np.asarray(prior["top_scores"], np.float64).ravel()
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the prior is not an impostor tail {{n_pairs, top_scores}}: {e}") from None
    if not len(scores) or not np.isfinite(scores).all() or n < len(scores):
        raise ValueError(f"the prior's tail must hold 1..n_pairs ({n}) finite scores, not {len(scores)}")
    return np.sort(scores)[::-1], n


def _threshold(v: np.ndarray, w: np.ndarray, allowed: float, floor: float) -> tuple[float, bool]:
    """Just above the first (highest) score whose cumulative weight exceeds `allowed`, but not below `floor`
    (where a tail ends); False when held at the floor."""
    i = int(np.searchsorted(np.cumsum(w), allowed * (1 + 1e-9) + 1e-12, side="right"))
    t = float(np.nextafter(v[i], np.inf)) if i < len(v) else -np.inf
    return (t, True) if t >= floor else (floor, False)


def _floor(scores: np.ndarray, n_pairs: int) -> float:
    """Just above a tail's lowest score when it holds fewer scores than its pairs (every score above is in it)."""
    return float(np.nextafter(scores.min(), np.inf)) if 0 < len(scores) < n_pairs else -np.inf


def calibrate(gallery: Impostors, far: float, prior: Mapping | None = None, *, resolve: float = RESOLVE,
              bootstrap: int = 200, level: float = 0.95, seed: int = 0) -> Calibration:
    """The threshold at `far` by the module's rule, with its intervals; ValueError when there is nothing to
    calibrate on (no impostor pair and no prior) or the inputs are malformed (NaN, FAR outside (0, 1))."""
    check_far(far)
    if not np.isfinite(gallery.scores).all():
        raise ValueError("impostor scores that are not finite (NaN or inf)")
    p_scores, n_p = parse_prior(prior) if prior is not None else (np.zeros(0), 0)
    n_g = gallery.n_pairs
    w0 = min(float(n_p), max(0.0, resolve / far - n_g))
    if n_g + w0 == 0:
        raise ValueError("no impostor pairs to calibrate on: the gallery needs two people or more, or a prior")
    if w0 == 0:
        p_scores = p_scores[:0]
    floors = {"gallery": _floor(gallery.scores, n_g), "prior": _floor(p_scores, n_p)}
    floor = max(floors.values())
    scores = np.concatenate([gallery.scores, p_scores])
    order = np.argsort(-scores, kind="stable")
    v, k_g = scores[order], len(gallery.scores)
    unit = np.concatenate([np.ones(k_g), np.full(len(p_scores), w0 / max(n_p, 1))])
    threshold, resolved = _threshold(v, unit[order], far * (n_g + w0), floor)
    fa_g = int((gallery.scores >= threshold).sum())
    fa = fa_g + w0 * float((p_scores >= threshold).sum()) / max(n_p, 1)
    rng, draws = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        c = rng.multinomial(gallery.n_people, np.full(gallery.n_people, 1 / gallery.n_people)) \
            if gallery.n_people else np.zeros(0, np.int64)
        total = pair_total(c * gallery.per_person) + w0
        if total > 0:
            w = np.concatenate([c[gallery.a] * c[gallery.b], rng.poisson(1.0, len(p_scores)) * unit[k_g:]])
            draws.append(_threshold(v, w[order], far * total, floor)[0])
    q_lo, q_hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)]) if draws else (threshold, threshold)
    lo, hi = (float(np.clip(2 * threshold - q, -1.0, max(1.0, threshold))) for q in (q_hi, q_lo))  # reflected
    held = None if resolved else max(floors, key=floors.get)
    return Calibration(far, threshold, (lo, hi), fa / (n_g + w0),
                       clopper_pearson(fa, n_g + w0, level), n_g, gallery.n_people, n_p, w0 / (n_g + w0), fa_g,
                       _warning(far, n_g, n_p, w0, resolve, held, len(p_scores)))


def _warning(far: float, n_g: int, n_p: int, w0: float, resolve: float, held: str | None,
             k_p: int) -> str | None:
    need = f"resolving FAR {far:g} takes {resolve / far:,.0f} ({resolve:g} expected false accepts)"
    out = []
    if not n_p and n_g < resolve / far:
        out.append(f"only {n_g:,} gallery impostor pairs and no prior: {need}; the threshold is barely constrained "
                   "(enroll more people, or calibrate with the LFW prior)")
    elif n_g + w0 < resolve / far:
        out.append(f"{n_g:,} gallery pairs and {w0:,.0f} prior pseudo-pairs: {need}")
    if held == "prior":
        out.append(f"the prior's tail ({k_p:,} of {n_p:,} scores) ends at FAR {k_p / n_p:.2g}, before FAR {far:g}: "
                   "the threshold is held just above its lowest score, stricter than the target needs (record a "
                   "longer tail, or calibrate without the prior)")
    elif held == "gallery":
        out.append(f"the gallery's kept scores end before FAR {far:g}: the threshold is held above the lowest")
    return "; ".join(out) or None


def clopper_pearson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of k successes in n (real k and n: pseudo-counts), from Beta quantiles."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1 - level
    lo = 0.0 if k <= 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k >= n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return lo, hi


def _beta_ppf(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(80):  # bisection: 2^-80 is below any FAR we report
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _betainc(a, b, mid) < q else (lo, mid)
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b), by its continued fraction (Numerical Recipes' betai)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):  # converges in O(sqrt(max(a, b))) steps
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h
