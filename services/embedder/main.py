"""`facestream embedder`: a consumer-group worker embedding aligned faces in micro-batches."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared import topics
from shared.config import StageConfig, load, setting
from shared.stage import Stage
from shared.schemas import FrameFaces
from shared.service import run_consumer_service

log = logging.getLogger("facestream")


@dataclass(frozen=True)
class EmbedderConfig(StageConfig):
    """facestream embedder: the Siamese tower over aligned crops, micro-batched."""
    model: str = setting("", "checkpoint made by training/ (default models/facestream.pt, or FACESTREAM_MODEL)")
    faces_topic: str = setting(topics.FACES.name, "input topic")
    embeddings_topic: str = setting(topics.EMBEDDINGS.name, "output topic")
    device: str = setting("auto", "auto: CUDA when present (half precision), else CPU", choices=("auto", "cpu", "cuda"))
    half: str = setting("auto", "half precision: auto (on for CUDA), on, off", choices=("auto", "on", "off"))
    model_batch_size: int = setting(64, "most faces per forward pass", ge=1, le=4096)
    threads: int = setting(0, "CPU threads for torch (0: torch's default)", ge=0, le=256)
    max_batch_size: int = setting(16, "frames (messages) gathered into one batch", ge=1, le=4096)
    max_batch_wait_ms: int = setting(20, "longest wait to fill a batch once a first message is in, ms",
                                     ge=0, le=10_000)


def build(cfg: EmbedderConfig) -> Stage:
    import torch

    from services.embedder.stage import make_process
    from shared.vision.embed import EmbeddingModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    half = None if cfg.half == "auto" else cfg.half == "on"
    model = EmbeddingModel.load(cfg.model or None, device=cfg.device, half=half)
    log.info("embedder: model %s on %s (half=%s, flip_average=%s)", model.model_version, model.device, model.half,
             model.flip_average)
    sizes = model.input_size if not model.fused else [t.size for t in model.inputs]
    process = make_process(lambda crops: model.embed(crops, batch_size=cfg.model_batch_size), sizes,
                           model.model_version, cfg.embeddings_topic, model.device.type)
    return Stage("embedder", cfg.faces_topic, FrameFaces.decode, process)


def main(argv: list[str]) -> int:
    cfg = load(EmbedderConfig, argv, prog="facestream embedder")
    return run_consumer_service("embedder", cfg, lambda health, stop: build(cfg))
