"""ContrastiveLoss against hand-computed values (Hadsell, Chopra & LeCun 2006, with the paper's 1/2 factor):
same person -> 1/2 D^2, different people -> 1/2 max(0, m - D)^2, mean over the batch."""
import math

import pytest
import torch

from training.losses import ContrastiveLoss, pair_distance

# Two 2-d vectors 0.3 apart (a 3-4-5 triangle scaled: dx = 0.18, dy = 0.24).
A = torch.tensor([[0.5, 0.1]])
B = torch.tensor([[0.68, 0.34]])


def test_distance_of_the_example_is_0_3():
    assert pair_distance(A, B, normalize=False).item() == pytest.approx(0.3, abs=1e-6)


def test_same_person_pair_costs_half_d_squared():
    loss = ContrastiveLoss(margin=1.0, normalize=False)(A, B, torch.tensor([1]))
    assert loss.item() == pytest.approx(0.5 * 0.09, abs=1e-6)  # 0.045


def test_different_people_pair_inside_the_margin_costs_half_the_squared_shortfall():
    loss = ContrastiveLoss(margin=1.0, normalize=False)(A, B, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.5 * 0.49, abs=1e-6)  # 0.245 = 1/2 (1 - 0.3)^2


def test_different_people_beyond_the_margin_cost_nothing():
    far = torch.tensor([[0.5 + 1.2, 0.1]])  # 1.2 apart, margin 1.0
    loss = ContrastiveLoss(margin=1.0, normalize=False)(A, far, torch.tensor([0]))
    assert loss.item() == 0.0


def test_batch_mean_of_mixed_pairs():
    ea = torch.cat([A, A, A])
    eb = torch.cat([B, B, torch.tensor([[1.7, 0.1]])])
    loss = ContrastiveLoss(margin=1.0, normalize=False)(ea, eb, torch.tensor([True, False, False]))
    assert loss.item() == pytest.approx((0.045 + 0.245 + 0.0) / 3, abs=1e-6)


def test_normalized_embeddings_use_unit_vectors():
    """Default: D between unit vectors. (3, 4) and (4, 3) become (0.6, 0.8), (0.8, 0.6): D = 0.2 * sqrt 2."""
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[40.0, 30.0]])
    d = 0.2 * math.sqrt(2)
    assert ContrastiveLoss(1.0)(a, b, torch.tensor([1])).item() == pytest.approx(0.5 * d * d, abs=1e-6)
    assert ContrastiveLoss(1.0)(a, b, torch.tensor([0])).item() == pytest.approx(0.5 * (1 - d) ** 2, abs=1e-6)


def test_margin_scales_the_different_case():
    loss = ContrastiveLoss(margin=0.5, normalize=False)(A, B, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.5 * 0.2 ** 2, abs=1e-6)


def _step(same: int) -> float:
    """Distance after one gradient step on the loss of the example pair."""
    a, b = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
    ContrastiveLoss(margin=1.0, normalize=False)(a, b, torch.tensor([same])).backward()
    with torch.no_grad():
        return pair_distance(a - 0.1 * a.grad, b - 0.1 * b.grad, normalize=False).item()


def test_gradient_pulls_a_same_person_pair_together():
    assert _step(1) < 0.3 - 1e-3


def test_gradient_pushes_a_close_different_pair_apart():
    assert _step(0) > 0.3 + 1e-3


def test_gradient_of_the_similar_term_is_d_along_the_difference():
    """d/da 1/2 |a - b|^2 = a - b: the 1/2 makes the gradient the difference vector itself."""
    a = A.clone().requires_grad_(True)
    ContrastiveLoss(margin=1.0, normalize=False)(a, B, torch.tensor([1])).backward()
    assert torch.allclose(a.grad, A - B, atol=1e-6)


def test_identical_embeddings_give_finite_gradients():
    a = A.clone().requires_grad_(True)
    ContrastiveLoss(margin=1.0, normalize=False)(torch.cat([a, a]), torch.cat([A, A]), torch.tensor([1, 0])).backward()
    assert torch.isfinite(a.grad).all()


def test_rejects_a_non_positive_margin_and_mismatched_shapes():
    with pytest.raises(ValueError):
        ContrastiveLoss(margin=0.0)
    with pytest.raises(ValueError):
        ContrastiveLoss()(A, torch.cat([B, B]), torch.tensor([1]))


def test_balanced_weighs_same_and_different_pairs_equally():
    """One same pair (0.045) and three different pairs (0.245, 0.245, 0): (0.045 + 0.49 / 3) / 2."""
    ea = torch.cat([A, A, A, A])
    eb = torch.cat([B, B, B, torch.tensor([[1.7, 0.1]])])
    loss = ContrastiveLoss(margin=1.0, normalize=False).balanced(ea, eb, torch.tensor([1, 0, 0, 0]))
    assert loss.item() == pytest.approx((0.045 + 0.49 / 3) / 2, abs=1e-6)


def test_same_margin_pulls_a_same_pair_only_beyond_it():
    """Double margin m_s = 0.2: a same pair at D = 0.5 costs 1/2 (0.5 - 0.2)^2 = 0.045; at D = 0.1, nothing."""
    loss = ContrastiveLoss(margin=1.0, normalize=False, same_margin=0.2)
    far_pair = loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.4]]), torch.tensor([1]))
    near_pair = loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.06, 0.08]]), torch.tensor([1]))
    assert far_pair.item() == pytest.approx(0.045, abs=1e-6)
    assert near_pair.item() == 0.0
    # a different pair is unaffected by m_s: D = 0.5, m = 1 -> 1/2 (1 - 0.5)^2 = 0.125
    diff = loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.4]]), torch.tensor([0]))
    assert diff.item() == pytest.approx(0.125, abs=1e-6)


def test_same_margin_must_sit_below_the_margin():
    with pytest.raises(ValueError, match="same_margin"):
        ContrastiveLoss(margin=0.4, same_margin=0.4)


def test_active_balanced_averages_only_the_pairs_that_cost_something():
    """Same pairs at D = 0.5 and 0.1 (m_s = 0.2): only the first costs, 0.045, so the same-side mean is 0.045
    (not 0.0225). Different pairs at D = 0.5 and 2.0 (m = 1): only the first costs, 0.125. Result
    (0.045 + 0.125) / 2 = 0.085; the plain balanced loss gives (0.0225 + 0.0625) / 2 = 0.0425."""
    loss = ContrastiveLoss(margin=1.0, normalize=False, same_margin=0.2)
    a = torch.zeros(4, 2)
    b = torch.tensor([[0.3, 0.4], [0.06, 0.08], [0.3, 0.4], [2.0, 0.0]])
    same = torch.tensor([1, 1, 0, 0])
    assert loss.balanced(a, b, same, active=True).item() == pytest.approx(0.085, abs=1e-6)
    assert loss.balanced(a, b, same).item() == pytest.approx(0.0425, abs=1e-6)


def test_active_balanced_is_zero_with_a_gradient_when_nothing_violates():
    loss = ContrastiveLoss(margin=1.0, normalize=False, same_margin=0.2)
    a = torch.zeros(2, 2, requires_grad=True)
    out = loss.balanced(a, torch.tensor([[0.06, 0.08], [3.0, 0.0]]), torch.tensor([1, 0]), active=True)
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(a.grad) == 0
