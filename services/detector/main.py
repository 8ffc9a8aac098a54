"""`facestream detector`: a consumer-group worker running MTCNN over frames."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared import topics
from shared.config import StageConfig, load, setting
from shared.stage import Stage
from shared.schemas import Frame
from shared.service import run_consumer_service


@dataclass(frozen=True)
class DetectorConfig(StageConfig):
    """facestream detector: MTCNN face detection, alignment and quality gates."""
    model: str = setting("", "checkpoint whose alignment template the crops follow (default models/facestream.pt)")
    frames_topic: str = setting(topics.FRAMES.name, "input topic")
    faces_topic: str = setting(topics.FACES.name, "output topic")
    min_face_size: int = setting(40, "smallest face kept, shorter box side in pixels (also MTCNN's search floor)",
                                 ge=12, le=2000)
    min_prob: float = setting(0.95, "smallest MTCNN face probability kept", ge=0.0, le=1.0)
    min_sharpness: float = setting(15.0, "blur gate: variance of the Laplacian of the aligned crop under which "
                                   "a face is too blurred to embed", ge=0.0, le=10_000)
    max_faces: int = setting(32, "most faces kept per frame (largest first)", ge=1, le=1000)
    max_frame_age_ms: int = setting(5000, "frames older than this on arrival are dropped as stale (0: never)",
                                    ge=0, le=3_600_000)
    newest_only: bool = setting(True, "shed load by camera: of several frames of one camera in a batch (the pool "
                                      "is behind it), detect the newest and mark the older ones skipped")
    max_frame_pixels: int = setting(3840 * 2160, "largest frame, width x height, read from the JPEG header before "
                                                 "decoding: a bigger one is dead-lettered unread (default 4K)",
                                    ge=64 * 64, le=100_000_000)
    crop_jpeg_quality: int = setting(95, "JPEG quality of the aligned crops", ge=50, le=100)
    refine_landmarks: bool = setting(True, "a second MTCNN pass on each aligned crop, averaged with the first "
                                           "(+0.16 points on LFW; ~27 ms per face on one thread, 0.65x the "
                                           "frames per second at 640x360): off to save CPU")
    device: str = setting("cpu", "torch device for MTCNN", choices=("cpu", "cuda"))
    threads: int = setting(1, "torch CPU threads (0: torch's default). One: the pool scales by processes, one per "
                           "partition, and intra-op threads of several workers on one machine fight each other "
                           "(measured: 2 threads under load 1.7 s per 960x540 frame, 1 thread 0.38 s)", ge=0, le=256)
    max_batch_size: int = setting(16, "frames per batch: a pool behind a camera detects only the newest of its "
                                      "frames in a batch, so a larger batch sheds more when behind and costs "
                                      "nothing when not (MTCNN runs frame by frame)", ge=1,
                                  le=256)


def build(cfg: DetectorConfig) -> Stage:
    import torch

    from services.detector.stage import Gates, make_process
    from shared.vision import checkpoint, meta
    from shared.vision.detect import FaceDetector

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # every template the model's towers need: a fused pair gets one crop per tower from the same landmarks
    templates = checkpoint.templates_of(meta.read_meta(Path(cfg.model) if cfg.model else meta.default_path()))
    detector = FaceDetector(templates, min_face_size=cfg.min_face_size, device=cfg.device,
                            refine=cfg.refine_landmarks)
    gates = Gates(cfg.min_face_size, cfg.min_prob, cfg.min_sharpness, cfg.max_faces)
    process = make_process(detector.detect, gates, cfg.faces_topic, cfg.max_frame_age_ms / 1000,
                           cfg.crop_jpeg_quality, newest_only=cfg.newest_only, max_pixels=cfg.max_frame_pixels)
    return Stage("detector", cfg.frames_topic, Frame.decode, process)


def main(argv: list[str]) -> int:
    cfg = load(DetectorConfig, argv, prog="facestream detector")
    return run_consumer_service("detector", cfg, lambda health, stop: build(cfg))
