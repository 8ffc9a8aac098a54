"""`EmbeddingModel`: aligned crops in, unit-length descriptors out. The embedder service and the gallery
call exactly this, so that enrollment and recognition can never embed differently.

    model = EmbeddingModel.load()                 # models/facestream.pt or $FACESTREAM_MODEL
    vecs = model.embed(crops)                     # (N, S, S, 3) uint8 RGB -> (N, D) float32, L2 = 1
    vecs = model.embed((crops_150, crops_112))    # a fused pair: one batch per tower, same faces in order
    same = float(vecs[0] @ vecs[1]) >= model.threshold

`model.inputs` lists what each tower takes (template, size, normalisation); a single network has one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shared.vision import checkpoint
from shared.vision.align import AlignTemplate
from shared.vision.pixels import to_input


@dataclass(frozen=True)
class TowerInput:
    """What one tower takes: crops aligned to `template`, `size` px, normalized by mean and std."""
    template: AlignTemplate
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


@dataclass
class EmbeddingModel:
    """A checkpoint's network, ready for inference."""
    net: nn.Module
    arch: str
    model_version: str
    input_size: int
    template: AlignTemplate
    embedding_dim: int
    threshold: float | None       # cosine similarity at or above which two faces are the same person
    flip_average: bool
    device: torch.device
    half: bool
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]
    path: Path | None = None
    inputs: tuple[TowerInput, ...] = ()

    @property
    def fused(self) -> bool:
        return self.arch == "fused"

    @property
    def templates(self) -> list[AlignTemplate]:
        return [t.template for t in self.inputs]

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto", half: bool | None = None,
             flip_average: bool | None = None) -> "EmbeddingModel":
        """Load a checkpoint (default `checkpoint.default_path()`); half precision defaults to on for CUDA.
        `flip_average` overrides the checkpoint's setting (eval's --flip/--no-flip)."""
        path = Path(path) if path is not None else checkpoint.default_path()
        ckpt = checkpoint.load(path)
        dev = _pick_device(device)
        half = (dev.type == "cuda") if half is None else bool(half)
        if half and dev.type != "cuda":
            raise ValueError("half precision is for CUDA; float16 convolutions on the CPU are slow")
        from shared.vision.nets.faceapi_resnet import fold_scales

        # the face-api ResNet's per-channel scale layers folded into its convolutions (inference only)
        net = fold_scales(checkpoint.build_model(ckpt)).to(dev)
        # channels-last is faster for these convs on both the CPU (220 vs 174 faces/s) and tensor cores.
        net = net.to(memory_format=torch.channels_last)
        if half:
            net = net.half()
        thr = ckpt.get("threshold") or None
        norm = checkpoint.input_norm(ckpt)
        inputs = tuple(TowerInput(t["template"], t["input_size"], tuple(t["input_norm"]["mean"]),
                                  tuple(t["input_norm"]["std"])) for t in checkpoint.tower_inputs(ckpt))
        return cls(inputs=inputs, net=net, arch=ckpt["arch"], model_version=ckpt["model_version"],
                   input_size=int(ckpt["input_size"]), template=checkpoint.template_of(ckpt),
                   embedding_dim=int(ckpt["embedding_dim"]),
                   threshold=float(thr["cosine"]) if thr else None,
                   flip_average=bool(ckpt["flip_average"]) if flip_average is None else bool(flip_average),
                   device=dev, half=half, input_mean=tuple(norm["mean"]), input_std=tuple(norm["std"]),
                   path=path)

    def embed_faces(self, faces) -> np.ndarray:
        """(N, D) unit vectors of detected faces (`shared.vision.detect.Face`, made by a detector that
        aligned to every template of this model)."""
        if not faces:
            return np.zeros((0, self.embedding_dim), np.float32)
        if not self.fused:
            return self.embed(np.stack([f.crop for f in faces]))
        return self.embed(tuple(np.stack([f.crops[k] for f in faces]) for k in range(len(self.inputs))))

    @torch.inference_mode()
    def embed(self, crops, batch_size: int = 64, image_paths: list[str] | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB crops aligned to `self.template` -> (N, D) float32, each of length 1.
        With flip averaging, each face's raw descriptor is averaged with that of its mirror image before
        normalizing (about +0.4 points on LFW for twice the compute).

        `image_paths` (eval, training): the crops come from these files, so the face-api tower on the CPU
        may reuse the pooled features `shared.vision.features` caches for its layers below `fc`. `fc` has no
        bias, so averaging with the mirror commutes with it: the same descriptors (to 2e-7), and scoring ten
        fine-tuned last layers costs one pass of the network, not ten."""
        if self.fused:
            if image_paths is not None:
                return self._fused_from_cache(crops, image_paths)
            return self._embed_fused(crops, batch_size)
        if isinstance(crops, (tuple, list)) and len(crops) == 1:
            crops = crops[0]
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        if crops.shape[1:] != (self.input_size, self.input_size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3) uint8 crops, "
                             f"got {crops.shape} {crops.dtype}")
        if image_paths is not None and self.arch == "faceapi_resnet128" and not self.half and self.device.type == "cpu":
            return self._embed_from_features(crops, image_paths)
        out = []
        for i in range(0, n, batch_size):
            x = to_input(np.ascontiguousarray(crops[i:i + batch_size]), self.input_mean, self.input_std,
                         self.device).contiguous(memory_format=torch.channels_last)
            if self.half:
                x = x.half()
            d = self.net(x).float()
            if self.flip_average:
                d = (d + self.net(torch.flip(x, dims=[3])).float()) / 2
            out.append(torch.nn.functional.normalize(d, dim=1).cpu())
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def tower_embed(self, k: int, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Tower k's unit descriptors of its own crops (mirror-averaged as the model says)."""
        t, tower, out = self.inputs[k], self.net.towers[k], []
        for i in range(0, len(crops), batch_size):
            x = to_input(np.ascontiguousarray(crops[i:i + batch_size]), t.mean, t.std,
                         self.device).contiguous(memory_format=torch.channels_last)
            d = self.net.tower_descriptors_one(tower, x.half() if self.half else x, self.flip_average)
            out.append(d.float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.net.dims[k]), np.float32)

    @torch.inference_mode()
    def _fused_from_cache(self, crops, image_paths: list[str]) -> np.ndarray:
        from shared.vision.features import cached_tower_descriptors

        if (not isinstance(crops, (tuple, list)) or len(crops) != len(self.inputs)
                or any(len(c) != len(image_paths) for c in crops)):
            raise ValueError(f"a fused model takes one crop batch per tower ({len(self.inputs)}), each with one "
                             f"row per image path ({len(image_paths)})")
        ds = cached_tower_descriptors(self, crops, list(image_paths))
        return self.net.fuse([torch.from_numpy(d).to(self.device) for d in ds]).float().cpu().numpy()

    def _embed_fused(self, crops, batch_size: int) -> np.ndarray:
        return self.embed_towers(crops, batch_size)[1]

    @torch.inference_mode()
    def embed_towers(self, crops, batch_size: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
        """A fused model's (each tower's unit descriptors, the fused vectors): the towers' own scores are
        what the fusion weights and the fusion head are fitted on."""
        if not isinstance(crops, (tuple, list)) or len(crops) != len(self.inputs):
            raise ValueError(f"a fused model takes one crop batch per tower ({len(self.inputs)}), "
                             f"got {type(crops).__name__}")
        crops = [np.asarray(c) for c in crops]
        n = len(crops[0])
        for c, t in zip(crops, self.inputs):
            if c.shape != (n, t.size, t.size, 3) or c.dtype != np.uint8:
                raise ValueError(f"expected ({n}, {t.size}, {t.size}, 3) uint8 crops for template "
                                 f"{t.template.name}, got {c.shape} {c.dtype}")
        per: list[list[torch.Tensor]] = [[] for _ in self.inputs]
        out = []
        for i in range(0, n, batch_size):
            xs = []
            for c, t in zip(crops, self.inputs):
                x = to_input(np.ascontiguousarray(c[i:i + batch_size]), t.mean, t.std,
                             self.device).contiguous(memory_format=torch.channels_last)
                xs.append(x.half() if self.half else x)
            ds = self.net.tower_descriptors(xs, flip=self.flip_average)
            for k, d in enumerate(ds):
                per[k].append(d.float().cpu())
            out.append(self.net.fuse(ds).float().cpu())
        if n == 0:
            return ([np.zeros((0, d), np.float32) for d in self.net.dims],
                    np.zeros((0, self.embedding_dim), np.float32))
        return ([torch.cat(p).numpy() for p in per], torch.cat(out).numpy().astype(np.float32, copy=False))

    def _embed_from_features(self, crops: np.ndarray, image_paths: list[str]) -> np.ndarray:
        from shared.vision.features import cached_features

        f, fm = cached_features(self.net, crops, list(image_paths), {"mean": self.input_mean, "std": self.input_std})
        x = torch.from_numpy((f + fm) / 2 if self.flip_average else f)
        d = x @ self.net.fc.weight.detach().float().T
        return torch.nn.functional.normalize(d, dim=1).numpy().astype(np.float32, copy=False)
