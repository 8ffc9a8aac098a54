"""Alignment: the similarity fit and the warp put the landmarks where the template says."""
import dataclasses

import numpy as np
import pytest

from shared.vision.align import DLIB_150, AlignTemplate, align, similarity_transform


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_dlib_template_is_the_measured_one():
    assert DLIB_150.size == 150
    assert DLIB_150.points.dtype == np.float32 and DLIB_150.points.shape == (5, 2)
    np.testing.assert_allclose(DLIB_150.points[0], [48.2, 46.6], atol=1e-4)   # left eye
    np.testing.assert_allclose(DLIB_150.points[1], [102.6, 46.7], atol=1e-4)  # right eye
    np.testing.assert_allclose(DLIB_150.points[4], [99.1, 105.0], atol=1e-4)  # mouth right


def test_template_is_frozen_and_round_trips():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DLIB_150.size = 112
    with pytest.raises(ValueError):
        DLIB_150.points[0, 0] = 0.0  # the shared array is read-only too
    back = AlignTemplate.from_dict(DLIB_150.to_dict())
    assert back == DLIB_150 and hash(back) == hash(DLIB_150)


def test_recovers_an_exact_similarity():
    m = _similarity(1.7, 0.3, 12.0, -5.0)
    src = DLIB_150.points.astype(np.float64) + [[3, 1], [-2, 0], [0, 4], [1, -1], [0, 2]]
    got = similarity_transform(src, _apply(m, src))
    np.testing.assert_allclose(got, m, atol=1e-9)


def test_least_squares_on_noisy_points_is_close():
    rng = np.random.default_rng(0)
    m = _similarity(0.5, -0.2, 40.0, 10.0)
    src = rng.uniform(0, 300, size=(5, 2))
    dst = _apply(m, src) + rng.normal(0, 0.5, size=(5, 2))
    got = similarity_transform(src, dst)
    np.testing.assert_allclose(got[:, :2], m[:, :2], atol=0.02)


def test_never_returns_a_reflection():
    src = DLIB_150.points.astype(np.float64)
    mirrored = src.copy()
    mirrored[:, 0] = 150 - mirrored[:, 0]  # left/right swapped: only a reflection would fit exactly
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_rejects_degenerate_input():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), DLIB_150.points)
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_align_puts_marked_landmarks_on_the_template():
    """Paint five bright dots where a rotated, scaled face's landmarks are; after align they must sit on
    the template's points (to within a pixel)."""
    m = _similarity(2.2, 0.4, 180.0, 60.0)
    landmarks = _apply(m, DLIB_150.points.astype(np.float64))
    img = np.zeros((600, 700, 3), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        img[y - 2:y + 3, x - 2:x + 3] = 255
    crop = align(img, landmarks.astype(np.float32), DLIB_150)
    assert crop.shape == (150, 150, 3) and crop.dtype == np.uint8
    grey = crop[..., 0].astype(float)
    for tx, ty in DLIB_150.points:
        x0, y0 = int(tx) - 6, int(ty) - 6
        win = grey[y0:y0 + 13, x0:x0 + 13]
        wy, wx = np.unravel_index(np.argmax(win), win.shape)
        assert win.max() > 200
        assert abs(x0 + wx - tx) <= 1.5 and abs(y0 + wy - ty) <= 1.5


def test_align_rejects_non_rgb():
    with pytest.raises(ValueError):
        align(np.zeros((100, 100), np.uint8), DLIB_150.points, DLIB_150)
