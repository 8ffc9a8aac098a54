"""Our MTCNN driver against facenet-pytorch's, on real frames: the same faces, points and probabilities."""
import numpy as np
import pytest
import torch

from bench.inputs import video_frames
from shared.vision.mtcnn import MTCNNRunner


@pytest.fixture(scope="module")
def frames():
    return [np.ascontiguousarray(f.rgb) for f in video_frames("640x360", 6) + video_frames("1280x720", 3)]


def test_the_runner_finds_what_facenet_pytorch_finds(frames):
    from facenet_pytorch import MTCNN

    torch.set_num_threads(2)
    ref, ours = MTCNN(keep_all=True, min_face_size=40, post_process=False), MTCNNRunner(40)
    found = 0
    for rgb in frames:
        boxes, probs, points = ref.detect(rgb, landmarks=True)
        (b, p, l), = ours.detect([rgb])
        n = 0 if boxes is None else len(boxes)
        assert len(b) == n
        if n:
            found += n
            assert np.abs(np.asarray(boxes, np.float32) - b).max() < 1e-3
            assert np.abs(np.asarray(points, np.float32) - l).max() < 1e-3
            assert np.abs(np.asarray(probs, np.float32) - p).max() < 1e-5
    assert found >= len(frames), "the clips' frames hold faces"


def test_a_batch_of_frames_gives_what_each_frame_gives_alone(frames):
    ours = MTCNNRunner(40)
    small = [f for f in frames if f.shape[1] == 640]
    for (b1, p1, l1), f in zip(ours.detect(small), small):
        (b2, p2, l2), = ours.detect([f])
        assert b1.shape == b2.shape and np.abs(b1 - b2).max(initial=0) < 1e-3 and np.abs(l1 - l2).max(initial=0) < 1e-3
    with pytest.raises(ValueError, match="one size"):
        ours.detect([frames[0], frames[-1]])
    assert ours.detect([]) == []
