"""JPEG headers are read before anything is decoded (shared.vision.images), on synthetic images."""
import cv2
import numpy as np
import pytest

from shared.vision.images import ImageRefused, decode_jpeg, jpeg_size
from tests.fuzz_messages import claim_size  # the one header rewriter; callers check the size it claims


def jpeg(w: int, h: int, **params) -> bytes:
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params.get("progressive") else []
    return cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8), flags)[1].tobytes()


@pytest.mark.parametrize("w, h, progressive", [(64, 48, False), (1, 1, False), (1920, 1080, True), (150, 150, False)])
def test_the_header_gives_the_size_of_baseline_and_progressive_jpegs(w, h, progressive):
    assert jpeg_size(jpeg(w, h, progressive=progressive)) == (w, h)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n....", b"\xff\xd8\xff\xda\x00\x02",
                                  b"\xff\xd8\xff\xe0\x00\x01", b"\xff\xd8" + b"\x00" * 100])
def test_bytes_without_a_frame_header_have_no_size(data):
    assert jpeg_size(data) is None


def test_a_bomb_is_refused_by_its_header_before_decoding():
    bomb = claim_size(jpeg(64, 64), 30000, 30000)
    assert jpeg_size(bomb) == (30000, 30000) and len(bomb) < 6000
    with pytest.raises(ImageRefused, match="30000x30000 is 900,000,000 pixels, over the limit of 8,294,400"):
        decode_jpeg(bomb, max_pixels=3840 * 2160)


def test_a_crop_of_another_size_is_refused_without_decoding():
    with pytest.raises(ImageRefused, match="16000x16000 where 150x150 is required"):
        decode_jpeg(claim_size(jpeg(150, 150), 16000, 16000), exact_size=(150, 150))
    assert decode_jpeg(jpeg(150, 150), exact_size=(150, 150)).shape == (150, 150, 3)


def test_an_image_within_the_limit_decodes_to_rgb():
    rgb = decode_jpeg(jpeg(64, 48), max_pixels=64 * 48)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
