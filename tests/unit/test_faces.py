"""MTCNN + alignment on real photos, and the rules that pick one face."""


import numpy as np
import pytest

from shared.vision.align import DLIB_150
from shared.vision.detect import Face, FaceDetector, pick_face

@pytest.fixture(scope="module")
def detector():
    import torch
    torch.set_num_threads(2)
    return FaceDetector(DLIB_150)


def _face(x1, y1, x2, y2):
    return Face(box=(x1, y1, x2, y2), prob=0.99, landmarks=np.zeros((5, 2), np.float32),
                crop=np.zeros((2, 2, 3), np.uint8), face_size=min(x2 - x1, y2 - y1), blur=1.0)


def test_no_face_gives_an_empty_list(detector):
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_rejects_non_uint8_rgb(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((100, 100, 4), np.uint8))


def test_pick_face_rules():
    big_corner = _face(0, 0, 100, 100)
    small_centre = _face(110, 110, 140, 140)  # centre (125, 125) = the centre of a 250x250 image
    faces = [big_corner, small_centre]
    assert pick_face(faces, (250, 250, 3), "largest") is big_corner
    assert pick_face(faces, (250, 250, 3), "center") is small_centre
    assert pick_face(faces, (250, 250, 3), "only") is None
    assert pick_face([small_centre], (250, 250, 3), "only") is small_centre
    assert pick_face([], (250, 250, 3), "largest") is None
    with pytest.raises(ValueError):
        pick_face(faces, (250, 250, 3), "first")


@pytest.mark.parametrize("refine", ["onet", "cascade"])
def test_refinement_keeps_the_first_points_when_the_second_pass_finds_nothing(refine):
    pts = DLIB_150.points[None] + 10
    blank = [np.zeros((150, 150, 3), np.uint8)]
    det = FaceDetector(DLIB_150, refine=refine)
    assert np.array_equal(det.refine_landmarks(blank, pts, np.array([[20.0, 20.0, 130.0, 130.0]])), pts)


def test_onet_refinement_needs_the_boxes_and_unknown_modes_are_refused(detector):
    with pytest.raises(ValueError, match="first-pass box"):
        detector.refine_landmarks([np.zeros((150, 150, 3), np.uint8)], DLIB_150.points[None])
    with pytest.raises(ValueError, match="refine must be one of"):
        FaceDetector(DLIB_150, refine="twice")
    assert FaceDetector(DLIB_150, refine=True).refine == "onet" and FaceDetector(DLIB_150, refine=False).refine == "off"


