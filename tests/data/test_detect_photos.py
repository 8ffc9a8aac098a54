"""Detection, alignment and the crop cache on real photos from ../shared/data."""


import numpy as np
import pytest

from shared import paths
from shared.vision.align import DLIB_150
from shared.vision.detect import Face, FaceDetector
from shared.vision.images import load_rgb

DATA = paths.data_root()
EXAMPLES = DATA / "face_recognition_examples"
GROUPS = DATA / "faceapi_bbt" / "group_photos"


@pytest.fixture(scope="module")
def detector():
    import torch
    torch.set_num_threads(2)
    return FaceDetector(DLIB_150)


def _check_face(f: Face, shape):
    assert f.crop.shape == (150, 150, 3) and f.crop.dtype == np.uint8
    assert f.landmarks.shape == (5, 2) and f.landmarks.dtype == np.float32
    x1, y1, x2, y2 = f.box
    assert 0 <= x1 < x2 <= shape[1] + 5 and 0 <= y1 < y2 <= shape[0] + 5
    assert f.face_size == pytest.approx(min(x2 - x1, y2 - y1))
    assert 0.0 < f.prob <= 1.0 and f.blur > 0


def test_one_face_photo_gives_one_aligned_face(detector):
    img = load_rgb(EXAMPLES / "tests" / "test_images" / "obama.jpg")
    faces = detector.detect(img)
    assert len(faces) == 1
    f = faces[0]
    _check_face(f, img.shape)
    assert f.prob > 0.99 and f.face_size > 150
    le, re, nose, ml, mr = f.landmarks
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]   # MTCNN order: the subject's left eye is image-left
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
    # A bright, in-focus face fills the crop: no black border from warping outside the image.
    assert f.crop[70:80, 70:80].mean() > 40


def test_group_photo_gives_several_faces(detector):
    img = load_rgb(GROUPS / "bbt4.jpg")
    faces = detector.detect(img)
    assert len(faces) >= 4
    for f in faces:
        _check_face(f, img.shape)
    boxes = np.array([f.box for f in faces])
    assert len(np.unique(np.round(boxes[:, 0] / 20))) >= 4  # different people, not one face found twice


def test_32bit_png_loads_as_rgb():
    img = load_rgb(EXAMPLES / "tests" / "test_images" / "32bit.png")
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_aligned_crops_are_cached_and_reused(detector, tmp_path, monkeypatch):
    """crop_cache.align_images detects each image once: a second call, and a call on a subset, read the cache."""
    import shutil

    from shared.vision import crop_cache

    monkeypatch.setattr(crop_cache, "CACHE_ROOT", tmp_path / "cache")
    root = tmp_path / "images"
    (root / "obama").mkdir(parents=True)
    (root / "blank").mkdir()
    shutil.copy(EXAMPLES / "tests" / "test_images" / "obama.jpg", root / "obama" / "obama_0001.jpg")
    from PIL import Image
    Image.new("RGB", (120, 120), (128, 128, 128)).save(root / "blank" / "blank_0001.jpg")
    paths = ["obama/obama_0001.jpg", "blank/blank_0001.jpg"]
    first = crop_cache.align_images(paths, root, detector, "center")
    assert first.found.tolist() == [True, False] and first.crops.shape == (2, 150, 150, 3)
    assert first.crops[1].max() == 0 and first.n_faces.tolist() == [1, 0]

    monkeypatch.setattr(detector, "detect", lambda rgb: pytest.fail("detected again instead of using the cache"))
    again = crop_cache.align_images(paths[::-1], root, detector, "center")
    assert again.paths == paths[::-1] and np.array_equal(again.crops[1], first.crops[0])
    people, names = crop_cache.align_people(["obama", "blank"], root, detector)
    assert names == ["obama"] and people.crops.shape == (1, 150, 150, 3)  # no-face rows are dropped


def test_refinement_averages_a_second_pass_on_the_aligned_crop(detector):
    """The refined points are the mean of the first pass's and those a second MTCNN pass finds on the
    aligned crop (mapped back into the image): a small move, towards where the upright face puts them."""
    from shared.vision.align import align, similarity_transform

    img = load_rgb(EXAMPLES / "tests" / "test_images" / "obama.jpg")
    first = FaceDetector(DLIB_150, refine=False)
    (f1,), (f2,) = first.detect(img), detector.detect(img)
    assert "-refine" in detector.settings_key() and "-refine" not in first.settings_key()
    move = np.abs(f2.landmarks - f1.landmarks).max()
    assert 0 < move < 0.05 * f1.face_size
    # The second estimate, recovered from the average, is where MTCNN sees the points on the first crop.
    second = 2 * f2.landmarks - f1.landmarks
    m = similarity_transform(f1.landmarks, DLIB_150.points)
    in_crop = (m @ np.c_[second, np.ones(5)].T).T
    assert np.abs(in_crop - DLIB_150.points).max() < 12  # near the template, as an aligned face should be
    assert np.array_equal(f2.crop, align(img, f2.landmarks, DLIB_150))


@pytest.mark.parametrize("h, w", [(20, 20), (1, 1), (39, 640), (12, 12)])
def test_a_frame_below_the_smallest_face_is_no_face_not_a_crash(detector, h, w):
    """facenet-pytorch's MTCNN fails in torch.cat of an empty list when the image is smaller than its
    smallest face: such a frame simply holds no face."""
    assert detector.detect(np.full((h, w, 3), 128, np.uint8)) == []


def test_onet_refinement_lands_near_the_whole_cascade_and_costs_no_detection(detector):
    """ONet alone on the face's box, carried into the aligned crop, finds about the points that the whole
    cascade run again on the crop finds (the previous default), while MTCNN's pyramid runs once: the keys
    of the three modes differ, so no cache mixes their crops."""
    img = load_rgb(EXAMPLES / "tests" / "test_images" / "obama.jpg")
    cascade, off = FaceDetector(DLIB_150, refine="cascade"), FaceDetector(DLIB_150, refine="off")
    (fo,), (fc,), (f0,) = detector.detect(img), cascade.detect(img), off.detect(img)
    assert detector.refine == "onet"
    assert np.abs(fo.landmarks - fc.landmarks).max() < 0.02 * fo.face_size
    assert np.abs(fo.landmarks - f0.landmarks).max() > 0, "the second estimate moved the points"
    assert len({detector.settings_key(), cascade.settings_key(), off.settings_key()}) == 3


def test_detect_many_equals_detect_frame_by_frame_across_sizes(detector):
    """Frames of one size share one pass through MTCNN; a batch of mixed sizes and a frame too small for
    any face give what detecting each alone gives."""
    a = load_rgb(EXAMPLES / "tests" / "test_images" / "obama.jpg")
    b = load_rgb(EXAMPLES / "tests" / "test_images" / "biden.jpg")
    tiny = np.zeros((20, 30, 3), np.uint8)
    images = [a, b, tiny, np.ascontiguousarray(a[:, ::-1])]
    many = detector.detect_many(images)
    for im, got in zip(images, many):
        alone = detector.detect(im)
        assert len(got) == len(alone)
        for x, y in zip(got, alone):
            assert np.abs(x.landmarks - y.landmarks).max() < 1e-3 and abs(x.prob - y.prob) < 1e-5
    assert many[2] == [] and len(many[0]) == 1
