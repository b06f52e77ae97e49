"""The fast paths (minienc/kernels/) agree with their references (minienc/ops/, minienc/optim/).

On every machine: GELU (both paths) equals its textbook formula, ReLU and MSE their formulas.
Every NumPy variant registered in minienc/kernels/ gives the values and gradients of its reference
(hypothesis draws the shapes), passes gradcheck, and each optimizer's fast update leaves the same
parameters and state as its reference update; the one switch turns every fast path off,
optimizers included.

Where CuPy sees a GPU: each fused kernel in minienc/kernels/cuda.py (GELU, layer norm, softmax
cross-entropy, the updates) gives the same values and gradients as the reference path run on the
same GPU arrays (kernels.disabled()) and as NumPy.
"""
import contextlib

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


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_the_formula(dtype, fast):
    x = np.random.default_rng(0).normal(scale=3, size=(7, 5)).astype(dtype)
    g = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    t = minienc.tensor(x, requires_grad=True, dtype=dtype)
    with (contextlib.nullcontext() if fast else kernels.disabled()):
        y = minienc.gelu(t)
        y.backward(g)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and t.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), gelu_ref(x.astype(np.float64)), rtol=tol, atol=tol)
    np.testing.assert_allclose(t.grad, g * gelu_grad_ref(x.astype(np.float64)), rtol=10 * tol,
                               atol=10 * tol)


@pytest.mark.parametrize("fast", [True, False])
def test_gelu_and_relu_of_a_0d_tensor(fast):
    x = minienc.tensor(1.5, requires_grad=True)
    with (contextlib.nullcontext() if fast else kernels.disabled()):
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
def test_mse_gradient_is_its_formula(reduction):
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
    for context in (contextlib.nullcontext(), kernels.disabled()):
        with context:
            tensors = [minienc.tensor(a, requires_grad=a.dtype.kind == "f", dtype=a.dtype,
                                      device="cuda") for a in arrays]
            out = fn(*tensors)
            seed = np.random.default_rng(5).normal(size=out.shape).astype(out.dtype)
            out.backward(backend.to_device(seed, "cuda"))
            results.append([out.numpy()] + [t.grad.get() for t in tensors if t.requires_grad])
    return results


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
def test_fused_variants_are_chosen_for_cupy_arrays_only():
    cupy = backend.cupy()
    gelu = minienc.ops.elementwise.GELUFunction
    assert kernels.variant(gelu, cupy.zeros(3)) is kernels.cuda.GELU
    assert kernels.variant(gelu, np.zeros(3)) is not kernels.cuda.GELU
    with kernels.disabled():
        assert kernels.variant(gelu, cupy.zeros(3)) is gelu


@needs_gpu
@pytest.mark.parametrize("make", ["adam", "adamw", "sgd_nesterov", "ema"])
def test_fused_updates_match_the_reference_on_the_gpu(make):
    _updates_agree(make, "cuda")


# ----- every NumPy variant against its reference -----------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minienc.ops import attention, elementwise, losses, norm, shape  # noqa: E402
from minienc.ops.embedding import EmbeddingFunction  # noqa: E402
from minienc import nn  # noqa: E402
from minienc.optim import EMA, adam, ema, sgd  # noqa: E402

HYP = settings(max_examples=15, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _gelu(rs, lead):
    return minienc.gelu, [rs.normal(scale=3, size=lead + (6,))]


def _layer_norm(rs, lead):
    d = 5
    return (lambda x, w, b: minienc.layer_norm(x, w, b, eps=1e-5),
            [rs.normal(size=lead + (d,)) * 3 + 1, rs.normal(size=d), rs.normal(size=d)])


def _layer_norm_plain(rs, lead):
    return (lambda x: minienc.layer_norm(x, eps=1e-6)), [rs.normal(size=lead + (7,))]


def _attention(rs, lead):
    q, k, v = (rs.normal(size=lead + (n, 4)) for n in (3, 5, 5))
    return minienc.scaled_dot_product_attention, [q, k, v]


def _attention_masked(rs, lead):
    q, k, v = (rs.normal(size=(2,) + lead + (n, 4)) for n in (3, 5, 5))
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, 1:] = True
    mask[1, :] = True                                  # a row with every key masked: weights 0
    return (lambda q, k, v: minienc.scaled_dot_product_attention(q, k, v, key_padding_mask=mask)), [q, k, v]


def _multi_head(rs, lead):
    heads = 2
    qkv = rs.normal(size=(lead[0] if lead else 1, 4, 3 * heads * 3))
    return (lambda x: minienc.multi_head_attention(x, heads)), [qkv]


def _multi_head_attn_mask(rs, lead):
    qkv = rs.normal(size=(2, 4, 3 * 4))
    attn_mask = rs.normal(size=(4, 4))
    return (lambda x, m: minienc.multi_head_attention(x, 2, attn_mask=m)), [qkv, attn_mask]


def _gather_distinct(rs, lead):
    batch = lead[0] if lead else 2
    index = np.stack([rs.permutation(5)[:3] for _ in range(batch)])      # each token once
    rows = np.arange(batch)[:, None]
    return (lambda x: x[rows, index]), [rs.normal(size=(batch, 5, 4))]


def _gather_repeats(rs, lead):
    index = rs.integers(-4, 4, size=lead + (6,))                      # repeats, negative indices
    return (lambda x: x[index] * 1.0), [rs.normal(size=(4, 3))]


def _gather_mixed_key(rs, lead):
    index = np.array([2, 0, 2])
    return (lambda x: x[:, index]), [rs.normal(size=(3, 4))]        # a slice first: reference path


def _embedding(rs, lead):
    ids = rs.integers(0, 4, size=lead + (5,))
    return (lambda w: minienc.embedding(ids, w)), [rs.normal(size=(4, 3))]


def _mse(rs, lead, reduction="mean"):
    shape = lead + (3,)
    return (lambda p, t: minienc.mse_loss(p, t, reduction=reduction)), [rs.normal(size=shape),
                                                                       rs.normal(size=shape)]


def _mse_sum(rs, lead):
    return _mse(rs, lead, "sum")


def _mse_none(rs, lead):
    return _mse(rs, lead, "none")


# reference -> the cases that exercise it (a variant registered without a case fails below)
HOST_CASES = {
    elementwise.GELUFunction: [_gelu],
    norm.LayerNormFunction: [_layer_norm, _layer_norm_plain],
    attention.ScaledDotProductAttention: [_attention, _attention_masked],
    attention.MultiHeadAttentionFunction: [_multi_head, _multi_head_attn_mask],
    shape.GetItem: [_gather_distinct, _gather_repeats, _gather_mixed_key],
    EmbeddingFunction: [_embedding],
    losses.MSELoss: [_mse, _mse_sum, _mse_none],
}
HOST_UPDATES = {adam.adam_update: ["adam", "adamw"], sgd.sgd_update: ["sgd", "sgd_nesterov"],
                ema.ema_step: ["ema"]}
CASES = [case for cases in HOST_CASES.values() for case in cases]


def test_every_host_variant_is_tested_here():
    registered = kernels.registered("cpu")
    assert set(registered) == set(HOST_CASES) | set(HOST_UPDATES)
    for reference, fast in registered.items():
        assert fast is not reference
        if isinstance(reference, type):
            assert issubclass(fast, reference)        # keeps the reference's checks and name


def _run(fn, arrays, dtype, seed):
    """(output, gradients of the floating inputs) of fn on fresh tensors, for a random upstream."""
    tensors = [minienc.tensor(a, requires_grad=True, dtype=dtype) for a in arrays]
    out = fn(*tensors)
    upstream = np.random.default_rng(seed).normal(size=out.shape).astype(dtype)
    out.backward(upstream)
    return [out.numpy()] + [t.grad for t in tensors]


@pytest.fixture(params=["inline", "pool"])
def pool(request, monkeypatch):
    """Host variants run inline (one thread, one chunk) or cut into many tiny chunks over a pool
    of three threads, so every chunked code path runs on the small arrays of these tests."""
    from minienc.kernels import host, threads
    if request.param == "pool":
        monkeypatch.setattr(threads, "CHUNK", 8)
        monkeypatch.setattr(host, "ATTENTION_CHUNK", 8)
        previous = threads.get_threads()
        threads.set_threads(3)
        yield request.param
        threads.set_threads(previous)
    else:
        yield request.param


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@HYP
@given(lead=st.lists(st.integers(1, 3), max_size=2).map(tuple), seed=st.integers(0, 2**16))
def test_host_variant_matches_its_reference(case, dtype, lead, seed, pool):
    fn, arrays = case(np.random.default_rng(seed), lead)
    arrays = [a.astype(dtype) for a in arrays]
    fast = _run(fn, arrays, dtype, seed)
    with kernels.disabled():
        reference = _run(fn, arrays, dtype, seed)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for f, r in zip(fast, reference):
        assert f.dtype == dtype and f.shape == r.shape
        np.testing.assert_allclose(f, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("fast", [True, False])
def test_both_paths_pass_gradcheck(case, fast, pool):
    fn, arrays = case(np.random.default_rng(3), (2,))
    tensors = [minienc.tensor(a, requires_grad=True, dtype="float64") for a in arrays]
    with (contextlib.nullcontext() if fast else kernels.disabled()):
        assert minienc.gradcheck(fn, *tensors)


def test_the_switch_picks_the_reference():
    x = np.zeros(3, dtype=np.float32)
    assert kernels.variant(elementwise.GELUFunction, x) is kernels.host.GELUFunction
    assert kernels.variant(adam.adam_update, minienc.tensor(x)) is kernels.host.adam_update
    with kernels.disabled():
        assert not kernels.enabled()
        assert kernels.variant(elementwise.GELUFunction, x) is elementwise.GELUFunction
        assert kernels.variant(adam.adam_update, x) is adam.adam_update
    assert kernels.enabled()


def test_the_environment_variable_turns_every_fast_path_off():
    import subprocess
    import sys
    code = ("import numpy as np, minienc\nfrom minienc import kernels\n"
            "assert not kernels.enabled()\n"
            "assert all(kernels.variant(r, np.zeros(1)) is r for r in kernels.registered('cpu'))\n")
    env = dict(__import__("os").environ, MINIENC_FUSED_KERNELS="0")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def _optimizer(make, params):
    from minienc.optim import SGD, Adam, AdamW
    return {"adam": lambda: Adam(params, lr=0.1, weight_decay=0.1),
            "adamw": lambda: AdamW(params, lr=0.1, weight_decay=0.1),
            "sgd": lambda: SGD(params, lr=0.1, weight_decay=0.1),
            "sgd_nesterov": lambda: SGD(params, lr=0.1, momentum=0.9, nesterov=True,
                                        weight_decay=0.1)}[make]()


def _three_steps(make, device, dtype):
    """Parameters (and optimizer state or EMA target) after three steps from a fixed start."""
    rs = np.random.default_rng(0)
    minienc.manual_seed(0)
    shapes = [(3, 4), (4,), ()]
    if make == "ema":
        online, target = (nn.Linear(4, 3).to(device) for _ in range(2))
        average = EMA(online, target=target)
        for m in (0.9, 0.5, 0.99):
            for p in online.parameters():
                p.data += backend.to_device(rs.normal(size=p.shape).astype(p.dtype), device)
            average.update(m)
        return [backend.to_host(p.data) for p in target.parameters()]
    params = [minienc.tensor(rs.normal(size=s), requires_grad=True, dtype=dtype, device=device)
              for s in shapes]
    opt = _optimizer(make, params)
    for _ in range(3):
        for p in params:
            p.grad = backend.to_device(rs.normal(size=p.shape).astype(dtype), device)
        opt.step()
    state = [backend.to_host(v) for s in opt.state.values() for k, v in s.items() if k != "step"]
    return [backend.to_host(p.data) for p in params] + state


def _updates_agree(make, device, dtype=np.float32):
    fast = _three_steps(make, device, dtype)
    with kernels.disabled():
        reference = _three_steps(make, device, dtype)
    assert len(fast) == len(reference)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for f, r in zip(fast, reference):
        np.testing.assert_allclose(f, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("make", [m for makes in HOST_UPDATES.values() for m in makes])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_updates_match_the_reference(make, dtype):
    _updates_agree(make, "cpu", dtype)


# ----- the thread pool -------------------------------------------------------------------------
def test_the_pool_runs_every_chunk_once_and_passes_errors_on():
    from minienc.kernels import threads
    previous = threads.get_threads()
    threads.set_threads(3)
    try:
        seen = []
        threads.run(seen.append, 50)
        assert sorted(seen) == list(range(50))
        parts = threads.slices(10, 3)
        assert [i for s in parts for i in range(10)[s]] == list(range(10))
        assert len(threads.slices(1000, 1000)) >= 3          # at least one chunk per thread

        def fail(i):
            if i == 7:
                raise ValueError("chunk 7")
        with pytest.raises(ValueError, match="chunk 7"):
            threads.run(fail, 20)
        threads.run(seen.append, 3)                          # still usable after an error
    finally:
        threads.set_threads(previous)
    assert threads.slices(0) == [slice(0, 0)] and threads.slices(5, 1) == [slice(0, 5)]
