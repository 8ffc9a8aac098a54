"""`facestream eval` end to end on real photos (needs `make models` and ../shared/data)."""

import pytest

from training import evaluate


def test_eval_end_to_end_on_a_tsv_pair_set(tmp_path, monkeypatch, capsys):
    """`facestream eval --pairs ... --format tsv` on eight real photos: a report, a ROC plot, people the
    model trained on left out, and a calibrated threshold written into (a copy of) the checkpoint."""
    import json
    from pathlib import Path

    from shared import paths
    from shared.vision import checkpoint, crop_cache, features

    src = paths.MODELS_DIR / "faceapi_resnet128.pt"
    if not src.exists():
        pytest.fail(f"{src} is missing: run `make models` first", pytrace=False)
    data = paths.data_root()
    root = data / "face_recognition_examples" / "examples" / "knn_examples" / "train"
    monkeypatch.setattr(crop_cache, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setattr(features, "CACHE", tmp_path / "features")
    ob, bi = "obama/obama.jpg\tobama/obama2.jpg", "biden/biden.jpg\tbiden/biden2.jpg"
    (tmp_path / "p.tsv").write_text(
        "# fold same path1 path2\n"
        f"0\t1\t{ob}\n0\t1\t{bi}\n0\t0\tobama/obama.jpg\tbiden/biden.jpg\n"
        "0\t0\tkit_harington/john1.jpeg\trose_leslie/img1.jpg\n"
        "1\t1\tkit_harington/john1.jpeg\tkit_harington/john2.jpeg\n1\t1\trose_leslie/img1.jpg\trose_leslie/img2.jpg\n"
        "1\t0\tobama/obama2.jpg\tkit_harington/john2.jpeg\n1\t0\tbiden/biden2.jpg\trose_leslie/img2.jpg\n")
    model = tmp_path / "m.pt"
    ckpt = checkpoint.load(src)
    ckpt["train"] = {"trained_people": ["rose_leslie"]}
    checkpoint.write(model, ckpt)
    args = ["--model", str(model), "--pairs", str(tmp_path / "p.tsv"), "--images-root", str(root),
            "--format", "tsv", "--json", str(tmp_path / "r.json"), "--calibrate-far", "0.5",
            "--write-threshold", "--quiet", "--threads", "1"]
    assert evaluate.main(args) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["identity_disjoint"]["excluded_pairs"] == 3
    assert r["identity_disjoint"]["excluded_people"] == ["rose_leslie"]
    assert r["n_pairs_scored"] == 5 and r["face_choice"] == "largest" and r["no_face"]["pairs"] == 0
    assert r["accuracy_mean"] == 1.0 and r["auc"] == 1.0  # these photos are easy for this network
    assert Path(r["roc_png"]).stat().st_size > 1000
    written = checkpoint.load(model)["threshold"]
    assert written["far"] == 0.5 and written["cosine"] == pytest.approx(r["calibration"]["cosine"])
    assert "took" in capsys.readouterr().out
