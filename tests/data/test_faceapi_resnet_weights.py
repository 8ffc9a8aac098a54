"""The face-api ResNet port with its real weights (needs `make models` and ../shared/data)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared import paths
from shared.vision import checkpoint
from shared.vision.nets.faceapi_resnet import (EXPECTED_BYTES, EXPECTED_TENSORS, MANIFEST_NAME, WEIGHTS_NAME,
                                               load_tfjs_state_dict, preprocess, read_tfjs_tensors)

MODELS = paths.MODELS_DIR

CONVERTED = MODELS / "faceapi_resnet128.pt"

TFJS_DIR = MODELS / "cache" / "face-api-1.7.15"

DATA = paths.data_root()

IMAGES = DATA / "face_recognition_examples"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make models` first", pytrace=False)
    return path


@pytest.fixture(scope="module")
def tfjs_files():
    return _need(TFJS_DIR / MANIFEST_NAME), _need(TFJS_DIR / WEIGHTS_NAME)


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(2)
    return checkpoint.build_model(checkpoint.load(_need(CONVERTED)))


def _descriptors(net, files):
    from shared.vision.align import DLIB_150
    from shared.vision.detect import FaceDetector, pick_face
    from shared.vision.images import load_rgb

    det = FaceDetector(DLIB_150)
    crops = []
    for f in files:
        img = load_rgb(IMAGES / f)
        crops.append(pick_face(det.detect(img), img.shape, "largest").crop)
    with torch.inference_mode():
        return net(preprocess(np.stack(crops))).numpy()


def test_real_manifest_matches_the_binary(tfjs_files):
    manifest, weights = tfjs_files
    specs = [w for g in json.loads(manifest.read_text()) for w in g["weights"]]
    assert len(specs) == EXPECTED_TENSORS
    assert weights.stat().st_size == EXPECTED_BYTES
    tensors = read_tfjs_tensors(manifest, weights)  # raises unless the manifest accounts for every byte
    assert tensors["fc"].shape == (256, 128)


def test_filters_go_from_hwio_to_oihw(tfjs_files):
    tensors = read_tfjs_tensors(*tfjs_files)
    sd = load_tfjs_state_dict(*tfjs_files)
    hwio = tensors["conv64_down/conv1/conv/filters"]  # plain float32 in the file
    assert hwio.shape == (3, 3, 32, 64) and sd["conv64_down.conv1.conv.weight"].shape == (64, 32, 3, 3)
    assert sd["conv64_down.conv1.conv.weight"][5, 7, 2, 1].item() == hwio[2, 1, 7, 5]
    assert torch.equal(sd["fc.weight"], torch.from_numpy(tensors["fc"].T.copy()))


def test_same_person_closer_than_0_6_and_strangers_further(net):
    """dlib's rule of thumb for this network: Euclidean distance below 0.6 means the same person."""
    d = _descriptors(net, ["tests/test_images/obama.jpg", "tests/test_images/obama2.jpg",
                           "tests/test_images/biden.jpg", "examples/knn_examples/train/biden/biden2.jpg",
                           "examples/knn_examples/train/rose_leslie/img1.jpg"])
    dist = np.linalg.norm(d[:, None] - d[None], axis=2)
    assert dist[0, 1] < 0.6 and dist[2, 3] < 0.6            # Obama-Obama, Biden-Biden
    assert dist[0, 2] > 0.6 and dist[1, 3] > 0.6 and dist[0, 4] > 0.6 and dist[2, 4] > 0.6


def test_embedding_model_normalizes_and_flip_averages(tfjs_files):
    from shared.vision.embed import EmbeddingModel

    model = EmbeddingModel.load(_need(CONVERTED), device="cpu", flip_average=True)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    e = model.embed(crops)
    assert e.shape == (3, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # With flip averaging, a crop and its mirror image get the same descriptor.
    np.testing.assert_allclose(model.embed(crops[:, :, ::-1]), e, atol=1e-5)
    assert model.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        model.embed(np.zeros((1, 112, 112, 3), np.uint8))
