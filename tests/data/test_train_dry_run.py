"""`facestream train --dry-run` on ORL (../shared/data), and the checkpoints it writes."""

import numpy as np
import pytest

from shared.vision import checkpoint
from training.train import main

DRY_STEPS = 40  # training/recipes/dry_run.toml's


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
    from shared.vision.embed import EmbeddingModel

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
