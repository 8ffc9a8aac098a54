"""Hypothesis strategies for hostile messages: random bytes, and valid messages of every topic mutated
(fields dropped, retyped, resized, NaN/inf, huge, empty; JPEG payloads corrupted or made to claim a huge
size). Shared by the unit fuzz tests (stand-in MTCNN and model) and the data tier (the real ones)."""
from __future__ import annotations

import cv2
import msgpack
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.schemas import DetectedFace, EmbeddedFace, Frame, FrameEmbeddings, FrameFaces
from shared.stage import InvalidMessage, Stage, handle

# Bounded for CI; FACESTREAM_FUZZ_EXAMPLES raises it for a longer hunt (tests/conftest.py loads the profile).
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def jpeg(w: int, h: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def claim_size(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its frame header rewritten to claim w x h: a decompression bomb of a few KB."""
    b = bytearray(data)
    for i in range(2, len(b) - 9):
        if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC2):
            b[i + 5:i + 9] = bytes([h >> 8, h & 255, w >> 8, w & 255])
            break
    return bytes(b)


def valid_frame(seq: int = 0, w: int = 64, h: int = 48, camera: str = "cam") -> bytes:
    return Frame(camera, seq, 1_700_000_000.0 + seq, w, h, jpeg(w, h, seq)).encode()


def valid_faces(seq: int = 0, n: int = 2, size: int = 150, camera: str = "cam", more: tuple[int, ...] = ()) -> bytes:
    """`more`: the sides of a fused model's further towers' crops (faces/v3 more_crops)."""
    faces = tuple(DetectedFace((0.0, 0.0, 50.0, 50.0), 0.99, (1.0,) * 10, jpeg(size, size, i), 50.0, 80.0,
                               tuple(jpeg(m, m, i) for m in more))
                  for i in range(n))
    return FrameFaces(camera, seq, 1_700_000_000.0 + seq, 640, 360, faces, detect_ts=1_700_000_000.5).encode()


def default_model_sizes() -> tuple[int, ...]:
    """The crop side of each tower of the pipeline's default model (one entry for a single network)."""
    from shared.vision import checkpoint, meta

    return tuple(int(t["input_size"]) for t in checkpoint.tower_inputs(meta.read_meta(meta.default_path())))


def valid_embeddings(seq: int = 0, dim: int = 128, camera: str = "cam", model: str = "m1") -> bytes:
    v = np.zeros(dim, np.float32)
    v[seq % dim] = 1
    face = EmbeddedFace((0.0, 0.0, 50.0, 50.0), 0.99, v)
    return FrameEmbeddings(camera, seq, 1_700_000_000.0 + seq, 640, 360, model, (face,)).encode()


# Any value msgpack can carry, including the awkward ones: huge ints, NaN and infinities, empty and long
# strings and bytes, nested lists and maps.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300), st.binary(max_size=300),
    st.sampled_from([b"", "", 0, -1, 2 ** 31, float("nan"), float("inf"), b"\xff\xd8", "x" * 5000]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8),
                                                                                            inner, max_size=6),
                      max_leaves=20)


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """A valid message with one to three mutations of its fields (or of a face inside it), re-packed."""
    obj = msgpack.unpackb(valid, raw=False)
    for _ in range(draw(st.integers(1, 3))):
        target = obj
        if isinstance(obj.get("faces"), list) and obj["faces"] and draw(st.booleans()):
            target = draw(st.sampled_from(obj["faces"]))
        if not isinstance(target, dict) or not target:
            break
        key = draw(st.sampled_from(sorted(target, key=str)))
        op = draw(st.sampled_from(["drop", "retype", "empty", "bitflip", "bomb", "grow"]))
        val = target[key]
        if op == "drop":
            del target[key]
        elif op == "retype":
            target[key] = draw(values)
        elif op == "empty":
            target[key] = type(val)() if isinstance(val, (str, bytes, list, dict)) else 0
        elif op == "bitflip" and isinstance(val, bytes) and val:
            b = bytearray(val)
            for pos in draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
                b[pos] ^= 1 << draw(st.integers(0, 7))
            target[key] = bytes(b)
        elif op == "bomb" and isinstance(val, bytes):
            target[key] = claim_size(val, draw(st.integers(1, 65535)), draw(st.integers(1, 65535)))
        elif op == "grow" and isinstance(val, list):
            target[key] = val * draw(st.integers(2, 40))
        elif op == "grow" and isinstance(val, (int, float)) and not isinstance(val, bool):
            target[key] = draw(st.sampled_from([2 ** 62, -2 ** 62, 1e308, -1e308, 10 ** 6]))
    return msgpack.packb(obj, use_bin_type=True)


def hostile(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations of the valid message, or mutations of it."""
    return st.one_of(st.binary(max_size=3000), st.integers(0, len(valid)).map(lambda n: valid[:n]),
                     mutated(valid))


def check_outcomes(stage: Stage, raws: list[bytes]) -> list:
    """The property every stage must keep: one result per message, an output list or an InvalidMessage
    with a reason, and nothing raised (a raise would stop the process: a crash loop on that message)."""
    results = handle(stage, raws)
    assert len(results) == len(raws)
    for r in results:
        assert isinstance(r, (list, InvalidMessage)), r
        if isinstance(r, InvalidMessage):
            assert r.reason and r.kind in ("schema", "invalid")
    return results
