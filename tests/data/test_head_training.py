"""Last-layer training on ORL with the real ResNet (needs `make models` and ../shared/data)."""

import numpy as np
import pytest
import torch

from shared import paths
from shared.vision import checkpoint, features
from training.train import main

BASE = paths.MODELS_DIR / "faceapi_resnet128.pt"


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("head")
    assert main(["--dry-run", "--head-only", "--quiet", "--out", str(out)]) == 0
    return out / "ckpt.pt"


def test_head_only_trains_the_last_layer_and_nothing_else(head_run):
    ckpt, base = checkpoint.load(head_run), checkpoint.load(BASE)
    tr = ckpt["train"]
    assert ckpt["arch"] == "faceapi_resnet128" and tr["trained"] == ["fc"]
    assert tr["config"]["same_margin"] == 0.35 and tr["config"]["active_pairs"] is True
    changed = [k for k, v in ckpt["state_dict"].items() if not torch.equal(v, base["state_dict"][k])]
    assert changed == ["fc.weight"]
    assert np.all(np.isfinite(tr["history"]["loss"])) and len(tr["trained_people"]) == 39


def test_head_only_separates_held_out_people_at_least_as_well(head_run):
    """ORL's held-out people (grey 92x112 crops, far from the ResNet's training faces): the pair accuracy
    it starts from, and where 40 steps of the recipe leave it."""
    vals = checkpoint.load(head_run)["train"]["history"]["val_acc"]
    assert vals[0] > 0.8 and vals[-1] >= vals[0] - 0.02


def test_eval_on_cached_features_matches_the_embedder(head_run, tmp_path, monkeypatch):
    from shared.vision.crop_cache import AlignedSet
    from shared.vision.embed import EmbeddingModel

    monkeypatch.setattr(features, "CACHE", tmp_path)
    crops = np.random.default_rng(0).integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    aligned = AlignedSet([f"p{i}.jpg" for i in range(6)], crops, np.ones(6, bool), np.ones(6, int),
                         np.zeros((6, 4), np.float32), np.ones(6, np.float32), np.zeros((6, 5, 2), np.float32))
    model = EmbeddingModel.load(head_run, device="cpu")
    first = model.embed(aligned.crops, image_paths=aligned.paths)
    again = model.embed(aligned.crops, image_paths=aligned.paths)  # from the cache file now
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert np.abs(first - model.embed(crops)).max() < 1e-5 and np.array_equal(first, again)
