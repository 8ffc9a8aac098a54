"""The facestream checkpoint: one torch.save'd dict that says everything needed to embed a face.

    {"format": "facestream-checkpoint/1", "arch": "faceapi_resnet128", "arch_config": {...},
     "state_dict": {...}, "input_size": 150, "template": {"name", "size", "points"},
     "embedding_dim": 128, "model_version": "faceapi-resnet128-1.7.15-<hash>", "flip_average": True,
     "threshold": None | {"cosine": 0.93, "far": 0.001, "source": "LFW View 2 ..."},
     "input_norm": {"mean": [r, g, b], "std": [r, g, b]} (optional, pixel units: x = (pixel - mean) / std),
     "train": {...} (optional: optimizer state, step, config, trained_people / lfw_fold),
     "eval": {...} (optional: the summary of the last `facestream eval`)}

Only plain types and tensors go in, so `torch.load(weights_only=True)` reads it: a checkpoint cannot run
code when loaded. The embedder, the gallery, eval and training all read it through `load`; the torch-free
metadata sidecar and the recorded calibrations are `shared.vision.meta`.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from shared import paths
from shared.vision import meta
from shared.vision.align import AlignTemplate

FORMAT = "facestream-checkpoint/1"
REPO_ROOT = paths.REPO_ROOT
DEFAULT_CHECKPOINT = paths.MODELS_DIR / "facestream.pt"
REQUIRED = ("arch", "arch_config", "state_dict", "input_size", "template", "embedding_dim", "model_version",
            "flip_average", "threshold")


def _lazy(module: str, cls: str) -> Callable[[dict], nn.Module]:
    """A builder that imports its network's module only when called: loading one arch never pays for the
    others."""
    return lambda cfg: getattr(importlib.import_module(module), cls)(**cfg)


# arch name -> builder(arch_config) -> nn.Module. Add a tower with one line.
ARCHS: dict[str, Callable[[dict], nn.Module]] = {
    "faceapi_resnet128": _lazy("shared.vision.nets.faceapi_resnet", "FaceApiResNet"),
    "scratch_cnn": _lazy("shared.vision.nets.scratch_cnn", "ScratchCNN"),
    "mobilefacenet": _lazy("shared.vision.nets.mobilefacenet", "MobileFaceNet"),
    "fused": _lazy("shared.vision.nets.fused", "FusedTowers"),
}


class CheckpointError(ValueError):
    """A file that is missing or not a facestream checkpoint."""


def default_path() -> Path:
    """$FACESTREAM_MODEL if set, else models/facestream.pt in the repository."""
    return meta.default_path()


def weights_hash(state_dict: dict[str, torch.Tensor], n: int = 8) -> str:
    """A short content hash of the weights, for model_version strings: two files with the same weights
    get the same hash whatever their metadata."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:n]


def save(path: str | Path, *, arch: str, arch_config: dict, state_dict: dict, input_size: int,
         template: AlignTemplate | dict, embedding_dim: int, model_version: str, flip_average: bool,
         threshold: dict | None = None, input_norm: dict | None = None, train: dict | None = None,
         eval: dict | None = None) -> Path:
    """Write a checkpoint atomically (a reader never sees half a file). Returns the path."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    ckpt: dict[str, Any] = {
        "format": FORMAT, "arch": arch, "arch_config": dict(arch_config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "input_size": int(input_size),
        "template": template.to_dict() if isinstance(template, AlignTemplate) else dict(template),
        "embedding_dim": int(embedding_dim), "model_version": str(model_version),
        "flip_average": bool(flip_average), "threshold": threshold,
    }
    if input_norm is not None:
        ckpt["input_norm"] = {"mean": [float(v) for v in input_norm["mean"]],
                              "std": [float(v) for v in input_norm["std"]]}
    if train is not None:
        ckpt["train"] = train
    if eval is not None:
        ckpt["eval"] = eval
    return write(path, ckpt)


def write(path: str | Path, ckpt: dict) -> Path:
    """Atomically write an already-built checkpoint dict (after `load` and an edit)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    meta.write_sidecar(path, ckpt)  # after the checkpoint: a sidecar never predates its file
    return path


def load(path: str | Path | None = None) -> dict:
    """Read and check a checkpoint (default: `default_path()`), on the CPU."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        hint = " (run `make models`)" if path.resolve().parent == DEFAULT_CHECKPOINT.parent else ""
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: missing {missing}")
    return {**ckpt, **meta.with_calibration(meta.meta_of(ckpt))}


def template_of(ckpt: dict) -> AlignTemplate:
    """The alignment template the checkpoint's network expects (a fused pair's: its first tower's)."""
    return AlignTemplate.from_dict(ckpt["template"])


def tower_inputs(ckpt: dict) -> list[dict]:
    """What each tower of the checkpoint takes: [{"template": AlignTemplate, "input_size", "input_norm"}],
    one entry for a single network, one per tower (in order) for a fused pair. Reads metadata only, so the
    detector learns every crop it must make without torch."""
    towers = ckpt["arch_config"].get("towers") if ckpt["arch"] == "fused" else None
    if not towers:
        return [{"template": template_of(ckpt), "input_size": int(ckpt["input_size"]), "input_norm": input_norm(ckpt)}]
    return [{"template": AlignTemplate.from_dict(t["template"]), "input_size": int(t["input_size"]),
             "input_norm": t.get("input_norm") or DEFAULT_INPUT_NORM.get(t["arch"], FALLBACK_INPUT_NORM)}
            for t in towers]


def templates_of(ckpt: dict) -> list[AlignTemplate]:
    """Every template the checkpoint's towers need, the first one the detector refines landmarks with."""
    return [t["template"] for t in tower_inputs(ckpt)]


# Per-arch input normalization when a checkpoint does not state its own `input_norm`.
DEFAULT_INPUT_NORM = {
    "faceapi_resnet128": {"mean": [122.782, 117.001, 104.298], "std": [256.0, 256.0, 256.0]},  # dlib's
    "mobilefacenet": {"mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0]},
}
FALLBACK_INPUT_NORM = {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}  # pixels to [-1, 1]


def input_norm(ckpt: dict) -> dict:
    """How pixels become network input for this checkpoint: {"mean": [3], "std": [3]} in pixel units."""
    return ckpt.get("input_norm") or DEFAULT_INPUT_NORM.get(ckpt["arch"], FALLBACK_INPUT_NORM)


def build_model(ckpt: dict) -> nn.Module:
    """The network of a checkpoint with its weights loaded, in eval mode, on the CPU."""
    if ckpt["arch"] not in ARCHS:
        raise CheckpointError(f"unknown arch {ckpt['arch']!r}; known: {sorted(ARCHS)}")
    model = ARCHS[ckpt["arch"]](ckpt["arch_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def set_threshold(path: str | Path, cosine: float, far: float, source: str, eval_summary: dict | None = None) -> None:
    """Store the matcher's cosine threshold (calibrated at false-accept rate `far`) into a checkpoint."""
    ckpt = load(path)
    ckpt["threshold"] = {"cosine": float(cosine), "far": float(far), "source": str(source)}
    if eval_summary is not None:
        ckpt["eval"] = eval_summary
    write(path, ckpt)
