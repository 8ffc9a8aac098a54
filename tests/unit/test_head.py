"""`facestream train --head-only` (contrastive fine-tuning of the last layer): its refusals; and the
cross-validation bookkeeping of `facestream eval --cv`."""

import numpy as np
import pytest

from training import eval_protocol
from training.train import main


def _fake_fold_report(k, lfw_fold, acc):
    return ({"identity_disjoint": {"lfw_fold": lfw_fold, "trained_people_count": 5, "excluded_pairs": 60},
             "folds": [{"fold": k, "threshold": 0.9, "accuracy": acc, "n_pairs": 4}], "model": f"m{k}",
             "model_version": f"faceapi_resnet128-head-step300-{k:08d}", "arch": "faceapi_resnet128",
             "flip_average": True, "device": "cpu", "images_root": "r", "detector": "d", "template": {},
             "no_face": {"images": [], "pairs": 0, "same_pairs_counted_wrong": 0}, "multi_face_images": 0,
             "seconds": {"detect_align": 1.0, "embed": 2.0, "images": 8},
             # run_eval's arrays for the pooled operating point and McNemar
             "_impostors": np.linspace(0.0, 0.6, 50) + k / 100, "_genuine": np.array([0.95, 0.93]) + k / 100,
             "_correct": np.array([True, True, True, acc == 1.0])},
            np.array([0.95, 0.93, 0.5, 0.2]) + k / 100, np.array([True, True, False, False]))


def test_cli_refuses_head_only_with_the_scratch_tower_and_folds_out_of_range(capsys):
    with pytest.raises(SystemExit):
        main(["--head-only", "--tower", "scratch", "--lfw-fold", "0"])
    assert "not with --tower scratch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--lfw-fold", "10"])
    assert "lfw_fold = 10 (from flag --lfw-fold): must be <= 9" in capsys.readouterr().err


def test_cv_scores_each_fold_with_its_own_model(monkeypatch):
    seen = []

    def fake(path, pairs, *a, **kw):
        k = int(str(path)[-1])
        seen.append(k)
        return _fake_fold_report(k, k, [1.0, 0.75][k])

    monkeypatch.setattr(eval_protocol, "run_eval", fake)
    pairs = [type("P", (), {"fold": k})() for k in (0, 0, 1, 1)]
    r, s, y = eval_protocol.run_cv("m{k}", pairs, None, "lfw-view2", "center", flip=None, far=0.5, quiet=True)
    assert seen == [0, 1] and r["accuracy_mean"] == pytest.approx(0.875) and r["accuracy_std"] == pytest.approx(0.125)
    assert len(s) == 8 and r["auc"] == 1.0 and [m["fold"] for m in r["models"]] == [0, 1]
    assert r["operating_points"]["n_impostor_pairs"] == 100 and len(r["_correct"]) == 8


def test_cv_refuses_a_model_that_was_not_held_out_for_its_fold(monkeypatch):
    monkeypatch.setattr(eval_protocol, "run_eval", lambda path, *a, **kw: _fake_fold_report(0, None, 1.0))
    pairs = [type("P", (), {"fold": 0})()]
    with pytest.raises(SystemExit, match="not trained with --lfw-fold 0"):
        eval_protocol.run_cv("m{k}", pairs, None, "lfw-view2", "center", flip=None, far=0.5, quiet=True)
