"""A checkpoint's metadata without torch, and the calibrations that `facestream eval` measured.

The matcher needs only a checkpoint's model version and threshold, and the detector only its alignment
template; importing torch for that cost the matcher 670 MB of memory (bench/results/profiles.json). So
every checkpoint written by `shared.vision.checkpoint.write` gets a JSON sidecar (`facestream.pt` ->
`facestream.json`) with its non-tensor fields, and `read_meta` reads that.

Calibrations: `facestream eval --calibrate-far F --write-threshold` stores the threshold in the checkpoint;
with `--record-calibration` (what `make calibrate` runs on LFW View 2) it also records it in
`models/calibration.json`, which is committed. A checkpoint made again from the same weights (`make
models` on a fresh machine: the model version carries a hash of the weights) gets the recorded threshold
when it is loaded, so the matcher starts without a 30-minute evaluation first.

This module is below `checkpoint` (which imports it), never above: it reads a checkpoint file itself
when its sidecar is missing or stale.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from shared import paths

CALIBRATION = paths.MODELS_DIR / "calibration.json"
META_KEYS = ("format", "arch", "arch_config", "input_size", "template", "embedding_dim", "model_version",
             "flip_average", "threshold", "input_norm", "eval")


def default_path() -> Path:
    """$FACESTREAM_MODEL if set, else models/facestream.pt in the repository."""
    return paths.default_model()


def sidecar_path(ckpt_path: str | Path) -> Path:
    return Path(ckpt_path).with_suffix(".json")


def meta_of(ckpt: dict) -> dict:
    return {k: ckpt[k] for k in META_KEYS if k in ckpt}


def write_sidecar(ckpt_path: str | Path, ckpt: dict) -> None:
    path = sidecar_path(ckpt_path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta_of(ckpt), indent=1))
    os.replace(tmp, path)


def recorded(model_version: str, flip_average: bool) -> dict | None:
    """The calibration eval recorded for these weights and this flip setting, or None."""
    try:
        entries = json.loads(CALIBRATION.read_text())
    except FileNotFoundError:
        return None
    return entries.get(f"{model_version}|flip={bool(flip_average)}")


def record(model_version: str, flip_average: bool, threshold: dict, eval_summary: dict | None,
           impostor_tail: dict | None = None) -> None:
    """`impostor_tail` ({"n_pairs", "top_scores"}: the highest LFW impostor scores) is the prior of
    `facestream calibrate` for a gallery too small to set a threshold alone."""
    entries = json.loads(CALIBRATION.read_text()) if CALIBRATION.exists() else {}
    entry = {"threshold": threshold, "eval": eval_summary}
    if impostor_tail is not None:
        entry["impostor_tail"] = impostor_tail
    entries[f"{model_version}|flip={bool(flip_average)}"] = entry
    CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
    CALIBRATION.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")


def with_calibration(meta: dict) -> dict:
    """The checkpoint's fields, its threshold filled in from the recorded calibration when it has none."""
    if meta.get("threshold"):
        return meta
    cal = recorded(meta["model_version"], meta["flip_average"])
    if cal is None:
        return meta
    return {**meta, "threshold": cal["threshold"], "eval": meta.get("eval") or cal.get("eval")}


def read_meta(ckpt_path: str | Path) -> dict:
    """A checkpoint's metadata (threshold from the calibration record when the file has none); reads the
    sidecar when it is as new as the checkpoint, else the checkpoint itself (which imports torch)."""
    ckpt_path = Path(ckpt_path)
    side = sidecar_path(ckpt_path)
    if side.exists() and ckpt_path.exists() and side.stat().st_mtime >= ckpt_path.stat().st_mtime:
        return with_calibration(json.loads(side.read_text()))
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path} (run `make models`)")
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model_version" not in ckpt:
        raise ValueError(f"{ckpt_path} is not a facestream checkpoint")
    return with_calibration(meta_of(ckpt))
