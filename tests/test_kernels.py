"""The fast paths agree with their references.

On every machine: the rewritten NumPy forms (GELU in place, ReLU's float mask, MSE's one-pass
backward) equal the textbook formulas.

Where CuPy sees a GPU: each fused kernel in minienc/kernels.py (GELU, layer norm, softmax
cross-entropy) gives the same values and gradients as the reference path run on the same GPU
arrays (kernels.disabled()) and as NumPy.
"""
import numpy as np
import pytest

import minienc
from minienc import backend, kernels

C, K = np.sqrt(2 / np.pi), 0.044715
needs_gpu = pytest.mark.skipif(not backend.cuda_available(),
                               reason="no CUDA device visible to CuPy: the fused kernels run on a GPU only")


def gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(C * (x + K * x ** 3)))


def gelu_grad_ref(x):
    t = np.tanh(C * (x + K * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * K * x * x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_the_formula(dtype):
    x = np.random.default_rng(0).normal(scale=3, size=(7, 5)).astype(dtype)
    g = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    t = minienc.tensor(x, requires_grad=True, dtype=dtype)
    y = minienc.gelu(t)
    y.backward(g)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and t.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), gelu_ref(x.astype(np.float64)), rtol=tol, atol=tol)
    np.testing.assert_allclose(t.grad, g * gelu_grad_ref(x.astype(np.float64)), rtol=10 * tol,
                               atol=10 * tol)


def test_gelu_and_relu_of_a_0d_tensor():
    x = minienc.tensor(1.5, requires_grad=True)
    minienc.gelu(x).backward()
    np.testing.assert_allclose(x.grad, gelu_grad_ref(1.5), rtol=1e-6)
    r = minienc.tensor(-2.0, requires_grad=True)
    minienc.relu(r).backward()
    assert r.grad == 0


def test_relu_keeps_dtype_and_masks_the_gradient():
    x = np.array([[-1.0, 0.0, 2.0], [3.0, -0.5, 1e-30]], dtype=np.float32)
    t = minienc.tensor(x, requires_grad=True)
    y = minienc.relu(t)
    y.backward(np.full(x.shape, 2.0, dtype=np.float32))
    assert y.dtype == np.float32 and t.grad.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    np.testing.assert_array_equal(t.grad, 2.0 * (x > 0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_backward_one_pass(reduction):
    rs = np.random.default_rng(0)
    p, q = (rs.normal(size=(4, 3)).astype(np.float32) for _ in range(2))
    a, b = minienc.tensor(p, requires_grad=True), minienc.tensor(q, requires_grad=True)
    out = minienc.mse_loss(a, b, reduction=reduction)
    seed = rs.normal(size=out.shape).astype(np.float32)
    out.backward(seed)
    scale = {"mean": 2 / p.size, "sum": 2.0}.get(reduction, 2.0)
    expected = scale * seed * (p - q)
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, expected, rtol=1e-6)
    np.testing.assert_allclose(b.grad, -expected, rtol=1e-6)


# ----- the fused CuPy kernels against the reference path ---------------------------------------
def _both_paths(fn, *arrays):
    """(fused, reference) results of fn(*tensors) and the inputs' gradients, on the GPU."""
    results = []
    for context in (_nothing(), kernels.disabled()):
        with context:
            tensors = [minienc.tensor(a, requires_grad=a.dtype.kind == "f", dtype=a.dtype,
                                      device="cuda") for a in arrays]
            out = fn(*tensors)
            seed = np.random.default_rng(5).normal(size=out.shape).astype(out.dtype)
            out.backward(backend.to_device(seed, "cuda"))
            results.append([out.numpy()] + [t.grad.get() for t in tensors if t.requires_grad])
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _agree(fused, reference, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-11
    for f, r in zip(fused, reference):
        np.testing.assert_allclose(f, r, rtol=tol, atol=tol)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_gelu(dtype):
    x = np.random.default_rng(0).normal(scale=3, size=(33, 70)).astype(dtype)
    fused, reference = _both_paths(minienc.gelu, x)
    _agree(fused, reference, dtype)
    np.testing.assert_allclose(fused[0], gelu_ref(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 7, 64), (3, 300), (5, 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_layer_norm(dtype, shape, affine):
    rs = np.random.default_rng(0)
    x = (rs.normal(size=shape) * 3 + 1).astype(dtype)
    w, b = rs.normal(size=shape[-1:]).astype(dtype), rs.normal(size=shape[-1:]).astype(dtype)
    fn = (lambda x, w, b: minienc.layer_norm(x, w, b)) if affine else minienc.layer_norm
    fused, reference = _both_paths(fn, *((x, w, b) if affine else (x,)))
    _agree(fused, reference, dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, -100, 0])
def test_fused_cross_entropy(dtype, target_dtype, reduction, ignore_index):
    rs = np.random.default_rng(0)
    logits = (rs.normal(size=(6, 5, 300)) * 4).astype(dtype)
    targets = rs.integers(0, 300, size=(6, 5)).astype(target_dtype)
    if ignore_index is not None:
        targets[::2, 1] = ignore_index

    def fn(z, t):
        return minienc.cross_entropy(z, t, ignore_index=ignore_index, reduction=reduction)
    fused, reference = _both_paths(fn, logits, targets)
    _agree(fused, reference, dtype)


@needs_gpu
def test_fused_paths_are_taken_on_the_gpu_only():
    cupy = backend.cupy()
    assert kernels.fused(cupy.zeros(3)) and not kernels.fused(np.zeros(3))
    with kernels.disabled():
        assert not kernels.fused(cupy.zeros(3))
