"""Colour augmentations: each keeps shape, dtype, device and type, is seeded, and obeys its
formula's properties (grayscale has equal channels, solarize at 1 and a zero jitter are the
identity, flip twice is the identity, a blur keeps constants and stays within the input's range,
hue shifts are a rotation of the colour wheel); SimCLR's preset runs on grey and colour."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minienc
from minienc import backend
from minienc import data as D
from minienc.data.colour import gray, hsv_to_rgb, rgb_to_hsv

ALL = {
    "jitter": lambda: D.ColorJitter(0.4, 0.4, 0.4, 0.1),
    "jitter p": lambda: D.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.5),
    "grayscale": lambda: D.RandomGrayscale(p=0.5),
    "blur": lambda: D.GaussianBlur(3, p=0.5),
    "solarize": lambda: D.Solarize(0.5, p=0.5),
    "flip": lambda: D.RandomHorizontalFlip(p=0.5),
    "simclr": lambda: D.simclr_augment(image_size=8),
    "simclr blur": lambda: D.simclr_augment(image_size=40, strength=1.0, blur=True),
}

images = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.sampled_from([1, 3]),
                                          st.integers(4, 9), st.integers(4, 9)),
                    elements=st.floats(0, 1))


def host(x):
    return backend.to_host(minienc.as_array(x))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shape_dtype_device_type_and_seed_are_kept(name, dtype, device):
    rs = np.random.default_rng(0)
    for channels in (1, 3):
        x = rs.random((5, channels, 12, 10)).astype(dtype)
        aug = ALL[name]()
        as_tensor = minienc.tensor(x, dtype=dtype, device=device)
        out = aug(as_tensor)
        assert isinstance(out, minienc.Tensor) and out.shape == x.shape
        assert out.dtype == dtype and out.device == device
        raw = aug(backend.to_device(x, device), rng=7)
        assert type(raw) is type(backend.to_device(x, device)) and raw.dtype == dtype
        np.testing.assert_array_equal(host(raw), host(aug(backend.to_device(x, device), rng=7)))
        assert host(out).min() >= 0 and host(out).max() <= 1   # images stay images


@given(images)
def test_grayscale_has_equal_channels_and_keeps_grey_images(x):
    out = D.RandomGrayscale(p=1.0)(x)
    assert np.allclose(out, out[:, :1]) and out.shape == x.shape
    if x.shape[1] == 3:
        np.testing.assert_allclose(out[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    else:
        np.testing.assert_array_equal(out, x)


@given(images, st.floats(0, 1))
def test_solarize_inverts_above_the_threshold_and_is_the_identity_at_one(x, threshold):
    np.testing.assert_array_equal(D.Solarize(1.0, p=1.0)(x), x)
    out = D.Solarize(threshold, p=1.0)(x)
    np.testing.assert_array_equal(out, np.where(x > threshold, 1 - x, x))


@given(images)
def test_flip_twice_is_the_identity(x):
    flip = D.RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(flip(x)[..., ::-1], x)
    np.testing.assert_array_equal(flip(flip(x)), x)


@given(images)
def test_a_zero_jitter_is_the_identity(x):
    np.testing.assert_allclose(D.ColorJitter(0, 0, 0, 0)(x, rng=0), x, atol=1e-12)


@given(images, st.floats(0.0, 0.95))
def test_each_jitter_moves_a_pixel_at_most_its_strength_times_its_distance(x, level):
    """x' = x + (f - 1)(x - anchor) with |f - 1| <= level, and clipping to [0, 1] only moves
    x' towards x: so |x' - x| <= level |x - anchor| for the anchor of each jitter."""
    luma = gray(x, np)
    anchors = {"brightness": np.zeros_like(x), "contrast": luma.mean(axis=(1, 2, 3), keepdims=True),
               "saturation": luma}
    for name, anchor in anchors.items():
        out = D.ColorJitter(**{k: (level if k == name else 0) for k in anchors}, hue=0)(x, rng=3)
        assert np.all(np.abs(out - x) <= level * np.abs(x - anchor) + 1e-12), name
    if x.shape[1] == 1:   # no colour: saturation and hue change nothing
        np.testing.assert_array_equal(D.ColorJitter(0, 0, level, 0.5)(x, rng=3), x)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.just(3), st.integers(1, 5),
                                        st.integers(1, 5)), elements=st.floats(0, 1)))
def test_hsv_round_trip_and_hue_is_a_rotation(x):
    h, s, v = rgb_to_hsv(x, np)
    assert h.min() >= 0 and h.max() < 1 and s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(hsv_to_rgb(h, s, v, np), x, atol=1e-9)
    # a third of the wheel, three times, comes back (value and saturation never change)
    y = x
    for _ in range(3):
        hy, sy, vy = rgb_to_hsv(y, np)
        y = hsv_to_rgb((hy + 1 / 3) % 1.0, sy, vy, np)
    np.testing.assert_allclose(y, x, atol=1e-7)
    np.testing.assert_allclose(y.max(axis=1), x.max(axis=1), atol=1e-9)


def test_hue_leaves_grey_pixels_and_moves_colours():
    grey = np.full((2, 3, 4, 4), 0.4)
    np.testing.assert_allclose(D.ColorJitter(0, 0, 0, 0.5)(grey, rng=1), grey, atol=1e-12)
    red = np.zeros((1, 3, 2, 2))
    red[:, 0] = 1.0
    hue, _, _ = rgb_to_hsv(D.ColorJitter(0, 0, 0, 0.5)(red, rng=1), np)
    assert not np.allclose(hue, 0.0)


@given(images, st.floats(0.1, 2.0))
def test_blur_keeps_constants_and_stays_within_the_range(x, sigma):
    blur = D.GaussianBlur(3, sigma=(sigma, sigma), p=1.0)
    out = blur(x)
    assert out.min() >= x.min() - 1e-12 and out.max() <= x.max() + 1e-12   # a weighted mean
    np.testing.assert_allclose(blur(np.full_like(x, 0.3)), 0.3, atol=1e-12)
    # separable and normalised: the mean of an image is kept up to the reflected borders
    inner = blur(np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4))))
    np.testing.assert_allclose(inner.sum(axis=(2, 3)), x.sum(axis=(2, 3)), rtol=1e-9, atol=1e-9)


def test_blur_at_a_small_sigma_is_nearly_the_identity():
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    np.testing.assert_allclose(D.GaussianBlur(5, sigma=(0.1, 0.1), p=1.0)(x), x, atol=1e-10)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="GaussianBlur: kernel_size must be odd"):
        D.GaussianBlur(4)
    with pytest.raises(ValueError, match="GaussianBlur: sigma must be a range"):
        D.GaussianBlur(3, sigma=(0.0, 1.0))
    with pytest.raises(ValueError, match="ColorJitter: hue must be in"):
        D.ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="ColorJitter: brightness must be >= 0"):
        D.ColorJitter(brightness=-1)
    with pytest.raises(ValueError, match="GaussianBlur: kernel_size 9 needs images larger"):
        D.GaussianBlur(9, p=1.0)(np.zeros((1, 1, 4, 4)))


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.just(3), st.integers(1, 4),
                                        st.integers(1, 4)), elements=st.floats(0, 1)))
def test_hsv_agrees_with_matplotlib(x):
    colors = pytest.importorskip("matplotlib.colors")
    h, s, v = rgb_to_hsv(x, np)
    reference = colors.rgb_to_hsv(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(s, reference[..., 1], atol=1e-9)
    np.testing.assert_allclose(v, reference[..., 2], atol=1e-12)
    # hue is circular (0 and 1 are the same colour), and undefined where saturation is 0
    gap = np.abs(h - reference[..., 0])
    assert np.all((np.minimum(gap, 1 - gap) < 1e-9) | (s == 0))


def rgb(*shape, scale=1.0):
    return (np.random.default_rng(0).random(shape) * scale).astype(np.float32)


WRONG_FORM = {   # issue 28: data in the wrong form refused where it enters, not made garbage
    "simclr channels-last": (lambda: D.simclr_augment(image_size=32)(rgb(2, 32, 32, 3), rng=0),
                             r"^Compose: expects channels-first images \(N, C, H, W\), "
                             r"got shape \(2, 32, 32, 3\); it looks channels-last"),
    "jitter channels-last": (lambda: D.ColorJitter()(rgb(2, 8, 8, 3), rng=0),
                             r"^ColorJitter: expects channels-first.*channels-last"),
    "grayscale channels-last": (lambda: D.RandomGrayscale(p=1.0)(rgb(2, 8, 8, 1), rng=0),
                                r"^RandomGrayscale: expects channels-first.*channels-last"),
    "jitter 2 channels": (lambda: D.ColorJitter()(rgb(2, 2, 8, 8), rng=0),
                          r"^ColorJitter: .*C = 1 \(grey\) or 3 \(RGB\), got shape \(2, 2, 8, 8\)$"),
    "jitter RGBA": (lambda: D.ColorJitter()(rgb(2, 4, 8, 8), rng=0),
                    r"^ColorJitter: .*got shape \(2, 4, 8, 8\); drop the alpha channel"),
    "jitter RGBA with a coin": (lambda: D.ColorJitter(p=0.5)(rgb(2, 4, 8, 8), rng=0), r"^ColorJitter: "),
    "jitter pixels in [0, 255]": (lambda: D.ColorJitter()(rgb(2, 3, 8, 8, scale=255), rng=0),
                                  r"^ColorJitter: expects images in \[0, 1\], got values in .*divide by 255"),
    "simclr pixels in [0, 255]": (lambda: D.simclr_augment(image_size=8)(rgb(2, 3, 8, 8, scale=255), rng=0),
                                  r"^ColorJitter: expects images in \[0, 1\]"),
    "jitter standardised images": (lambda: D.ColorJitter()(rgb(2, 3, 8, 8) * 4 - 2, rng=0),
                                   r"^ColorJitter: expects images in \[0, 1\].*normalise after"),
    "grayscale pixels in [0, 255]": (lambda: D.RandomGrayscale(p=0.5)(rgb(2, 1, 8, 8, scale=255), rng=0),
                                     r"^RandomGrayscale: expects images in \[0, 1\]"),
}


@pytest.mark.parametrize("case", list(WRONG_FORM))
def test_images_in_the_wrong_form_are_refused_naming_what_is_expected(case):
    make, message = WRONG_FORM[case]
    with pytest.raises(ValueError, match=message):
        make()


def test_a_small_overshoot_of_the_range_is_not_refused():
    """An interpolation or noise may stray a little outside [0, 1]: only a clearly wrong range
    (more than RANGE_SLACK outside) is refused; the jitter clips the rest as before."""
    x = rgb(2, 3, 8, 8) * 1.2 - 0.1
    out = D.ColorJitter()(x, rng=0)
    assert out.min() >= 0.0 and out.max() <= 1.0
