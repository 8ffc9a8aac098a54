"""`facestream train`'s settings, each declared once with its bounds and help; the flags come from them.

A run's values, strongest first: flags given > FACESTREAM_* variables > the resumed checkpoint's config
(`--resume`) > `--dry-run`'s recipe > the recipe (`--recipe NAME`, or `head` when `--head-only` names
none) > the defaults below. A recipe is a reviewable file of settings in `training/recipes/` (nanoGPT's
config/*.py): `--recipe finetune` reads `training/recipes/finetune.toml`; a path works too.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from shared import paths
from shared.config import ConfigError, build_parser, parse, read_recipe, setting

SCRATCH, FACEAPI = "scratch", "faceapi"
DEFAULT_LR = {SCRATCH: 3e-3, FACEAPI: 1e-4}  # faceapi: relative (see --relative-lr); fine-tuning moves gently


@dataclass(frozen=True)
class TrainConfig:
    """Train the Siamese tower with contrastive loss."""
    tower: str = setting(SCRATCH, "scratch (compact CNN from scratch) or faceapi (fine-tune the pretrained ResNet)",
                         choices=(SCRATCH, FACEAPI))
    # FACESTREAM_DATA is the data root (shared.paths), not the folder of one run: no variable for this one
    data: str | None = setting(None, "identity folders root/<person>/<images> to train on", env=False)
    data_kind: str = setting("photos", "photos (MTCNN-detect and align, as the pipeline does) or crops (resize only)",
                             choices=("photos", "crops"))
    lfw_fold: int | None = setting(None, "train on LFW people of every people.txt fold but this one (0-9); -1: of "
                                         "every fold (a model for the pipeline, which LFW can then no longer score)",
                                   ge=-1, le=9)
    # a mode that picks a recipe, so it is read where the recipe is chosen: the command line or a recipe
    head_only: bool = setting(False, "faceapi: fine-tune only the last layer (fc 256->128) on cached features of "
                                     "the frozen network: seconds per run on the CPU; implies --recipe head",
                              env=False)
    fusion: bool = setting(False, "train the fusion head of a fused pair (--pair) on cached tower descriptors of "
                                  "LFW's other folds' people (needs --lfw-fold); implies --recipe fusion", env=False)
    pair: str = setting(str(paths.MODELS_DIR / "fused_resnet_mfn.pt"), "--fusion: the fused pair whose head learns")
    init: str = setting(str(paths.MODELS_DIR / "faceapi_resnet128.pt"), "pretrained checkpoint (faceapi)")
    freeze: int = setting(8, "faceapi: freeze this many leading stages (1 = the stem, 2 = stem + first block, ...; "
                             "8 = through conv64_3, 2.8x faster on the CPU than none; 15 = all)", ge=0, le=15)
    input_size: int = setting(64, "scratch: input side in pixels, e.g. 64, 100, 112 (faceapi: its checkpoint's)",
                              ge=32, le=1024)
    in_channels: int = setting(3, "scratch: 3 = RGB, 1 = grey (luma of the RGB crop); RGB measured 2 points better",
                               choices=(1, 3))
    width: int = setting(32, "scratch: channels of the first stage (then x2, x4, x8)", ge=1, le=1024)
    dropout: float = setting(0.2, "scratch: dropout before the embedding layer", ge=0, le=1)
    steps: int = setting(2400, "optimizer steps in all (a resumed run continues to this)", ge=0, le=10_000_000)
    pairing: str = setting("batch-all", "batch-all (every pair among P people x K images, same and different pairs "
                                        "weighted equally) or sampled (balanced random pairs)",
                           choices=("batch-all", "sampled"))
    batch_pairs: int = setting(64, "sampled: pairs per step (2x images)", ge=1, le=100_000)
    people_per_batch: int = setting(32, "batch-all: people per step", ge=2, le=100_000)
    images_per_person: int = setting(4, "batch-all: images per person per step (fewer when a person has fewer)",
                                     ge=1, le=1000)
    same_fraction: float = setting(0.5, "share of same-person pairs in a batch", ge=0, le=1)
    hard_negatives: bool = setting(False, "pair each different-pair image with its closest other person in the batch")
    margin: float = setting(1.0, "contrastive margin on unit-length embeddings (distance in [0, 2])", ge=0, le=2)
    same_margin: float = setting(0.0, "pull same-person pairs only until this distance (0: Hadsell's D^2)",
                                 ge=0, le=2)
    active_pairs: bool = setting(False, "average the loss over the pairs that violate their margin only")
    lr: float | None = setting(None, f"peak learning rate (default {DEFAULT_LR})", ge=0, le=10)
    relative_lr: bool | None = setting(None, "scale each tensor's lr by its starting RMS (default: on for faceapi, "
                                             "whose conv weights are ~1e-3 beside scales ~9)")
    min_lr_ratio: float = setting(0.05, "the cosine schedule ends at lr x this", ge=0, le=1)
    warmup_steps: int = setting(100, "linear warmup steps", ge=0, le=10_000_000)
    weight_decay: float = setting(0.05, "AdamW weight decay (weights of conv/linear layers only)", ge=0, le=10)
    grad_clip: float = setting(1.0, "clip the gradient's global norm to this", ge=0)
    augment: bool = setting(True, "random mirror, scale/shift/rotation and colour jitter")
    amp: bool = setting(True, "float16 mixed precision when training on CUDA (ignored on the CPU)")
    flip_average: bool = setting(True, "the checkpoint tells the embedder to average each face with its mirror")
    val_people: float = setting(0.0, "share of people held out to monitor pair accuracy (not trained on)",
                                ge=0, le=1)
    val_pairs: int = setting(1000, "pairs of held-out people to monitor", ge=1, le=10_000_000)
    val_every: int = setting(500, "steps between held-out checks", ge=1)
    seed: int = setting(0, "seeds pairs, augmentation and initialization", ge=0, le=2**31 - 1)
    out: str | None = setting(None, "output folder for ckpt.pt and curves.png (default: a new temp folder)")
    tag: str | None = setting(None, "name in the model_version (default: the tower)")
    log_every: int = setting(10, "steps between logged points of the curves", ge=1)
    ckpt_every: int = setting(1000, "steps between checkpoints (and one at the end)", ge=1)
    device: str = setting("auto", "auto (CUDA when present), cpu or cuda[:N]")
    threads: int = setting(2, "torch CPU threads", ge=1, le=1024)
    quiet: bool = setting(False, "no progress bar")

    def validate(self) -> None:
        """What no single bound can say: the rules between settings."""
        if (self.data is None) == (self.lfw_fold is None):
            raise ConfigError("give exactly one of --data DIR and --lfw-fold K (or --dry-run)")
        if self.fusion and (self.lfw_fold is None or self.head_only):
            raise ConfigError("--fusion trains on LFW's other folds: give --lfw-fold K, and not --head-only")
        if self.head_only and self.tower != FACEAPI:
            raise ConfigError("--head-only fine-tunes the face-api tower's last layer: not with --tower scratch")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device = {self.device!r}: must be auto, cpu, cuda or cuda:N")


RECIPES = Path(__file__).resolve().parent / "recipes"
HEAD_RECIPE, DRY_RUN_RECIPE = "head", "dry_run"
DRY_RUN_DATA = "orl_att_faces"  # under the data root: 39 people, 390 grey crops


def recipe_path(name: str) -> Path:
    """`training/recipes/<name>.toml`, or `name` itself when it is a path to a .toml or .json file."""
    given = Path(name)
    if given.suffix in (".toml", ".json") or len(given.parts) > 1:
        return given
    path = RECIPES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        raise ConfigError(f"no recipe {name!r} in {RECIPES} (there: {known}); or give a path to a .toml file")
    return path


def _recipe_layer(name: str) -> tuple[str, dict[str, Any]]:
    path = recipe_path(name)
    return f"recipe {path}", read_recipe(path)


def parser() -> argparse.ArgumentParser:
    """One flag per setting, and the three that choose where the values come from."""
    p = build_parser(TrainConfig, "facestream train", "Train the Siamese tower with contrastive loss.")
    p.add_argument("--recipe", metavar="NAME", help=f"a recipe of settings: a name in {RECIPES} or a path "
                   "(default: head with --head-only)")
    p.add_argument("--dry-run", action="store_true", help="a few fast steps on ORL (CI): the dry_run recipe, "
                   "over any other")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint (its config, optimizer, step)")
    return p


def config(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> tuple[TrainConfig, dict | None]:
    """The run's config, and the checkpoint it resumes (or None). Raises ConfigError."""
    from shared.vision import checkpoint

    p = parser()
    ns = p.parse_args(list(argv or []))
    layers: list[tuple[str, Mapping[str, Any]]] = []
    resumed = None
    if ns.resume is not None:
        if ns.head_only or ns.fusion:
            raise ConfigError("--head-only and --fusion runs take seconds: run again rather than --resume")
        resumed = checkpoint.load(ns.resume)
        if "train" not in resumed:
            raise ConfigError(f"{ns.resume} holds no training state to resume from")
        # continue beside the checkpoint unless --out says otherwise
        layers.append((f"checkpoint {ns.resume}", {**resumed["train"]["config"], "out": str(ns.resume.parent)}))
    if ns.dry_run:  # its small batches and few steps win over the recipe's
        layers += [("--dry-run", {"data": str(paths.data_root() / DRY_RUN_DATA)}), _recipe_layer(DRY_RUN_RECIPE)]
    recipe = ns.recipe or (HEAD_RECIPE if ns.head_only else "fusion" if ns.fusion else None)
    if recipe is not None:
        layers.append(_recipe_layer(recipe))
    return parse(TrainConfig, argv, env, parser=p, recipes=layers)[0], resumed
