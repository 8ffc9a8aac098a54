"""Frame encoding on a real clip's frame (../shared/data/videos)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.ingest.cameras import EncodedFrame, FrameTooLarge, encode_to_fit, scaled_size


@pytest.fixture(scope="module")
def crowd_frame(data_dir) -> np.ndarray:
    cap = cv2.VideoCapture(str(data_dir / "videos" / "crowd_royal_opera_house_unlabeled_4s.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok, "could not read a frame of the crowd clip"
    return bgr


def decode(enc: EncodedFrame) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(enc.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (enc.height, enc.width)
    return img


def test_a_frame_that_fits_keeps_its_size(crowd_frame):
    enc = encode_to_fit(crowd_frame, 85, None, 900_000)
    assert (enc.width, enc.height) == (1920, 1080) and len(enc.jpeg) <= 900_000
    assert np.abs(decode(enc).astype(int) - crowd_frame).mean() < 4  # the same picture, JPEG-close


def test_a_frame_over_the_limit_is_downscaled_until_it_fits(crowd_frame):
    full = len(encode_to_fit(crowd_frame, 95, None, 10**8).jpeg)
    limit = full // 5
    enc = encode_to_fit(crowd_frame, 95, None, limit)
    assert len(enc.jpeg) <= limit
    # the widest size that fits, by bisection: downscaling must not give away much more than the limit needs
    lo, hi = 64, 1920
    while hi - lo > 8:
        mid = (lo + hi) // 2
        small = cv2.resize(crowd_frame, (mid, round(mid * 9 / 16)), interpolation=cv2.INTER_AREA)
        fits = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].nbytes <= limit
        lo, hi = (mid, hi) if fits else (lo, mid)
    assert 0.85 * lo <= enc.width < 1920
    assert enc.width / enc.height == pytest.approx(16 / 9, rel=0.01)
    small = cv2.resize(crowd_frame, (enc.width, enc.height), interpolation=cv2.INTER_AREA)
    assert np.abs(decode(enc).astype(int) - small).mean() < 4


def test_max_width_downscales_first(crowd_frame):
    enc = encode_to_fit(crowd_frame, 85, 640, 900_000)
    assert (enc.width, enc.height) == (640, 360)
    assert scaled_size(1920, 1080, 640) == (640, 360) and scaled_size(320, 240, 640) == (320, 240)


def test_an_impossible_limit_fails_clearly(crowd_frame):
    with pytest.raises(FrameTooLarge, match="does not fit in 2000 bytes"):
        encode_to_fit(crowd_frame, 95, None, 2000, min_width=400)
