"""The embedder with two towers beside one tower, in one run: faces/s of `EmbeddingModel.embed` for the
ResNet alone, MobileFaceNet alone and their fused pair (both towers in one call, each on its own crops),
at batch 1, 16 and 64, one torch thread, contenders interleaved per repeat; and the embedder stage's batch
function (decode every crop JPEG, embed, encode) for the ResNet and for the pair.

The crops are real LFW faces, one per person, through the pipeline's detector aligned to both templates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.common import Settings, interleaved, ratio, stats
from bench.inputs import aligned_crop_sets, crop_jpegs, frame_faces
from shared import paths

BATCHES = (1, 16, 64)
QUICK_BATCHES = (1, 16)
CHECKPOINTS = {"resnet": "faceapi_resnet128.pt", "mobilefacenet": "mobilefacenet192.pt", "fused": "fused_resnet_mfn.pt"}


def run(settings: Settings) -> dict[str, Any]:
    from services.embedder.stage import make_process
    from shared.vision.detect import FaceDetector
    from shared.vision.embed import EmbeddingModel

    torch.set_num_threads(1)
    models = {k: EmbeddingModel.load(paths.MODELS_DIR / v, device="cpu") for k, v in CHECKPOINTS.items()}
    c150, c112 = aligned_crop_sets(FaceDetector(models["fused"].templates, min_face_size=40))
    inputs = {"resnet": lambda i: c150[i], "mobilefacenet": lambda i: c112[i], "fused": lambda i: (c150[i], c112[i])}
    repeats = 1 if settings.quick else 3
    work = 8 if settings.quick else 32
    out: dict[str, Any] = {}
    for b in (QUICK_BATCHES if settings.quick else BATCHES):
        calls, idx = max(1, work // b), np.arange(b) % len(c150)
        j150, j112 = crop_jpegs(c150[idx]), crop_jpegs(c112[idx])
        frames_one = frame_faces(j150, b, 1, ["bench-cam"])
        frames_two = frame_faces(j150, b, 1, ["bench-cam"], more_jpegs=j112)
        contenders = {}
        for name, m in models.items():
            x = inputs[name](idx)
            contenders[f"embed_{name}"] = (lambda m=m, x=x: [m.embed(x, batch_size=b) for _ in range(calls)])
        stage_one = make_process(lambda c: models["resnet"].embed(c, batch_size=b), 150, "r", "unused")
        stage_two = make_process(lambda c: models["fused"].embed(c, batch_size=b), [150, 112], "f", "unused")
        contenders["stage_resnet"] = lambda: [stage_one(frames_one) for _ in range(calls)]
        contenders["stage_fused"] = lambda: [stage_two(frames_two) for _ in range(calls)]
        for c in contenders.values():  # warm-up of each shape
            c()
        times = interleaved(contenders, repeats, warmup=False)
        faces = calls * b
        out[str(b)] = {"faces_per_s": {k: faces / stats(v)["median"] for k, v in times.items()},
                       "ms_per_batch": {k: stats([t / calls * 1000 for t in v]) for k, v in times.items()},
                       "fused_over_resnet": ratio(times["embed_resnet"], times["embed_fused"]),
                       "stage_fused_over_stage_resnet": ratio(times["stage_resnet"], times["stage_fused"])}
    return {"config": {"repeats": repeats, "torch_threads": 1, "min_faces_per_measurement": work,
                       "checkpoints": CHECKPOINTS, "flip_average": {k: m.flip_average for k, m in models.items()}},
            "method": "contenders interleaved per repeat after a warm-up; faces/s from the median repeat; ratio = "
                      "median over repeats of the ResNet's time over the pair's, same faces (the pair's throughput "
                      "as a share of one tower's)",
            "by_batch": out}
