"""Checkpoint metadata without torch, and recorded calibrations applied to re-made checkpoints."""
import json

from shared.vision import meta as model_meta


def test_recorded_calibration_fills_a_missing_threshold_for_the_same_weights_only(tmp_path, monkeypatch):
    monkeypatch.setattr(model_meta, "CALIBRATION", tmp_path / "calibration.json")
    thr = {"cosine": 0.92, "far": 0.001, "source": "lfw"}
    model_meta.record("m-abc", True, thr, {"accuracy_mean": 0.99})
    meta = {"model_version": "m-abc", "flip_average": True, "threshold": None}
    assert model_meta.with_calibration(meta)["threshold"] == thr
    assert model_meta.with_calibration({**meta, "flip_average": False})["threshold"] is None, "per flip setting"
    assert model_meta.with_calibration({**meta, "model_version": "m-other"})["threshold"] is None
    own = {**meta, "threshold": {"cosine": 0.5}}
    assert model_meta.with_calibration(own) == own, "a checkpoint's own threshold wins"


def test_read_meta_uses_a_fresh_sidecar_without_loading_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(model_meta, "CALIBRATION", tmp_path / "none.json")
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not a torch file: read_meta must not open it")
    model_meta.write_sidecar(ckpt, {"model_version": "m", "flip_average": False, "threshold": None,
                                    "state_dict": {"w": 1}, "input_size": 150})
    side = json.loads(model_meta.sidecar_path(ckpt).read_text())
    assert "state_dict" not in side
    assert model_meta.read_meta(ckpt)["input_size"] == 150
