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
    shed_grace_ms: int = setting(500, "with newest_only: a camera's older frames in a batch younger than this "
                                      "are detected too (the pool was late, not behind); past it they are "
                                      "shed, so that under overload the detector's lag stays near it "
                                      "(0: always the newest only)", ge=0, le=60_000)
    max_frame_pixels: int = setting(3840 * 2160, "largest frame, width x height, read from the JPEG header before "
                                                 "decoding: a bigger one is dead-lettered unread (default 4K)",
                                    ge=64 * 64, le=100_000_000)
    crop_jpeg_quality: int = setting(95, "JPEG quality of the aligned crops", ge=50, le=100)
    refine_landmarks: str = setting("onet", "second landmark estimate on each aligned crop, averaged with the "
                                    "first: onet (MTCNN's last network on the face's box, ~2 ms a face), "
                                    "cascade (the whole cascade again, ~19 ms a face), off; true/false, "
                                    "this setting's earlier values, mean onet/off")
    motion_min_changed: float = setting(0.003, "motion gating: a frame is detected only when more than this "
                                               "fraction of its 64x36 grey thumbnail changed since the camera's "
                                               "last detected frame (0: detect every frame)", ge=0.0, le=1.0)
    motion_pixel_delta: float = setting(10.0, "motion gating: grey levels a thumbnail pixel must move to count as "
                                              "changed", ge=0.0, le=255.0)
    motion_force_every_s: float = setting(2.0, "motion gating: detect each camera at least this often",
                                          ge=0.0, le=3600.0)
    motion_faces_every_s: float = setting(0.6, "motion gating: while the camera's last detection found faces, "
                                               "detect at least this often (keep it under a third of the "
                                               "matcher's track_max_gap_s)", ge=0.0, le=3600.0)
    motion_track_hold_s: float = setting(3.0, "motion gating: detect every frame for this long after new faces "
                                              "appear (while the matcher votes on their track)", ge=0.0, le=3600.0)
    motion_camera: list[str] = setting([], "one camera's gate, CAMERA=MIN_CHANGED[:FORCE_EVERY_S] (e.g. lobby=0 "
                                           "to detect every frame of it); repeatable", repeat=True)
    device: str = setting("cpu", "torch device for MTCNN", choices=("cpu", "cuda"))
    threads: int = setting(1, "torch CPU threads (0: torch's default). One: the pool scales by processes, one per "
                           "partition, and intra-op threads of several workers on one machine fight each other "
                           "(measured: 2 threads under load 1.7 s per 960x540 frame, 1 thread 0.38 s)", ge=0, le=256)
    max_batch_size: int = setting(16, "frames per batch: a pool behind a camera detects only the newest of its "
                                      "frames in a batch (and those within the shed grace); on a GPU the "
                                      "cameras' chosen frames of one size go through MTCNN together", ge=1,
                                  le=256)

    def validate(self) -> None:
        from shared.config import ConfigError

        if self.refine_landmarks.lower() not in REFINE_ALIASES:
            raise ConfigError(f"refine_landmarks: {self.refine_landmarks!r} is not one of onet, cascade, off "
                              "(or true/false)")
        motion_cameras(self)  # a malformed --motion-camera stops the service at start, with its reason

    @property
    def refine(self) -> str:
        return REFINE_ALIASES[self.refine_landmarks.lower()]


REFINE_ALIASES = {"onet": "onet", "cascade": "cascade", "off": "off", "true": "onet", "false": "off", "1": "onet",
                  "0": "off", "yes": "onet", "no": "off"}


def motion_cameras(cfg: "DetectorConfig") -> dict:
    """{camera: MotionSettings} from --motion-camera CAMERA=MIN_CHANGED[:FORCE_EVERY_S]."""
    from dataclasses import replace

    from shared.config import ConfigError

    base, out = default_motion(cfg), {}
    for spec in cfg.motion_camera:
        cam, sep, rest = spec.partition("=")
        parts = rest.split(":")
        try:
            if not cam or not sep or len(parts) > 2:
                raise ValueError
            changed = float(parts[0])
            force = float(parts[1]) if len(parts) == 2 else base.force_every_s
            if not (0 <= changed <= 1 and 0 <= force <= 3600):
                raise ValueError
        except ValueError:
            raise ConfigError(f"motion_camera: {spec!r} is not CAMERA=MIN_CHANGED[:FORCE_EVERY_S] with "
                              "MIN_CHANGED in [0, 1] and FORCE_EVERY_S in [0, 3600]") from None
        out[cam] = replace(base, min_changed=changed, force_every_s=force)
    return out


def default_motion(cfg: "DetectorConfig"):
    from services.detector.motion import MotionSettings

    return MotionSettings(cfg.motion_min_changed, cfg.motion_pixel_delta, cfg.motion_force_every_s,
                          cfg.motion_track_hold_s, cfg.motion_faces_every_s)


def build(cfg: DetectorConfig) -> Stage:
    import torch

    from services.detector.motion import MotionGate
    from services.detector.stage import Gates, make_process
    from shared.vision import checkpoint, meta
    from shared.vision.detect import FaceDetector

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # every template the model's towers need: a fused pair gets one crop per tower from the same landmarks
    templates = checkpoint.templates_of(meta.read_meta(Path(cfg.model) if cfg.model else meta.default_path()))
    detector = FaceDetector(templates, min_face_size=cfg.min_face_size, device=cfg.device,
                            refine=cfg.refine)
    gates = Gates(cfg.min_face_size, cfg.min_prob, cfg.min_sharpness, cfg.max_faces)
    motion = MotionGate(default_motion(cfg), motion_cameras(cfg))
    process = make_process(detector.detect, gates, cfg.faces_topic, cfg.max_frame_age_ms / 1000,
                           cfg.crop_jpeg_quality, newest_only=cfg.newest_only, max_pixels=cfg.max_frame_pixels,
                           detect_many=detector.detect_many, motion=motion, shed_grace_s=cfg.shed_grace_ms / 1000)
    return Stage("detector", cfg.frames_topic, Frame.decode, process)


def main(argv: list[str]) -> int:
    cfg = load(DetectorConfig, argv, prog="facestream detector")
    return run_consumer_service("detector", cfg, lambda health, stop: build(cfg))
