"""`facestream train`: the --dry-run on ORL in-process (what CI runs), resume, and the pure pieces."""
import math

import numpy as np
import pytest
import torch

from training import checkpoint
from training.train import lr_at, main

DRY_STEPS = 40  # train_setup.DRY_RUN's


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("dry")
    assert main(["--dry-run", "--quiet", "--out", str(out)]) == 0
    return out


def test_dry_run_writes_a_complete_checkpoint_and_curves(dry_run):
    ckpt = checkpoint.load(dry_run / "ckpt.pt")
    tr = ckpt["train"]
    assert ckpt["arch"] == "scratch_cnn" and ckpt["embedding_dim"] == 128
    assert ckpt["input_size"] == 64 and ckpt["template"]["size"] == 64
    assert len(ckpt["template"]["points"]) == 5
    assert ckpt["state_dict"] and tr["optimizer"]["state"]
    assert tr["step"] == DRY_STEPS and tr["config"]["steps"] == DRY_STEPS
    assert tr["config"]["data_kind"] == "crops" and tr["config"]["pairing"] == "batch-all" and tr["lfw_fold"] is None
    assert len(tr["trained_people"]) == 39 and "s1" in tr["trained_people"]
    assert (dry_run / "curves.png").stat().st_size > 10_000


def test_dry_run_learns(dry_run):
    """The loss falls over the run, and same-person pairs end closer than different-person pairs."""
    h = checkpoint.load(dry_run / "ckpt.pt")["train"]["history"]
    assert len(h["loss"]) == DRY_STEPS
    assert np.mean(h["loss"][-10:]) < 0.8 * np.mean(h["loss"][:5])
    assert np.mean(h["d_same"][-10:]) < np.mean(h["d_diff"][-10:])
    assert h["val_acc"][-1] > 0.6  # held-out ORL people, chance is 0.5


def test_the_embedder_loads_the_trained_checkpoint(dry_run):
    from training.embedding_model import EmbeddingModel

    model = EmbeddingModel.load(dry_run / "ckpt.pt", device="cpu")
    vecs = model.embed(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    assert vecs.shape == (3, 128) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_resume_continues_from_the_saved_step(dry_run, tmp_path):
    import shutil

    shutil.copy(dry_run / "ckpt.pt", tmp_path / "ckpt.pt")
    before = checkpoint.load(tmp_path / "ckpt.pt")["train"]
    assert main(["--resume", str(tmp_path / "ckpt.pt"), "--steps", str(DRY_STEPS + 5), "--quiet"]) == 0
    after = checkpoint.load(tmp_path / "ckpt.pt")["train"]
    assert after["step"] == DRY_STEPS + 5
    assert after["history"]["step"][:DRY_STEPS] == before["history"]["step"]
    assert after["history"]["step"][DRY_STEPS:] == list(range(DRY_STEPS, DRY_STEPS + 5))
    assert after["config"]["input_size"] == before["config"]["input_size"]  # the saved config, not defaults
    assert after["optimizer"]["state"][0]["step"] > before["optimizer"]["state"][0]["step"]


@pytest.mark.parametrize("variant", [["--pairing", "sampled", "--batch-pairs", "8"],
                                     ["--pairing", "sampled", "--hard-negatives", "--batch-pairs", "8"]])
def test_other_pairings_train(variant, tmp_path, data_dir):
    assert main(["--dry-run", "--quiet", "--out", str(tmp_path), "--steps", "4", "--val-people", "0", *variant]) == 0
    tr = checkpoint.load(tmp_path / "ckpt.pt")["train"]
    assert tr["step"] == 4 and all(np.isfinite(tr["history"]["loss"]))
    assert tr["config"]["pairing"] == "sampled" and tr["config"]["hard_negatives"] == ("--hard-negatives" in variant)


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
