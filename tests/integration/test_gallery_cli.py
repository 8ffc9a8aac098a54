"""`facestream gallery` and `facestream recognize` against the real Redis, with the real detector and model."""
from __future__ import annotations

import json
import uuid

import cv2
import pytest
import redis

from tests.integration.conftest import facestream

pytestmark = pytest.mark.integration


@pytest.fixture
def gallery(redis_url):
    prefix = f"facestream:test-{uuid.uuid4().hex[:8]}"
    yield ["--redis-url", redis_url, "--prefix", prefix]
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)


def listed(gallery) -> dict[str, int]:
    res = facestream("gallery", *gallery, "list", "--json")
    assert res.returncode == 0, res.stderr
    return {d["name"]: d["embeddings"] for d in map(json.loads, res.stdout.splitlines())}


def test_bad_photos_are_refused_with_the_file_and_the_reason_and_nothing_is_written(gallery, data_dir, tmp_path):
    ex = data_dir / "face_recognition_examples/examples"
    no_face = tmp_path / "suit_no_face.jpg"  # a real photo's lower part: a suit and a background, no face
    img = cv2.imread(str(ex / "obama-1080p.jpg"))
    assert cv2.imwrite(str(no_face), img[int(img.shape[0] * 0.62):])
    group = data_dir / "faceapi_bbt/group_photos/bbt1.jpg"
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, not a JPEG")
    good = ex / "knn_examples/train/obama/obama.jpg"

    res = facestream("gallery", *gallery, "enroll", "Barack_Obama", str(no_face), str(group), str(not_image), str(good))
    assert res.returncode == 1
    assert f"{no_face}: no face found" in res.stderr
    assert f"{group}: 4 faces found and no rule to choose one" in res.stderr
    assert f"{not_image}: not a readable image" in res.stderr
    assert "nothing enrolled for Barack_Obama" in res.stderr
    assert listed(gallery) == {}, "a refused enrollment writes nothing"

    res = facestream("gallery", *gallery, "enroll", "Barack_Obama", str(no_face), str(good), "--skip-bad")
    assert res.returncode == 1 and "enrolled Barack_Obama: 1 embedding(s)" in res.stdout
    assert listed(gallery) == {"Barack_Obama": 1}

    assert facestream("gallery", *gallery, "remove", "Barack_Obama").returncode == 0
    assert listed(gallery) == {}
    assert facestream("gallery", *gallery, "remove", "Barack_Obama").returncode == 1


def test_recognize_names_every_face_in_a_photo(gallery, data_dir, tmp_path):
    train = data_dir / "face_recognition_examples/examples/knn_examples/train"
    res = facestream("gallery", *gallery, "enroll-all", str(train))
    assert res.returncode == 0, res.stderr
    assert listed(gallery) == {"alex_lacamoire": 1, "biden": 2, "kit_harington": 2, "obama": 2, "rose_leslie": 2}
    out = tmp_path / "annotated.jpg"
    photo = data_dir / "face_recognition_examples/examples/two_people.jpg"
    res = facestream("recognize", str(photo), "--json", "--annotate", str(out),
                     "--redis-url", gallery[1], "--prefix", gallery[3])
    assert res.returncode == 0, res.stderr
    faces = sorted(json.loads(res.stdout)["faces"], key=lambda f: f["box"][0])
    assert [f["name"] for f in faces] == ["obama", "biden"]  # Obama on the left
    assert cv2.imread(str(out)).shape == cv2.imread(str(photo)).shape
