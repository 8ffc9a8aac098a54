"""Images in and out: photo files (any mode, EXIF rotation applied) and JPEG bytes.

Pure functions on numpy arrays, RGB everywhere: OpenCV's BGR stays inside this module. A JPEG from the
network is measured by its header (`jpeg_size`) before it is decoded: a 5 KB file can say 30000 x 30000
and cost 2.7 GB to decode, so callers refuse it by its size first (`decode_jpeg(..., max_pixels=)`).
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


# Start-of-frame markers carry the image size: every SOFn except DHT (C4), JPG (C8) and DAC (CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a length field


# A progressive JPEG is decoded scan by scan over the whole image; ordinary encoders write about ten scans.
# Start-of-scan markers are never byte-stuffed in entropy-coded data, so counting them is exact and cheap.
MAX_SCANS = 64


class ImageRefused(ValueError):
    """Bytes that are not an image we decode: not a JPEG, no size in its header, or over a size limit."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, without decoding; None when the bytes are not a
    JPEG or hold no frame header before the image data. Reads only the marker segments."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            return None
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return (w, h) if w > 0 and h > 0 else None
        i += 2 + length
    return None


def decode_jpeg(jpeg: bytes, max_pixels: int | None = None, exact_size: tuple[int, int] | None = None
                ) -> np.ndarray | None:
    """JPEG bytes to HxWx3 uint8 RGB; None when the bytes do not decode. With `max_pixels` or `exact_size`
    ((width, height)), the header is read first and an image over the limit, of another size, or without a
    readable header raises ImageRefused before a single pixel is allocated."""
    if max_pixels is not None or exact_size is not None:
        size = jpeg_size(jpeg)
        if size is None:
            raise ImageRefused(f"not a JPEG with a readable frame header ({len(jpeg)} bytes)")
        w, h = size
        if exact_size is not None and (w, h) != tuple(exact_size):
            raise ImageRefused(f"{w}x{h} where {exact_size[0]}x{exact_size[1]} is required")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageRefused(f"{w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,}")
        scans = jpeg.count(b"\xff\xda")
        if scans > MAX_SCANS:  # a "scan bomb": each scan costs a pass over the whole image
            raise ImageRefused(f"{scans} scans, over the limit of {MAX_SCANS}")
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
