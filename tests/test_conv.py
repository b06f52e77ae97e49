"""Convolution, transposed convolution and pooling: forward values against direct loops written
from the definitions, gradients of inputs and parameters against finite differences, the adjoint
identity that ties the two convolutions together, and the conv encoder/decoder shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from nn_check import gradcheck_module, rand


def host(t):
    return t.numpy() if isinstance(t, minienc.Tensor) else backend.to_host(t)


def conv_reference(x, w, b, s, p):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * s:i * s + kh, j * s:j * s + kw]  # (n, c, kh, kw)
            out[:, :, i, j] = np.einsum("ncab,ocab->no", patch, w)
    return out + b[None, :, None, None]


def conv_transpose_reference(x, w, b, s, p, op):
    """Every input pixel stamps weight[c] * x into the output at (i*s, j*s), then crop."""
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((n, o, (h - 1) * s + kh + op, (wd - 1) * s + kw + op))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * s:i * s + kh, j * s:j * s + kw] += np.einsum("nc,coab->noab", x[:, :, i, j], w)
    ho, wo = full.shape[2] - 2 * p, full.shape[3] - 2 * p
    return full[:, :, p:p + ho, p:p + wo] + b[None, :, None, None]


def pool_reference(x, k, s, p, reduce):
    pad_value = -np.inf if reduce is np.max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=pad_value)
    ho, wo = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(xp[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out


conv_settings = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2)).filter(
    lambda t: t[2] * 2 < t[0] + 2)  # (kernel, stride, padding) with padding < kernel


@given(setting=conv_settings, size=st.integers(3, 7), channels=st.integers(1, 3), out=st.integers(1, 3))
def test_conv2d_matches_direct_loops(setting, size, channels, out):
    k, s, p = setting
    layer = nn.Conv2d(channels, out, k, stride=s, padding=p)
    x = np.random.default_rng(size).standard_normal((2, channels, size, size + 1)).astype(np.float32)
    y = layer(minienc.tensor(x))
    expected = conv_reference(x, host(layer.weight), host(layer.bias), s, p)
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_allclose(host(y), expected, rtol=1e-4, atol=1e-5)


@given(setting=conv_settings, size=st.integers(1, 5), channels=st.integers(1, 3), out=st.integers(1, 3),
       extra=st.integers(0, 2))
def test_conv_transpose2d_matches_direct_loops(setting, size, channels, out, extra):
    k, s, p = setting
    op = extra % s  # output_padding < stride
    if (size - 1) * s - 2 * p + k + op < 1:
        return
    layer = nn.ConvTranspose2d(channels, out, k, stride=s, padding=p, output_padding=op)
    x = np.random.default_rng(size).standard_normal((2, channels, size, size + 1)).astype(np.float32)
    y = layer(minienc.tensor(x))
    expected = conv_transpose_reference(x, host(layer.weight), host(layer.bias), s, p, op)
    assert y.shape == expected.shape
    np.testing.assert_allclose(host(y), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (1, 1, 0), (3, 3, 0)])
def test_conv2d_gradcheck(device, k, s, p):
    layer = nn.Conv2d(2, 3, k, stride=s, padding=p).to(device)
    assert gradcheck_module(layer, rand(device, 2, 2, 5, 4))


@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (3, 1, 1, 0), (2, 2, 0, 0), (3, 2, 0, 1)])
def test_conv_transpose2d_gradcheck(device, k, s, p, op):
    layer = nn.ConvTranspose2d(2, 3, k, stride=s, padding=p, output_padding=op).to(device)
    assert gradcheck_module(layer, rand(device, 2, 2, 3, 2))


def test_conv_without_bias_gradcheck(device):
    assert gradcheck_module(nn.Conv2d(2, 2, 3, padding=1, bias=False).to(device), rand(device, 1, 2, 4, 4))
    assert gradcheck_module(nn.ConvTranspose2d(2, 2, 3, 2, bias=False).to(device), rand(device, 1, 2, 2, 3))


@given(setting=conv_settings, size=st.integers(3, 6))
def test_conv_transpose_is_the_adjoint_of_conv(setting, size):
    """<conv(x), y> == <x, conv_transpose(y)> with the same weight and no bias."""
    k, s, p = setting
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 3, size, size))
    w = rng.standard_normal((4, 3, k, k))
    cx = minienc.conv2d(minienc.tensor(x, dtype="float64"), minienc.tensor(w, dtype="float64"),
                        stride=s, padding=p)
    op = size + 2 * p - k - (cx.shape[2] - 1) * s  # the rows the strided conv skipped
    if op >= s:  # only happens when k > size + 2p - k; no output_padding reproduces it
        return
    y = rng.standard_normal(cx.shape)
    ty = minienc.conv_transpose2d(minienc.tensor(y, dtype="float64"), minienc.tensor(w, dtype="float64"),
                                  stride=s, padding=p, output_padding=op)
    assert ty.shape == x.shape
    np.testing.assert_allclose((host(cx) * y).sum(), (x * host(ty)).sum(), rtol=1e-10)


def test_conv_accepts_non_contiguous_input_and_output_of_another_conv(device):
    layer1, layer2 = nn.Conv2d(1, 4, 3, 2, 1).to(device), nn.Conv2d(4, 2, 3, 1, 0).to(device)
    x = rand(device, 2, 1, 8, 8, requires_grad=False).astype("float32")
    h = layer1(x)
    y = layer2(h)  # h is a channels-last view
    expected = conv_reference(host(h), host(layer2.weight), host(layer2.bias), 1, 0)
    np.testing.assert_allclose(host(y), expected, rtol=1e-4, atol=1e-5)
    xt = rand(device, 2, 8, 1, 8).transpose(0, 2, 1, 3)  # a view (2, 1, 8, 8)
    assert gradcheck_module(nn.Conv2d(1, 2, 3).to(device), xt)


def test_conv_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^conv2d: input \(2, 4, 9, 9\).*as in Conv2d\(3, 8, "
                                         r"kernel_size=\(3, 3\)\), which takes inputs \(N, 3, H, W\)$"):
        nn.Conv2d(3, 8, 3)(minienc.tensor(np.zeros((2, 4, 9, 9))))
    with pytest.raises(ValueError, match=r"^conv_transpose2d: input \(2, 4, 9, 9\).*weight \(3, 8, 3, 3\) "
                                         r"\(C_in, C_out.*as in ConvTranspose2d\(3, 8, .*\(N, 3, H, W\)$"):
        nn.ConvTranspose2d(3, 8, 3)(minienc.tensor(np.zeros((2, 4, 9, 9))))
    with pytest.raises(ValueError, match=r"^conv2d: input \(4, 9, 9\) \(N, C, H, W\) does not match"):
        nn.Conv2d(4, 8, 3)(minienc.tensor(np.zeros((4, 9, 9))))   # one image without its batch axis
    with pytest.raises(ValueError, match=r"^conv2d: weight must be 4-D \(C_out, C_in, kh, kw\), got shape \(8, 27\)"):
        minienc.conv2d(minienc.tensor(np.zeros((2, 3, 9, 9))), minienc.tensor(np.zeros((8, 27))))
    with pytest.raises(ValueError, match=r"conv2d: input \(2, 4, 9, 9\).*weight \(8, 3, 3, 3\) \(C_out, C_in"):
        minienc.conv2d(minienc.tensor(np.zeros((2, 4, 9, 9))), minienc.tensor(np.zeros((8, 3, 3, 3))))
    with pytest.raises(ValueError, match="smaller than kernel"):
        nn.Conv2d(1, 1, 5)(minienc.tensor(np.zeros((1, 1, 3, 3))))
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)(minienc.tensor(np.zeros((1, 1, 3, 3))))


# ----- pooling --------------------------------------------------------------------------------

@given(k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 1), size=st.integers(3, 6))
def test_pooling_matches_direct_loops(k, s, p, size):
    if 2 * p > k:
        return
    x = np.random.default_rng(size).standard_normal((2, 2, size, size + 1)).astype(np.float32)
    for layer, reduce in ((nn.MaxPool2d(k, s, p), np.max), (nn.AvgPool2d(k, s, p), np.mean)):
        np.testing.assert_allclose(host(layer(minienc.tensor(x))), pool_reference(x, k, s, p, reduce),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pooling_gradcheck(device, k, s, p):
    # distinct values spaced well beyond eps, so no two entries of a window tie
    x = minienc.tensor(np.random.default_rng(3).permutation(60).reshape(2, 2, 3, 5) * 0.1,
                       requires_grad=True, dtype="float64", device=device)
    assert gradcheck_module(nn.MaxPool2d(k, s, p), x)
    assert gradcheck_module(nn.AvgPool2d(k, s, p), x)


def test_max_pool_gradient_goes_to_the_maximum_once_per_window():
    x = minienc.tensor(np.arange(16.0).reshape(1, 1, 4, 4), requires_grad=True)
    nn.MaxPool2d(2)(x).sum().backward()
    expected = np.zeros((4, 4))
    expected[1::2, 1::2] = 1.0
    np.testing.assert_array_equal(host(x.grad)[0, 0], expected)
    data = np.zeros((1, 1, 4, 4))
    data[0, 0, 1, 2] = 100.0  # inside all four overlapping 3x3 windows
    x = minienc.tensor(data, requires_grad=True)
    nn.MaxPool2d(3, stride=1)(x).sum().backward()
    assert host(x.grad)[0, 0, 1, 2] == 4.0 and host(x.grad).sum() == 4.0


# ----- conv encoder and decoder ---------------------------------------------------------------

def test_conv_encoder_decoder_benchmark_shapes(device):
    enc = nn.ConvEncoder(1, (16, 32), image_size=28).to(device)
    dec = nn.ConvDecoder(1, (32, 16)).to(device)
    x = minienc.tensor(np.random.default_rng(0).random((2, 1, 28, 28)), device=device)
    h = enc(x)
    assert h.shape == (2, 32, 7, 7) and enc.feature_shape == (32, 7, 7)
    y = dec(h)
    assert y.shape == (2, 1, 28, 28) and y.dtype == np.float32
    minienc.binary_cross_entropy_with_logits(y, x).backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in enc.parameters() + dec.parameters())


def test_conv_encoder_decoder_with_embedding_gradcheck(device):
    enc = nn.ConvEncoder(1, (2, 3), image_size=6, out_features=4).to(device)
    dec = nn.ConvDecoder(1, (3, 2), in_features=4, feature_shape=enc.feature_shape).to(device)
    x = rand(device, 2, 1, 6, 6)
    x32 = x.astype("float32")
    assert enc(x32).shape == (2, 4) and dec(enc(x32)).shape == (2, 1, 8, 8)  # 6 -> 3 -> 2 -> 4 -> 8
    assert gradcheck_module(nn.Sequential(enc, dec), x)
    with pytest.raises(ValueError, match="image_size"):
        nn.ConvEncoder(1, (2,), out_features=4)
