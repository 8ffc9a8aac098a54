"""The operating-point figures (pure numpy): within-fold impostor pairs, TAR at a FAR, the calibration
prior's tail, and McNemar's exact test."""
import numpy as np
import pytest

from training import impostors
from training.lfw import Pair


def _pairs():
    # fold 0: A, B, C (A twice); fold 1: D, E. Impostor pairs never cross folds.
    return [Pair(0, True, "A/1", "A/2", "A", "A"), Pair(0, False, "A/1", "B/1", "A", "B"),
            Pair(0, False, "B/1", "C/1", "B", "C"), Pair(1, False, "D/1", "E/1", "D", "E")]


def test_impostors_are_every_pair_of_different_people_within_each_fold():
    paths = ["A/1", "A/2", "B/1", "C/1", "D/1", "E/1"]
    emb = np.eye(6, dtype=np.float32)
    emb[1] = emb[0]  # A/1 and A/2 identical: their score 1 must not count, they are the same person
    emb[4] = emb[2]  # D/1 like B/1: crossing folds, never paired
    got = impostors.within_fold_impostors(emb, np.ones(6, bool), {p: i for i, p in enumerate(paths)}, _pairs())
    # fold 0: A1-B1, A1-C1, A2-B1, A2-C1, B1-C1 (5); fold 1: D1-E1 (1); all orthogonal
    assert len(got) == 6 and np.all(got == 0)


def test_an_image_without_a_face_gives_no_impostor_score():
    paths = ["A/1", "A/2", "B/1", "C/1", "D/1", "E/1"]
    found = np.array([True, True, False, True, True, True])
    got = impostors.within_fold_impostors(np.eye(6, dtype=np.float32), found, {p: i for i, p in enumerate(paths)},
                                          _pairs())
    assert len(got) == 2 + 1  # A1-C1, A2-C1; D1-E1


def test_tar_at_far_lets_through_at_most_floor_far_n_impostors():
    imp = np.linspace(0, 1, 10_001)[:-1]  # 10,000 scores
    gen = np.array([0.995, 0.9995, 0.99995, 0.5])
    r = impostors.tar_at_fars(gen, imp, (1e-3, 1e-4))
    assert r["0.001"]["far_achieved"] <= 1e-3 and r["0.0001"]["far_achieved"] <= 1e-4
    assert r["0.001"]["tar"] == 0.5 and r["0.0001"]["tar"] == 0.25
    strict = impostors.tar_at_fars(gen, imp, (1e-5,))["1e-05"]  # floor(0.1) = 0 impostors may pass
    assert strict["far_achieved"] == 0 and strict["threshold"] > imp.max()
    assert "1" not in impostors.tar_at_fars(gen, imp, (1.0,)), "a FAR every impostor passes has no threshold"


def test_the_tail_reaches_the_far_it_says():
    imp = np.random.default_rng(0).normal(size=100_000)
    tail = impostors.impostor_tail(imp, 2e-3)
    assert tail["n_pairs"] == 100_000 and len(tail["top_scores"]) == 200
    assert tail["top_scores"] == sorted(tail["top_scores"], reverse=True)


@pytest.mark.parametrize("b,c,p", [(0, 0, 1.0), (5, 5, 1.0), (10, 0, 2 / 1024), (1, 4, 0.375)])
def test_mcnemar_exact_p_values(b, c, p):
    a = np.array([True] * b + [False] * c + [True] * 7)
    bb = np.array([False] * b + [True] * c + [True] * 7)
    r = impostors.mcnemar(a, bb)
    assert (r["only_a"], r["only_b"]) == (b, c) and r["p_value"] == pytest.approx(p)


def test_fold_decisions_use_each_folds_threshold():
    s, y, f = np.array([0.5, 0.5, 0.2]), np.array([True, True, False]), np.array([0, 1, 1])
    got = impostors.fold_decisions(s, y, f, [{"fold": 0, "threshold": 0.4}, {"fold": 1, "threshold": 0.6}])
    assert got.tolist() == [True, False, True]
