"""The tower a run trains: resumed, the pretrained face-api ResNet, or a fresh compact CNN (the networks
themselves are in `shared.vision.nets`), and what its checkpoint must say about it beside its weights."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shared.vision import checkpoint
from shared.vision.align import DLIB_150, AlignTemplate, scaled_template
from training.train_config import DEFAULT_LR, FACEAPI, TrainConfig

SCRATCH_NORM = checkpoint.FALLBACK_INPUT_NORM  # pixels to [-1, 1]


@dataclass
class TowerSpec:
    """What the checkpoint must say about the tower, beside its weights."""
    arch: str
    arch_config: dict
    input_size: int
    template: AlignTemplate
    input_norm: dict
    embedding_dim: int
    lr: float
    relative_lr: bool
    init: str | None
    frozen: list[str]


def freeze_faceapi_blocks(net: nn.Module, n: int) -> list[str]:
    """Freeze the first `n` stages of the face-api ResNet, counting its stem (`conv32_down`) as the first:
    0 freezes nothing. Early features generalize; retraining them on a few thousand faces mostly forgets.
    Returns the names frozen."""
    names = ["conv32_down", *getattr(net, "BLOCKS", ())][:max(0, n)]
    for name in names:
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)
    return names


def build_tower(cfg: TrainConfig, resumed: dict | None) -> tuple[nn.Module, TowerSpec]:
    """The tower: from the resumed checkpoint, the pretrained face-api checkpoint, or freshly initialized."""
    from shared.vision.nets.scratch_cnn import ScratchCNN

    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.tower]
    relative = cfg.relative_lr if cfg.relative_lr is not None else cfg.tower == FACEAPI
    if resumed is not None or cfg.tower == FACEAPI:
        ckpt = resumed if resumed is not None else checkpoint.load(cfg.init)
        tower = checkpoint.build_model(ckpt).train()
        frozen = freeze_faceapi_blocks(tower, cfg.freeze) if cfg.tower == FACEAPI else []
        init = (resumed.get("train") or {}).get("init") if resumed is not None else str(cfg.init)
        return tower, TowerSpec(ckpt["arch"], dict(ckpt["arch_config"]), int(ckpt["input_size"]),
                                checkpoint.template_of(ckpt), checkpoint.input_norm(ckpt),
                                int(ckpt["embedding_dim"]), lr, relative, init, frozen)
    arch_config = dict(input_size=cfg.input_size, in_channels=cfg.in_channels, width=cfg.width,
                       embedding_dim=128, dropout=cfg.dropout)
    tower = ScratchCNN(**arch_config)
    return tower, TowerSpec("scratch_cnn", arch_config, cfg.input_size, scaled_template(DLIB_150, cfg.input_size),
                            SCRATCH_NORM, 128, lr, relative, None, [])
