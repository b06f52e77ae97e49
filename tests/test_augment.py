"""minienc.data.augment: the on-device augmentations keep shape, dtype and device, are seeded (by
rng= or the device's generator) and do what they say (the affine sampler, the crop's shift, erasing,
noise, jitter); they refuse a batch that is not images, pixels in [0, 255] where they clip to
[0, 1], and channels-last images. Datasets, loaders and batches: tests/test_data.py."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minienc
from minienc import backend
from minienc import data as D
from minienc.data import augment as A


AUGMENTATIONS = [A.RandomCrop(2), A.RandomResizedCrop(), A.RandomAffine(shear=10), A.GaussianNoise(0.1),
                 A.RandomErasing(p=0.5), A.BrightnessContrast(), A.contrastive_augment(),
                 A.GaussianNoise(0.1, p=0.5)]


def _images(device, shape, seed=0, dtype="float32"):
    host = np.random.default_rng(seed).random(shape).astype(dtype)
    return backend.to_device(host, device)


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=lambda a: type(a).__name__)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])   # `device` holds no state
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(3, 11), st.integers(3, 11)),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(["float32", "float64"]))
def test_augmentations_keep_shape_dtype_device_and_are_seeded(device, aug, shape, seed, dtype):
    x = _images(device, shape, dtype=dtype)
    out = aug(x, rng=seed)
    assert out.shape == x.shape and out.dtype == x.dtype and backend.device_of(out) == device
    assert bool(backend.get_xp(out).isfinite(out).all())
    assert np.array_equal(backend.to_host(aug(x, rng=seed)), backend.to_host(out))
    t = minienc.tensor(x, dtype=dtype)
    out_t = aug(t, rng=seed)
    assert isinstance(out_t, minienc.Tensor) and not out_t.requires_grad
    assert np.array_equal(out_t.numpy(), backend.to_host(out))


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=lambda a: type(a).__name__)
def test_augmentations_change_images_and_default_to_the_device_generator(device, aug):
    x = _images(device, (16, 1, 8, 8))
    minienc.manual_seed(5)
    first = backend.to_host(aug(x))
    minienc.manual_seed(5)
    assert np.array_equal(backend.to_host(aug(x)), first)
    changed = np.abs(first - backend.to_host(x)).reshape(16, -1).max(axis=1) > 1e-6
    assert changed.mean() >= (0.2 if aug.p < 1 else 0.9)   # p < 1 leaves some images untouched
    assert not np.array_equal(backend.to_host(aug(x, rng=1)), backend.to_host(aug(x, rng=2)))


def test_affine_sample_identity_rotation_and_shift(device):
    xp = backend.xp_for(device)
    x = _images(device, (3, 2, 5, 5))
    zero, one = xp.zeros(3, dtype=xp.float32), xp.ones(3, dtype=xp.float32)
    identity = A.affine_matrices(xp, zero, one, zero, zero, zero, xp.float32)
    np.testing.assert_array_equal(backend.to_host(A.affine_sample(x, identity)), backend.to_host(x))
    quarter = A.affine_matrices(xp, one * (np.pi / 2), one, zero, zero, zero, xp.float32)
    np.testing.assert_allclose(backend.to_host(A.affine_sample(x, quarter)),
                               np.rot90(backend.to_host(x), -1, axes=(2, 3)), atol=1e-5)
    shift = A.affine_matrices(xp, zero, one, zero, one, zero, xp.float32)   # one pixel right
    out = backend.to_host(A.affine_sample(x, shift))
    np.testing.assert_allclose(out[..., 1:], backend.to_host(x)[..., :-1], atol=1e-6)
    assert np.all(out[..., 0] == 0)                                         # zeros come in
    half = A.affine_matrices(xp, zero, one, zero, one * 0.5, zero, xp.float32)  # bilinear halfway
    np.testing.assert_allclose(backend.to_host(A.affine_sample(x, half))[..., 1:],
                               (backend.to_host(x)[..., 1:] + backend.to_host(x)[..., :-1]) / 2, atol=1e-6)


def test_random_crop_is_a_shift_within_the_padding(device):
    x = _images(device, (8, 2, 6, 6))
    out, host = backend.to_host(A.RandomCrop(2)(x, rng=0)), backend.to_host(x)
    padded = np.pad(host, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(8):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(out[i], w) for w in windows)


def test_erasing_noise_and_jitter_do_what_they_say(device):
    x = _images(device, (64, 1, 10, 10)) + 0.1
    host = backend.to_host(x)
    erased = backend.to_host(A.RandomErasing(p=1.0, value=0.0)(x, rng=0))
    for img, orig in zip(erased, host):
        rows, cols = np.nonzero(img[0] != orig[0])
        assert len(rows) > 0 and np.all(img[0][rows, cols] == 0)
        box = img[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert np.all(box == 0)                                   # one solid rectangle
    noise = backend.to_host(A.GaussianNoise(0.2)(x, rng=0)) - host
    assert abs(noise.std() - 0.2) < 0.01 and abs(noise.mean()) < 0.01
    np.testing.assert_allclose(backend.to_host(A.BrightnessContrast(0.0, 0.0, clip=None)(x, rng=0)), host, rtol=1e-5)
    np.testing.assert_array_equal(backend.to_host(A.GaussianNoise(0.2, p=0.0)(x, rng=0)), host)


def test_augmentations_reject_wrong_input(device):
    with pytest.raises(ValueError, match=r"RandomCrop: expects a batch of images \(N, C, H, W\)"):
        A.RandomCrop()(_images(device, (4, 8, 8)))
    with pytest.raises(TypeError, match="floating-point"):
        A.GaussianNoise()(backend.xp_for(device).zeros((1, 1, 4, 4), dtype="int64"))
    if device == "cuda":
        with pytest.raises(TypeError, match="same device"):
            A.GaussianNoise()(_images(device, (1, 1, 4, 4)), rng=np.random.default_rng(0))


# ----- pixels in the wrong range or layout (issue 28) --------------------------------------------

@pytest.mark.parametrize("make, owner", [
    (lambda: D.BrightnessContrast(0.4, 0.4), "BrightnessContrast"),
    (lambda: D.GaussianNoise(0.1, clip=(0.0, 1.0)), "GaussianNoise"),
    (lambda: D.contrastive_augment(), "BrightnessContrast"),
])
def test_augmentations_that_clip_to_0_1_refuse_pixels_in_0_255(make, owner):
    """Regression (issue 28): [0, 255] pixels were saturated to 1.0 without a word."""
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"^{owner}: expects images in \[0, 1\].*divide by 255"):
        make()(x, rng=0)
    make()(x / 255, rng=0)   # the same images in [0, 1] pass


def test_a_new_clipping_augmentation_gets_the_range_check_from_the_base_class():
    """One idea, one place: an augmentation that declares the range it clips to is refused
    out-of-range images by Augmentation itself (it was each augmentation's own check_range call)."""
    class Stretch(D.Augmentation):
        value_range = (0.0, 1.0)

        def apply(self, x, gen, xp):
            return self.clipped(2 * x - 0.5, xp)

    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^Stretch: expects images in \[0, 1\].*divide by 255"):
        Stretch()(x * 255, rng=0)
    out = Stretch()(x, rng=0)
    np.testing.assert_array_equal(out, np.clip(2 * x - 0.5, 0.0, 1.0))


def test_augmentations_without_a_clip_take_any_range():
    x = np.random.default_rng(0).normal(0, 3, (2, 1, 8, 8)).astype(np.float32)   # standardised
    assert D.GaussianNoise(0.1)(x, rng=0).shape == x.shape
    assert D.BrightnessContrast(0.4, 0.4, clip=None)(x, rng=0).shape == x.shape


@pytest.mark.parametrize("make", [lambda: A.RandomResizedCrop(), lambda: A.RandomCrop(2),
                                  lambda: A.contrastive_augment(), lambda: A.MultiCrop(2, 2)])
@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 3), (2, 16, 16, 4)])
def test_channels_last_images_are_refused_by_every_augmentation(make, shape):
    """Regression (issue 28): (N, H, W, C) images went through as H channels of W x C images."""
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    with pytest.raises(ValueError, match=r"^\w+: expects channels-first images \(N, C, H, W\), "
                                         r"got shape .*; it looks channels-last"):
        make()(x, rng=0)
