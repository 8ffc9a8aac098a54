"""`crop_cache.crops_for`: a fused model's further crops come from the cached landmarks, and are made again
when an image's landmarks change (a new detection), never served stale (pure: synthetic images, no MTCNN)."""
import cv2
import numpy as np

from shared.vision import crop_cache
from shared.vision.align import ARCFACE_112, DLIB_150, align
from shared.vision.crop_cache import AlignedSet, crops_for

LM = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)


class Det:
    template = DLIB_150

    def settings_key(self):
        return "fake"


def _set(landmarks):
    return AlignedSet(["a.png"], np.zeros((1, 150, 150, 3), np.uint8), np.array([True]), np.array([1]),
                      np.zeros((1, 4), np.float32), np.ones(1, np.float32), landmarks[None])


def test_further_crops_follow_the_landmarks_they_were_aligned_from(tmp_path, monkeypatch):
    monkeypatch.setattr(crop_cache, "CACHE_ROOT", tmp_path / "cache")
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    first, = crops_for(_set(LM), tmp_path, Det(), [ARCFACE_112], "center")
    np.testing.assert_array_equal(first[0], align(rgb, LM, ARCFACE_112))
    again, = crops_for(_set(LM), tmp_path, Det(), [ARCFACE_112], "center")  # from the cache file
    np.testing.assert_array_equal(again, first)
    moved, = crops_for(_set(LM + 5), tmp_path, Det(), [ARCFACE_112], "center")
    np.testing.assert_array_equal(moved[0], align(rgb, LM + 5, ARCFACE_112))
    assert not np.array_equal(moved, first)


def test_the_detectors_own_template_is_the_cached_crops(tmp_path, monkeypatch):
    monkeypatch.setattr(crop_cache, "CACHE_ROOT", tmp_path / "cache")
    s = _set(LM)
    own, = crops_for(s, tmp_path, Det(), [DLIB_150], "center")
    assert own is s.crops or np.array_equal(own, s.crops)
