"""`python -m bench.gpu_detector`: MTCNN and the whole detector on a GPU, 720p and 1080p frames.

    python -m bench.gpu_detector              # on a CUDA machine
    python -m bench.gpu_detector --smoke      # CPU, 2 frames a size: CI checks that it still runs

Contenders per frame size (real clips: 1280x720 Biden, 1920x1080 the opera-house crowd), each the median
over repeats, synchronized: `mtcnn` (shared/vision/mtcnn.py one frame a call), `mtcnn_batch` (all frames of
the size in one call), `detector` (FaceDetector.detect_many as the service runs it: MTCNN, ONet landmark
refinement, alignment to both towers' templates, the blur measure). Then `cameras_per_gpu`, a model, not
a measurement of a pipeline: min(detector frames/s / 5 fps, embedder faces/s (gpu_embedder.json's best
variant, if that file is there) / (5 fps x faces per frame)) at each size. Writes <out>/gpu_detector.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bench.common import RESULTS, SCHEMA, load_average, machine_facts, model_info, write_json
from bench.gpu_embedder import gpu_facts
from shared.config import ConfigError, build_parser, parse, setting

FPS = 5.0  # per camera, as the capacity figure on the CPU


@dataclass(frozen=True)
class GpuDetectorConfig:
    """python -m bench.gpu_detector: MTCNN and the detector on a GPU, 720p and 1080p."""
    smoke: bool = setting(False, "CPU, 2 frames a size, 1 repeat: that the script runs")
    model: Path | None = setting(None, "checkpoint whose templates the detector aligns to (default models/facestream.pt)")
    out: Path = setting(RESULTS, "results folder (default bench/results)")
    frames: int = setting(16, "frames per size", ge=1, le=256)
    repeats: int = setting(5, "repeats per contender", ge=1, le=100)


def parser() -> argparse.ArgumentParser:
    return build_parser(GpuDetectorConfig, "python -m bench.gpu_detector")


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> GpuDetectorConfig:
    return parse(GpuDetectorConfig, argv, env, parser=parser())[0]


def _timed(fn, dev: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up: cuDNN picks its algorithms for these shapes
    out = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def run(a: GpuDetectorConfig) -> dict[str, Any]:
    from bench.inputs import video_frames
    from shared.vision import checkpoint, meta
    from shared.vision.detect import FaceDetector

    dev = torch.device("cpu" if a.smoke or not torch.cuda.is_available() else "cuda")
    n, repeats = (2, 1) if a.smoke else (a.frames, a.repeats)
    templates = checkpoint.templates_of(meta.read_meta(a.model or meta.default_path()))
    det = FaceDetector(templates, min_face_size=40, device=str(dev))
    embedder = None
    emb_path = a.out / "gpu_embedder.json"
    if emb_path.exists():
        best = json.loads(emb_path.read_text())["result"].get("best")
        embedder = best["faces_per_s"] if best else None
    by_size: dict[str, Any] = {}
    for size in ("1280x720", "1920x1080"):
        rgbs = [np.ascontiguousarray(f.rgb) for f in video_frames(size, n, step=3)]
        faces = sum(len(f) for f in det.detect_many(rgbs)) / len(rgbs)
        times = {"mtcnn": _timed(lambda: [det.mtcnn.detect([r]) for r in rgbs], dev, repeats),
                 "mtcnn_batch": _timed(lambda: det.mtcnn.detect(rgbs), dev, repeats),
                 "detector": _timed(lambda: det.detect_many(rgbs), dev, repeats)}
        fps = {k: len(rgbs) / statistics.median(v) for k, v in times.items()}
        cams = fps["detector"] / FPS
        if embedder and faces:
            cams = min(cams, embedder / (FPS * faces))
        by_size[size] = {"frames": len(rgbs), "faces_per_frame": faces, "frames_per_s": fps,
                         "seconds": times, "cameras_per_gpu": cams,
                         "cameras_per_gpu_limited_by": "detector" if cams == fps["detector"] / FPS else "embedder"}
        print(f"[gpu_detector] {size}: " + ", ".join(f"{k} {v:.1f} frames/s" for k, v in fps.items())
              + f"; {faces:.1f} faces a frame; cameras per GPU at {FPS:g} fps: {cams:.0f}", flush=True)
    return {"config": {"device": str(dev), "frames": n, "repeats": repeats, "refine": det.refine,
                       "embedder_faces_per_s": embedder, "camera_fps": FPS, "smoke": a.smoke},
            "method": "median over repeats of one call over all frames (synchronized), after one warm-up call; "
                      "cameras_per_gpu = min(detector frames/s / fps, embedder faces/s / (fps x faces a frame))",
            "by_size": by_size}


def main(argv: list[str] | None = None) -> int:
    try:
        a = config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        parser().error(str(e))
    load0, t0 = load_average(), time.monotonic()
    result = run(a)
    doc = {"schema": SCHEMA, "part": "gpu_detector", "mode": "smoke" if a.smoke else "full",
           "machine": {**machine_facts(), "gpu": gpu_facts(), "load_average_start": load0,
                       "load_average_end": load_average()},
           "model": model_info(a.model), "seconds": time.monotonic() - t0, "result": result, "error": None}
    print(f"[gpu_detector] wrote {write_json(a.out / 'gpu_detector.json', doc)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
