"""The Siamese twins share one tower; the scratch tower's shapes; augmentation; freezing the ResNet."""
import numpy as np
import pytest
import torch

from shared.vision.pixels import to_input
from training.augment import AugmentConfig, augment
from training.siamese import SiameseNet
from shared.vision.nets.scratch_cnn import ScratchCNN
from training.towers import freeze_faceapi_blocks


@pytest.mark.parametrize("size", [100, 112])
def test_scratch_tower_gives_128_d_for_configurable_sizes(size):
    for channels in (1, 3):
        net = ScratchCNN(input_size=size, in_channels=channels, width=8).eval()
        assert net(torch.randn(2, 3, size, size)).shape == (2, 128)


def test_grey_tower_reads_the_luma_of_rgb_input():
    net = ScratchCNN(input_size=64, in_channels=1, width=8).eval()
    rgb = torch.randn(2, 3, 64, 64)
    luma = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    assert torch.allclose(net(rgb), net(luma), atol=1e-5)


def test_twins_are_one_module():
    tower = ScratchCNN(input_size=64, width=8)
    net = SiameseNet(tower).eval()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in tower.parameters())
    x = torch.randn(3, 3, 64, 64)
    ea, eb = net(x, x)
    assert torch.allclose(ea, eb) and torch.allclose(ea, tower(x), atol=1e-6)


def test_augmentation_is_seeded_and_keeps_the_shape():
    crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    norm = ((127.5,) * 3, (127.5,) * 3)
    one = augment(crops, AugmentConfig(), *norm, torch.Generator().manual_seed(1))
    two = augment(crops, AugmentConfig(), *norm, torch.Generator().manual_seed(1))
    assert one.shape == (4, 3, 32, 32) and torch.equal(one, two)
    assert not torch.equal(one, to_input(crops, *norm))


def test_mirror_only_augmentation_flips_exactly():
    crops = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    cfg = AugmentConfig(flip=1.0, scale=0, shift=0, rotate_deg=0, brightness=0, contrast=0, saturation=0)
    norm = ((127.5,) * 3, (127.5,) * 3)
    out = augment(crops, cfg, *norm, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.flip(to_input(crops, *norm), dims=[3]), atol=1e-4)


def test_freezing_the_first_stages_of_the_resnet():
    from shared.vision.nets.faceapi_resnet import FaceApiResNet

    net = FaceApiResNet()
    assert freeze_faceapi_blocks(net, 0) == []
    assert freeze_faceapi_blocks(net, 3) == ["conv32_down", "conv32_1", "conv32_2"]
    assert not any(p.requires_grad for p in net.conv32_2.parameters())
    assert all(p.requires_grad for p in net.conv32_3.parameters())
