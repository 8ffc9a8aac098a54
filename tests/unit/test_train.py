"""`facestream train`: the --dry-run on ORL in-process (what CI runs), resume, and the pure pieces."""

import math

import pytest
import torch

from training.train import lr_at, main



def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi / 2)))
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    steps = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(x >= y for x, y in zip(steps, steps[1:]))


def test_cli_needs_exactly_one_data_source():
    with pytest.raises(SystemExit):
        main(["--steps", "1"])
    with pytest.raises(SystemExit):
        main(["--data", "x", "--lfw-fold", "0"])


def test_relative_lr_moves_small_and_large_tensors_by_the_same_fraction():
    """Adam's first step moves every weight by about lr; with relative lr, by about lr x the tensor's RMS."""
    from training.train import make_optimizer
    from training.train_setup import TrainConfig

    tower = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    with torch.no_grad():
        tower[0].weight.mul_(1e-3 / tower[0].weight.pow(2).mean().sqrt())   # like the ResNet's conv weights
        tower[1].weight.mul_(9.0 / tower[1].weight.pow(2).mean().sqrt())    # like its per-channel scales
    before = [tower[0].weight.clone(), tower[1].weight.clone()]
    opt = make_optimizer(tower, TrainConfig(weight_decay=0.0), lr=1e-2, relative=True)
    assert [g["lr_scale"] for g in opt.param_groups if g["params"][0].ndim == 2] == pytest.approx([1e-3, 9.0], rel=1e-4)
    for g in opt.param_groups:
        g["lr"] = 1e-2 * g["lr_scale"]
    tower(torch.randn(4, 8)).pow(2).sum().backward()
    opt.step()
    for w0, w in zip(before, (tower[0].weight, tower[1].weight)):
        change = ((w - w0).pow(2).mean().sqrt() / w0.pow(2).mean().sqrt()).item()
        assert 0.5e-2 < change <= 1.01e-2
