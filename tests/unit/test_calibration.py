"""shared/calibration.py: the threshold at a target FAR from a gallery's impostor pairs, the LFW prior's part,
the intervals, and what it refuses. Synthetic scores with known distributions; no server, no model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shared import calibration as cal
from shared.calibration import Impostors, calibrate, clopper_pearson, gallery_impostors

Z_1E3 = 3.090232306167813  # the standard normal's quantile at 1 - 1e-3


def synthetic(rng, people: int, per_person: int, person_sd: float = 0.0, pair_sd: float = 0.1,
              mean: float = 0.3) -> tuple[Impostors, float]:
    """Impostor scores mean + u_a + u_b + e for every pair of two people's embeddings (u: a per-person effect),
    and the true score quantile at FAR 1e-3 of that population."""
    owner = np.repeat(np.arange(people), per_person)
    i, j = np.triu_indices(len(owner), 1)
    i, j = i[owner[i] != owner[j]], j[owner[i] != owner[j]]
    u = rng.normal(0, person_sd, people)
    s = mean + u[owner[i]] + u[owner[j]] + rng.normal(0, pair_sd, len(i))
    o = np.argsort(-s, kind="stable")
    return (Impostors(s[o], owner[i][o], owner[j][o], np.full(people, per_person)),
            mean + Z_1E3 * math.sqrt(2 * person_sd ** 2 + pair_sd ** 2))


def normal_tail(rng, n: int, keep: int | None = None, sd: float = 0.1, mean: float = 0.3) -> dict:
    s = np.sort(rng.normal(mean, sd, n))[::-1]
    return {"n_pairs": n, "top_scores": s[:keep or n].tolist()}


def test_the_threshold_at_far_1e3_of_known_normal_scores_is_the_rule_and_its_interval_holds_the_true_quantile():
    g, true_q = synthetic(np.random.default_rng(7), 300, 1)  # 44,850 independent N(0.3, 0.1) scores
    c = calibrate(g, 1e-3)
    assert c.threshold == np.nextafter(g.scores[math.floor(1e-3 * g.n_pairs)], np.inf)  # pair_metrics' rule
    assert c.threshold_interval[0] <= true_q <= c.threshold_interval[1], (c, true_q)
    assert abs(c.threshold - true_q) < 0.03
    assert c.gallery_false_accepts == 44 and c.far_estimate <= 1e-3
    assert c.far_interval[0] < 1e-3 < c.far_interval[1]
    assert (c.n_gallery_pairs, c.n_people, c.prior_pairs, c.prior_weight, c.warning) == (44850, 300, 0, 0.0, None)
    json.dumps(c.to_dict())  # what calibrate stores


def order_statistic_interval(scores: np.ndarray, far: float) -> tuple[float, float]:
    """The interval that treats pairs as independent: binomial ranks around far * n."""
    n, sd = len(scores), math.sqrt(len(scores) * far * (1 - far))
    hi_rank, lo_rank = max(0, int(far * n - 1.96 * sd)), min(n - 1, int(far * n + 1.96 * sd) + 1)
    return float(scores[lo_rank]), float(scores[hi_rank])


def test_people_are_the_bootstrap_unit_when_each_person_shifts_all_their_scores():
    held = {"people": 0, "pairs": 0}
    for seed in range(20):
        g, true_q = synthetic(np.random.default_rng(100 + seed), 60, 5, person_sd=0.06, pair_sd=0.08)
        lo, hi = calibrate(g, 1e-3, bootstrap=100, seed=seed).threshold_interval
        held["people"] += lo <= true_q <= hi
        lo, hi = order_statistic_interval(g.scores, 1e-3)
        held["pairs"] += lo <= true_q <= hi
    assert held["people"] >= 15 and held["pairs"] <= 10, held  # 44,250 pairs, but 60 independent people


def test_with_no_prior_the_rule_is_pair_metrics_even_with_ties():
    rng = np.random.default_rng(3)
    g, _ = synthetic(rng, 80, 2)
    tied = Impostors(np.round(g.scores, 2), g.a, g.b, g.per_person)  # many equal scores
    for far in (1e-3, 1e-2, 0.1):
        neg = tied.scores
        want = float(np.nextafter(neg[math.floor(far * len(neg) + 1e-9)], np.inf))
        c = calibrate(tied, far, bootstrap=0)
        assert c.threshold == want and np.mean(neg >= c.threshold) <= far


def test_gallery_impostors_scores_every_pair_of_two_people_and_keeps_the_top(monkeypatch):
    rng = np.random.default_rng(5)
    people = {f"p{i}": rng.normal(size=(int(rng.integers(1, 5)), 8)) for i in range(25)}
    people["nobody"] = np.zeros((0, 8))
    monkeypatch.setattr(cal, "MAX_BLOCK", 200)  # several blocks, merged
    monkeypatch.setattr(cal, "MIN_TAIL", 30)
    monkeypatch.setattr(cal, "TAIL_FACTOR", 1)
    g = gallery_impostors(people, 1e-3)
    x = np.concatenate([people[n] for n in sorted(people)]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    owner = np.repeat(np.arange(26), [len(people[n]) for n in sorted(people)])
    i, j = np.triu_indices(len(x), 1)
    other = owner[i] != owner[j]
    every = np.sort((x @ x.T)[i[other], j[other]].astype(np.float64))[::-1]
    assert g.n_pairs == len(every) and g.n_people == 25 and len(g.scores) == 30
    np.testing.assert_allclose(g.scores, every[:30], atol=1e-6)
    assert (g.a != g.b).all()


def test_the_prior_tops_a_small_gallery_up_and_weighs_less_as_the_gallery_grows():
    rng = np.random.default_rng(11)
    prior = normal_tail(rng, 200_000, keep=5000)  # reaches FAR 2.5e-2
    weights = []
    for people in (0, 2, 5, 10, 20, 40, 80, 160):
        g, _ = synthetic(rng, people, 3) if people else (gallery_impostors({}, 1e-3), 0)
        c = calibrate(g, 1e-3, prior, bootstrap=20)
        weights.append(c.prior_weight)
        assert c.prior_pairs == 200_000
        if c.n_gallery_pairs < 10_000:
            assert c.prior_weight == pytest.approx(1 - c.n_gallery_pairs / 10_000) and c.warning is None
    assert weights[0] == 1.0 and all(a > b for a, b in zip(weights[:5], weights[1:6])), weights
    assert weights[-2:] == [0.0, 0.0], "a gallery that resolves the target alone takes no prior"


def test_an_empty_gallery_with_a_prior_gives_the_priors_own_threshold():
    prior = normal_tail(np.random.default_rng(2), 30_000)
    c = calibrate(gallery_impostors({}, 1e-3), 1e-3, prior)
    assert c.threshold == np.nextafter(prior["top_scores"][30], np.inf)
    assert (c.n_people, c.n_gallery_pairs, c.prior_weight) == (0, 0, 1.0)
    assert c.threshold_interval[0] < c.threshold < c.threshold_interval[1]


def test_a_prior_tail_that_ends_before_the_target_holds_the_threshold_there_and_says_so():
    prior = normal_tail(np.random.default_rng(4), 1_000_000, keep=200)  # reaches FAR 2e-4 only
    c = calibrate(gallery_impostors({}, 1e-3), 1e-3, prior)
    assert c.threshold == np.nextafter(prior["top_scores"][-1], np.inf) and c.far_estimate < 1e-3
    assert "ends at FAR 0.0002, before FAR 0.001" in c.warning


def test_one_person_has_no_impostor_pair_so_it_needs_the_prior():
    one = gallery_impostors({"Solo": np.eye(4)[:3]}, 1e-3)
    assert (one.n_people, one.n_pairs) == (1, 0)
    with pytest.raises(ValueError, match="no impostor pairs"):
        calibrate(one, 1e-3)
    assert calibrate(one, 1e-3, normal_tail(np.random.default_rng(1), 20_000)).prior_weight == 1.0


def test_a_small_gallery_without_prior_still_answers_with_a_warning():
    g, _ = synthetic(np.random.default_rng(8), 5, 5)  # 250 pairs: FAR 1e-3 needs 10,000
    c = calibrate(g, 1e-3)
    assert c.threshold == np.nextafter(g.scores[0], np.inf), "no pair may pass: just above the highest"
    assert c.threshold_interval[1] > c.threshold, "the truth may well be above the highest score seen"
    assert "only 250 gallery impostor pairs and no prior" in c.warning


def test_nan_and_malformed_inputs_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        gallery_impostors({"a": np.array([[np.nan, 1.0]]), "b": np.array([[1.0, 0.0]])}, 1e-3)
    g, _ = synthetic(np.random.default_rng(1), 10, 1)
    with pytest.raises(ValueError, match="not finite"):
        calibrate(Impostors(np.r_[np.nan, g.scores[1:]], g.a, g.b, g.per_person), 1e-3)
    for bad in ({"n_pairs": 10, "top_scores": [0.5, float("nan")]}, {"n_pairs": 1, "top_scores": [0.5, 0.4]},
                {"n_pairs": 10, "top_scores": []}, {"top_scores": [0.5]}, {"n_pairs": "x", "top_scores": [0.5]}):
        with pytest.raises(ValueError, match="prior"):
            calibrate(g, 1e-3, bad)
    with pytest.raises(ValueError, match="dimensions"):
        gallery_impostors({"a": np.ones((1, 3)), "b": np.ones((1, 4))}, 1e-3)


@pytest.mark.parametrize("far", [0.0, 1.0, -1e-3, 1.5, float("nan"), float("inf")])
def test_a_target_far_outside_0_1_is_refused(far):
    g, _ = synthetic(np.random.default_rng(1), 10, 1)
    with pytest.raises(ValueError, match=r"not in \(0, 1\)"):
        calibrate(g, far)
    with pytest.raises(ValueError, match=r"not in \(0, 1\)"):
        gallery_impostors({}, far)


def test_clopper_pearson_known_values():
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert clopper_pearson(0, 1000) == (0.0, pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-9))
    assert clopper_pearson(1000, 1000) == (pytest.approx(0.025 ** (1 / 1000), rel=1e-9), 1.0)
    lo, hi = clopper_pearson(50, 1_000_000)  # large n: the continued fraction still converges
    assert lo < 5e-5 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(50) / 1e6, rel=0.1)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
