"""The MTCNN driver's crop resampling is torch's area interpolation, computed as two small products."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.functional import interpolate

from shared.vision.mtcnn import area_matrix, area_resize


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), size=st.sampled_from([12, 24, 48]), seed=st.integers(0, 2**16))
def test_area_resize_equals_torch_area_interpolation(h, w, size, seed):
    crop = np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.float32)
    want = interpolate(torch.from_numpy(crop).permute(2, 0, 1)[None], size=(size, size), mode="area")[0].numpy()
    got = area_resize(crop, size)
    assert got.shape == (3, size, size) and np.abs(got - want).max() < 1e-3


def test_each_output_bin_averages_its_inputs():
    m = area_matrix(5, 3)
    assert np.allclose(m.sum(axis=1), 1) and (m > 0).sum() == 7  # bins 0-1, 1-3, 3-4 (torch's floor/ceil)
