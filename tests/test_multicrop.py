"""Multi-crop views and RandomResizedCrop's output size: shapes, dtype, device and type kept,
seeded, the full-image crop is the identity, each crop's area (read off a linear ramp, which
bilinear sampling reproduces exactly) lies in its scale range, transforms per kind of crop,
errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import backend
from minienc.data import MultiCrop, RandomResizedCrop


def ramps(n, size):
    """Channel 0 = the column index, channel 1 = the row index: a crop's slope is its scale."""
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    return np.repeat(np.stack([cols, rows])[None], n, axis=0).astype(np.float32)


def test_views_keep_dtype_device_and_type_and_take_their_sizes(device):
    x = backend.to_device(np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32), device)
    views = MultiCrop(2, 3, global_size=12, local_size=(6, 4))(x, rng=1)
    assert len(views) == 5
    assert [v.shape for v in views] == [(5, 3, 12, 12)] * 2 + [(5, 3, 6, 4)] * 3
    assert all(v.dtype == np.float32 and backend.device_of(v) == device for v in views)
    tensor_views = MultiCrop(2, 1)(minienc.tensor(x, device=device), rng=1)
    assert all(isinstance(v, minienc.Tensor) and v.shape == (5, 3, 16, 16) for v in tensor_views)


def test_seeded_and_every_view_different():
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    crop = MultiCrop(2, 4, local_scale=(0.2, 0.5))
    first, again = crop(x, rng=3), crop(x, rng=3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(backend.to_host(a), backend.to_host(b))
    flat = [backend.to_host(v).ravel() for v in first]
    assert all(not np.array_equal(flat[i], flat[j]) for i in range(6) for j in range(i))


def test_the_whole_image_at_its_own_size_is_the_identity():
    x = np.random.default_rng(0).random((3, 2, 7, 9), dtype=np.float32)
    views = MultiCrop(2, 0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, rng=0)
    for v in views:
        np.testing.assert_allclose(backend.to_host(v), x, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(low=st.floats(0.05, 0.4), width=st.floats(0.0, 0.3), out=st.sampled_from([4, 6, 8, 16]),
       seed=st.integers(0, 2**16))
def test_each_crop_covers_an_area_in_its_scale_range(low, width, out, seed):
    high = min(low + width, 0.4)   # with ratio in [3/4, 4/3] no side is clipped below 0.75
    x = ramps(16, 16)
    views = MultiCrop(1, 2, global_scale=(0.9, 1.0), local_scale=(low, high), local_size=out)(x, rng=seed)
    mid = out // 2
    # (the global crop may be clipped at the image's sides, which only makes it smaller)
    for view, (lo, hi) in zip(views, [(0.0, 1.0), (low, high), (low, high)]):
        v = backend.to_host(view)
        size = v.shape[-1]
        # the slope between the two central pixels is input pixels per output pixel
        slope_x = v[:, 0, size // 2, size // 2] - v[:, 0, size // 2, size // 2 - 1]
        slope_y = v[:, 1, size // 2, size // 2] - v[:, 1, size // 2 - 1, size // 2]
        area = (slope_x * size / 16) * (slope_y * size / 16)
        assert np.all(area >= lo - 1e-4) and np.all(area <= hi + 1e-4), (area, lo, hi)
    assert views[1].shape == (16, 2, out, out) and mid >= 2


def test_transforms_apply_per_kind_of_crop():
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    double = lambda v, gen: v * 2     # noqa: E731
    negate = lambda v, gen: -v        # noqa: E731
    plain = MultiCrop(1, 1, local_scale=(0.3, 0.4))(x, rng=5)
    both = MultiCrop(1, 1, local_scale=(0.3, 0.4), transform=double)(x, rng=5)
    split = MultiCrop(1, 1, local_scale=(0.3, 0.4), transform=double, local_transform=negate)(x, rng=5)
    np.testing.assert_array_equal(both[0], 2 * plain[0])
    np.testing.assert_array_equal(both[1], 2 * plain[1])
    np.testing.assert_array_equal(split[1], -plain[1])


@pytest.mark.parametrize("options, match", [
    (dict(global_crops=0), "global_crops must be a positive integer"),
    (dict(local_crops=-1), "local_crops must be an integer >= 0"),
    (dict(local_scale=(0.0, 0.4)), "local_scale"),
    (dict(global_scale=(0.8, 0.5)), "global_scale"),
])
def test_bad_settings_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        MultiCrop(**options)


def test_resized_crop_refuses_a_size_with_a_coin():
    with pytest.raises(ValueError, match=r"RandomResizedCrop.*p must be 1"):
        RandomResizedCrop(size=4, p=0.5)
    out = RandomResizedCrop(size=(3, 5))(np.zeros((2, 1, 8, 8), np.float32))
    assert out.shape == (2, 1, 3, 5)
