"""The embedder stage's work on a batch of FrameFaces: one model call for all their crops. No Kafka here.

Every input frame yields exactly one FrameEmbeddings (frames without faces too: the matcher's tracks
need to see time pass), except frames the detector marked stale, which end their journey here.
"""
from __future__ import annotations

import time
from typing import Callable

import cv2
import numpy as np

from shared import metrics
from shared.kafka_loop import InvalidMessage, Output
from shared.schemas import EmbeddedFace, FrameEmbeddings, FrameFaces

STAGE = "embedder"


def decode_crop(jpeg: bytes, size: int) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidMessage(f"a face crop is not a decodable JPEG ({len(jpeg)} bytes)")
    if bgr.shape[:2] != (size, size):
        raise InvalidMessage(f"a face crop is {bgr.shape[1]}x{bgr.shape[0]}, the model takes {size}x{size}: "
                             "the detector and the embedder disagree on the checkpoint")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def make_process(embed: Callable[[np.ndarray], np.ndarray], input_size: int, model_version: str,
                 embeddings_topic: str, device: str = "cpu"):
    """The stage's batch function. `embed` maps (N, S, S, 3) uint8 crops to (N, D) unit vectors."""

    def process(frames: list[FrameFaces]) -> list[list[Output]]:
        live = [f for f in frames if f.status == "ok"]
        crops = [decode_crop(face.crop_jpeg, input_size) for f in live for face in f.faces]
        vectors = np.zeros((0, 0), np.float32)
        if crops:
            t0 = time.perf_counter()
            vectors = embed(np.stack(crops))
            metrics.MODEL_BATCH_SECONDS.labels(device).observe(time.perf_counter() - t0)
            metrics.FACES_EMBEDDED.labels(model_version).inc(len(crops))
            if len(vectors) != len(crops):
                raise RuntimeError(f"the model returned {len(vectors)} vectors for {len(crops)} crops")
        out, i = [], 0
        for f in frames:
            if f.status != "ok":
                out.append([])
                continue
            faces = []
            for face in f.faces:
                faces.append(EmbeddedFace(face.bbox, face.prob, vectors[i]))
                i += 1
            result = FrameEmbeddings(f.camera_id, f.seq, f.capture_ts, f.width, f.height, model_version, tuple(faces))
            out.append([Output(embeddings_topic, f.camera_id.encode(), result.encode())])
        return out

    return process
