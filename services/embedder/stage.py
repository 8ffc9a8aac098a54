"""The embedder stage's work on a batch of FrameFaces: one model call for all their crops. No Kafka here.

Every input frame yields exactly one FrameEmbeddings (frames without faces too: the matcher's tracks
need to see time pass), except frames the detector marked stale, which end their journey here.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from shared import metrics
from shared.stage import InvalidMessage, Output, Result
from shared.vision.images import ImageRefused, decode_jpeg
from shared.schemas import EmbeddedFace, FrameEmbeddings, FrameFaces

STAGE = "embedder"


def decode_crop(jpeg: bytes, size: int) -> np.ndarray:
    """An aligned crop, its JPEG header checked first: a crop that is not exactly the model's size is
    refused without being decoded (a 16000 x 16000 bomb costs nothing)."""
    try:
        rgb = decode_jpeg(jpeg, exact_size=(size, size))
    except ImageRefused as e:
        if "required" in str(e):
            raise InvalidMessage(f"a face crop is {e}, the model takes {size}x{size}: the detector and the "
                                 "embedder disagree on the checkpoint, or the crop is forged") from None
        raise InvalidMessage(f"a face crop is not a decodable JPEG ({len(jpeg)} bytes): {e}") from None
    if rgb is None or rgb.shape[:2] != (size, size):
        raise InvalidMessage(f"a face crop is not a decodable {size}x{size} JPEG ({len(jpeg)} bytes)")
    return rgb


def face_crops(face, sizes: Sequence[int]) -> list[np.ndarray]:
    """A face's crops, one per tower of the model (`sizes`: each tower's input side), decoded and checked."""
    jpegs = (face.crop_jpeg, *face.more_crops)
    if len(jpegs) != len(sizes):
        raise InvalidMessage(f"a face carries {len(jpegs)} crop(s), the model's {len(sizes)} tower(s) need "
                             f"{len(sizes)}: the detector runs another model's templates, or the face is forged")
    return [decode_crop(j, s) for j, s in zip(jpegs, sizes)]


def make_process(embed: Callable, input_size: int | Sequence[int], model_version: str,
                 embeddings_topic: str, device: str = "cpu"):
    """The stage's batch function. `embed` maps (N, S, S, 3) uint8 crops to (N, D) unit vectors, or, for
    a fused model (`input_size` a list, one side per tower), a tuple of such batches. Every frame's crops
    are decoded and checked first; a frame with a bad crop gets an InvalidMessage as its result and the
    others go through the one model call."""
    sizes = [int(input_size)] if isinstance(input_size, int) else [int(s) for s in input_size]

    def process(frames: list[FrameFaces]) -> list[Result]:
        bad: dict[int, InvalidMessage] = {}
        crops: list[list[np.ndarray]] = []
        for k, f in enumerate(frames):
            if f.status != "ok":
                continue
            try:
                mine = [face_crops(face, sizes) for face in f.faces]
            except InvalidMessage as e:
                bad[k] = e
                continue
            crops += mine
        vectors = np.zeros((0, 0), np.float32)
        if crops:
            t0 = time.perf_counter()
            per_tower = [np.stack([c[t] for c in crops]) for t in range(len(sizes))]
            vectors = embed(per_tower[0] if len(sizes) == 1 else tuple(per_tower))
            metrics.MODEL_BATCH_SECONDS.labels(device).observe(time.perf_counter() - t0)
            metrics.FACES_EMBEDDED.labels(model_version).inc(len(crops))
            if len(vectors) != len(crops):
                raise RuntimeError(f"the model returned {len(vectors)} vectors for {len(crops)} crops")
        out: list[Result] = []
        i = 0
        for k, f in enumerate(frames):
            if k in bad:
                out.append(bad[k])
                continue
            if f.status != "ok":
                out.append([])
                continue
            faces = []
            for face in f.faces:
                # the detector's quality measures travel on: the matcher weighs each face's vote by them
                faces.append(EmbeddedFace(face.bbox, face.prob, vectors[i], face.face_size, face.blur))
                i += 1
            result = FrameEmbeddings(f.camera_id, f.seq, f.capture_ts, f.width, f.height, model_version, tuple(faces),
                                     session=f.session)
            out.append([Output(embeddings_topic, f.camera_id.encode(), result.encode())])
        return out

    return process
