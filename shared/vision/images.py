"""Images in and out: photo files (any mode, EXIF rotation applied) and JPEG bytes.

Pure functions on numpy arrays, RGB everywhere: OpenCV's BGR stays inside this module.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB: greyscale, palette and 32-bit RGBA files included, EXIF rotation
    applied (phone photos are often stored sideways)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def decode_jpeg(jpeg: bytes) -> np.ndarray | None:
    """JPEG (or any OpenCV-readable) bytes to HxWx3 uint8 RGB; None when the bytes are not an image."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """HxWx3 uint8 RGB to JPEG bytes at `quality` (1-100)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as JPEG")
    return buf.tobytes()
