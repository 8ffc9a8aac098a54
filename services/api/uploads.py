"""Uploaded images to RGB arrays, under the pipeline's image rules: a size limit on the bytes, a pixel
limit read from the header before anything is decoded, and one line that says why a file is refused."""
from __future__ import annotations

import io

import numpy as np


class UploadRefused(ValueError):
    """`<file>: <why>` on one line; `file` and `reason` apart, for a reply that lists refusals per file."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def decode_upload(filename: str, data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB of an uploaded image (any format PIL reads, EXIF rotation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise UploadRefused(filename, "empty file")
    if len(data) > max_bytes:
        raise UploadRefused(filename, f"{len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
            if w * h > max_pixels:
                raise UploadRefused(filename, f"{w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,}")
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UploadRefused:
        raise
    except UnidentifiedImageError:
        raise UploadRefused(filename, "not an image (no format PIL reads)") from None
    except Exception as e:  # a truncated or corrupt file: PIL raises many kinds
        raise UploadRefused(filename, f"not a readable image ({type(e).__name__}: {e})") from None


def shown_filename(name: str | None) -> str:
    """An upload's file name as it may appear in a reply or a log: its last path part, printable, short."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c if c.isprintable() else "?" for c in base)[:100]
    return clean or "upload"
