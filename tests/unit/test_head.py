"""`facestream train --head-only` (contrastive fine-tuning of the last layer), the cached-feature path of
eval, and the cross-validation bookkeeping of `facestream eval --cv`."""
import numpy as np
import pytest
import torch

from training import checkpoint, evaluate, head
from training.train import main

BASE = checkpoint.REPO_ROOT / "models" / "faceapi_resnet128.pt"


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
    from training.embedding_model import EmbeddingModel
    from training.lfw import AlignedSet

    monkeypatch.setattr(head, "CACHE", tmp_path)
    crops = np.random.default_rng(0).integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    aligned = AlignedSet([f"p{i}.jpg" for i in range(6)], crops, np.ones(6, bool), np.ones(6, int),
                         np.zeros((6, 4), np.float32), np.ones(6, np.float32), np.zeros((6, 5, 2), np.float32))
    model = EmbeddingModel.load(head_run, device="cpu")
    first = evaluate.embed_aligned(model, aligned)
    again = evaluate.embed_aligned(model, aligned)  # from the cache file now
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert np.abs(first - model.embed(crops)).max() < 1e-5 and np.array_equal(first, again)


def test_cli_refuses_head_only_with_the_scratch_tower_and_folds_out_of_range():
    with pytest.raises(SystemExit):
        main(["--head-only", "--tower", "scratch", "--lfw-fold", "0"])
    with pytest.raises(SystemExit):
        main(["--lfw-fold", "10"])


def _fake_fold_report(k, lfw_fold, acc):
    return ({"identity_disjoint": {"lfw_fold": lfw_fold, "trained_people_count": 5, "excluded_pairs": 60},
             "folds": [{"fold": k, "threshold": 0.9, "accuracy": acc, "n_pairs": 4}], "model": f"m{k}",
             "model_version": f"faceapi_resnet128-head-step300-{k:08d}", "arch": "faceapi_resnet128",
             "flip_average": True, "device": "cpu", "images_root": "r", "detector": "d", "template": {},
             "no_face": {"images": [], "pairs": 0, "same_pairs_counted_wrong": 0}, "multi_face_images": 0,
             "seconds": {"detect_align": 1.0, "embed": 2.0, "images": 8}},
            np.array([0.95, 0.93, 0.5, 0.2]) + k / 100, np.array([True, True, False, False]))


def test_cv_scores_each_fold_with_its_own_model(monkeypatch):
    seen = []

    def fake(path, pairs, *a, **kw):
        k = int(str(path)[-1])
        seen.append(k)
        return _fake_fold_report(k, k, [1.0, 0.75][k])

    monkeypatch.setattr(evaluate, "run_eval", fake)
    pairs = [type("P", (), {"fold": k})() for k in (0, 0, 1, 1)]
    r, s, y = evaluate.run_cv("m{k}", pairs, None, "lfw-view2", "center", flip=None, far=0.5, quiet=True)
    assert seen == [0, 1] and r["accuracy_mean"] == pytest.approx(0.875) and r["accuracy_std"] == pytest.approx(0.125)
    assert len(s) == 8 and r["auc"] == 1.0 and [m["fold"] for m in r["models"]] == [0, 1]


def test_cv_refuses_a_model_that_was_not_held_out_for_its_fold(monkeypatch):
    monkeypatch.setattr(evaluate, "run_eval", lambda path, *a, **kw: _fake_fold_report(0, None, 1.0))
    pairs = [type("P", (), {"fold": 0})()]
    with pytest.raises(SystemExit, match="not trained with --lfw-fold 0"):
        evaluate.run_cv("m{k}", pairs, None, "lfw-view2", "center", flip=None, far=0.5, quiet=True)
