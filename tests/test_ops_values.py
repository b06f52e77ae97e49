"""What the ops compute, not only how they differentiate: forward values against NumPy's own,
properties (softmax rows sum to 1, logsumexp is shift-equivariant, cross-entropy is -log_softmax
at the target, losses are non-negative), the subgradient conventions at kinks and ties, and
stability at extreme logits."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minienc
from minienc.backend import to_host

HYP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SHAPES_1D_UP = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)
SEEDS = st.integers(0, 2**16)


def lse(x, axis):
    return np.logaddexp.reduce(x, axis=axis, keepdims=True)


def tanh_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def bce(x, t):
    return t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x)


def huber(d, beta):
    return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


# name -> (minienc op on tensors x, y; NumPy reference on arrays x, y); x is (3, 4), y is (4,)
REFERENCES = {
    "add": (lambda x, y: x + y, lambda x, y: x + y),
    "sub": (lambda x, y: 1.5 - x - y, lambda x, y: 1.5 - x - y),
    "mul": (lambda x, y: x * y * 2, lambda x, y: x * y * 2),
    "div": (lambda x, y: x / y, lambda x, y: x / y),
    "pow": (lambda x, y: x.abs() ** y, lambda x, y: np.abs(x) ** y),
    "pow_scalar": (lambda x, y: x ** 3, lambda x, y: x ** 3),
    "neg": (lambda x, y: -x, lambda x, y: -x),
    "matmul": (lambda x, y: x @ y, lambda x, y: x @ y),
    "matmul_2d": (lambda x, y: x.T @ x, lambda x, y: x.T @ x),
    "exp": (lambda x, y: x.exp(), lambda x, y: np.exp(x)),
    "log": (lambda x, y: x.abs().log(), lambda x, y: np.log(np.abs(x))),
    "sqrt": (lambda x, y: x.abs().sqrt(), lambda x, y: np.sqrt(np.abs(x))),
    "abs": (lambda x, y: x.abs(), lambda x, y: np.abs(x)),
    "tanh": (lambda x, y: x.tanh(), lambda x, y: np.tanh(x)),
    "sigmoid": (lambda x, y: x.sigmoid(), lambda x, y: 1 / (1 + np.exp(-x))),
    "relu": (lambda x, y: x.relu(), lambda x, y: np.maximum(x, 0)),
    "gelu": (lambda x, y: x.gelu(), lambda x, y: tanh_gelu(x)),
    "softplus": (lambda x, y: x.softplus(), lambda x, y: np.logaddexp(0, x)),
    "sum": (lambda x, y: x.sum(axis=1, keepdims=True), lambda x, y: x.sum(axis=1, keepdims=True)),
    "mean": (lambda x, y: x.mean(axis=(0, 1)), lambda x, y: x.mean(axis=(0, 1))),
    "max": (lambda x, y: x.max(axis=0), lambda x, y: x.max(axis=0)),
    "min": (lambda x, y: x.min(), lambda x, y: x.min()),
    "var": (lambda x, y: x.var(axis=-1, ddof=1), lambda x, y: x.var(axis=-1, ddof=1)),
    "reshape": (lambda x, y: x.reshape(2, 6), lambda x, y: x.reshape(2, 6)),
    "transpose": (lambda x, y: x.unsqueeze(0).transpose(2, 0, 1), lambda x, y: x[None].transpose(2, 0, 1)),
    "broadcast_to": (lambda x, y: y.broadcast_to(2, 3, 4), lambda x, y: np.broadcast_to(y, (2, 3, 4))),
    "getitem": (lambda x, y: x[[2, 0, 2], 1::2], lambda x, y: x[[2, 0, 2], 1::2]),
    "mask": (lambda x, y: x[x > 0], lambda x, y: x[x > 0]),
    "concatenate": (lambda x, y: minienc.concatenate([x, x * 2], axis=-1),
                    lambda x, y: np.concatenate([x, x * 2], axis=-1)),
    "stack": (lambda x, y: minienc.stack([y, y + 1], axis=1), lambda x, y: np.stack([y, y + 1], axis=1)),
    "where": (lambda x, y: minienc.where(x > 0, x, y), lambda x, y: np.where(x > 0, x, y)),
    "maximum": (lambda x, y: minienc.maximum(x, y), lambda x, y: np.maximum(x, y)),
    "minimum": (lambda x, y: minienc.minimum(x, y), lambda x, y: np.minimum(x, y)),
    "clip": (lambda x, y: x.clip(-0.5, 0.25), lambda x, y: np.clip(x, -0.5, 0.25)),
    "softmax": (lambda x, y: x.softmax(0), lambda x, y: np.exp(x - lse(x, 0))),
    "log_softmax": (lambda x, y: x.log_softmax(), lambda x, y: x - lse(x, -1)),
    "logsumexp": (lambda x, y: minienc.logsumexp(x, axis=0), lambda x, y: lse(x, 0)[0]),
    "cross_entropy": (lambda x, y: minienc.cross_entropy(x, [3, 0, 1]),
                      lambda x, y: -(x - lse(x, -1))[[0, 1, 2], [3, 0, 1]].mean()),
    "bce": (lambda x, y: minienc.binary_cross_entropy_with_logits(x, (y * 0 + 0.25).broadcast_to(3, 4), "sum"),
            lambda x, y: bce(x, 0.25).sum()),
    "mse": (lambda x, y: minienc.mse_loss(x, x * 0.5 + 1), lambda x, y: ((0.5 * x - 1) ** 2).mean()),
    "smooth_l1": (lambda x, y: minienc.smooth_l1_loss(x, x * 0, beta=0.7, reduction="none"),
                  lambda x, y: huber(x, 0.7)),
    "normalize": (lambda x, y: minienc.normalize(x, axis=0),
                  lambda x, y: x / np.linalg.norm(x, axis=0, keepdims=True)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_forward_matches_numpy(device, name, dtype):
    rng = np.random.default_rng(1)
    hx, hy = rng.standard_normal((3, 4)) * 2, rng.uniform(0.5, 2.0, 4)
    x, y = minienc.tensor(hx, dtype=dtype, device=device), minienc.tensor(hy, dtype=dtype, device=device)
    ours, reference = REFERENCES[name]
    out = ours(x, y)
    expected = reference(hx, hy)
    assert out.shape == np.shape(expected)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), expected, **tol)


def test_gelu_is_close_to_the_exact_erf_form(device):
    x = np.linspace(-6, 6, 241)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    ours = minienc.tensor(x, dtype="float64", device=device).gelu().numpy()
    assert np.max(np.abs(ours - exact)) < 1e-3  # the tanh form's known error is about 5e-4


@HYP
@given(shape=SHAPES_1D_UP, scale=st.sampled_from([1.0, 30.0, 1e3]), seed=SEEDS, data=st.data())
def test_softmax_sums_to_one(device, shape, scale, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = minienc.tensor(np.random.default_rng(seed).standard_normal(shape) * scale, device=device)
    p = x.softmax(axis).numpy()
    assert p.dtype == np.float32 and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(x.log_softmax(axis).numpy()), p, rtol=1e-4, atol=1e-7)


@HYP
@given(shape=SHAPES_1D_UP, shift=st.floats(-1e3, 1e3), seed=SEEDS, data=st.data())
def test_logsumexp_is_shift_equivariant(device, shape, shift, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    host = np.random.default_rng(seed).standard_normal(shape) * 5
    x = minienc.tensor(host, dtype="float64", device=device)
    shifted = minienc.logsumexp(x + shift, axis=axis).numpy()
    np.testing.assert_allclose(shifted, minienc.logsumexp(x, axis=axis).numpy() + shift, rtol=1e-12, atol=1e-9)
    assert np.all(minienc.logsumexp(x, axis=axis).numpy() >= host.max(axis=axis) - 1e-12)


@HYP
@given(lead=hnp.array_shapes(min_dims=1, max_dims=2, max_side=5), classes=st.integers(2, 6),
       seed=SEEDS)
def test_cross_entropy_is_minus_log_softmax_at_target(device, lead, classes, seed):
    rng = np.random.default_rng(seed)
    logits = minienc.tensor(rng.standard_normal(lead + (classes,)) * 3, device=device)
    targets = rng.integers(0, classes, lead)
    targets[(0,) * len(lead)] = -1  # at least one ignored position
    picked = -np.take_along_axis(logits.log_softmax().numpy(), np.maximum(targets, 0)[..., None], -1)[..., 0]
    t = minienc.tensor(targets, device=device)
    per_item = minienc.cross_entropy(logits, t, ignore_index=-1, reduction="none").numpy()
    valid = targets != -1
    np.testing.assert_allclose(per_item, np.where(valid, picked, 0.0), rtol=1e-5, atol=1e-6)
    assert np.all(per_item >= 0)
    mean = minienc.cross_entropy(logits, t, ignore_index=-1).item()
    np.testing.assert_allclose(mean, picked[valid].sum() / max(valid.sum(), 1), rtol=1e-5, atol=1e-6)
    total = minienc.cross_entropy(logits, t, ignore_index=-1, reduction="sum").item()
    np.testing.assert_allclose(total, picked[valid].sum(), rtol=1e-5, atol=1e-5)


def test_logsumexp_of_a_row_of_minus_infinity_is_minus_infinity(device):
    x = minienc.tensor([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, -np.inf]], requires_grad=True,
                       device=device)
    out = minienc.logsumexp(x, axis=-1)
    assert np.isneginf(out.numpy()[0]) and out.numpy()[1] == pytest.approx(np.log(1 + np.e))
    out.backward(minienc.tensor([1.0, 1.0], device=device).data)
    grad = minienc.backend.to_host(x.grad)
    np.testing.assert_array_equal(grad[0], 0.0)          # nothing to share: no NaN
    np.testing.assert_allclose(grad[1], [1 / (1 + np.e), np.e / (1 + np.e), 0.0], rtol=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_zero_grad(device):
    logits = minienc.tensor(np.ones((2, 3)), requires_grad=True, device=device)
    loss = minienc.cross_entropy(logits, [-100, -100], ignore_index=-100)
    loss.backward()
    assert loss.item() == 0.0 and not np.any(to_host(logits.grad))


@HYP
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), seed=SEEDS)
def test_losses_are_non_negative(device, shape, seed):
    rng = np.random.default_rng(seed)
    x = minienc.tensor(rng.standard_normal(shape) * 10, device=device)
    t = minienc.tensor(rng.uniform(0, 1, shape), device=device)
    assert minienc.binary_cross_entropy_with_logits(x, t, reduction="none").numpy().min(initial=0) >= 0
    assert minienc.mse_loss(x, t, reduction="none").numpy().min(initial=0) >= 0
    assert minienc.smooth_l1_loss(x, t, reduction="none").numpy().min(initial=0) >= 0
    assert minienc.mse_loss(x, x).item() == 0.0


EXTREME = {
    "softmax": lambda z, t: z.softmax(),
    "log_softmax": lambda z, t: z.log_softmax(),
    "logsumexp": lambda z, t: minienc.logsumexp(z),
    "cross_entropy": lambda z, t: minienc.cross_entropy(z, t, reduction="none"),
    "bce": lambda z, t: minienc.binary_cross_entropy_with_logits(z, (t.astype("float32") * 0.5)[:, None]
                                                                 .broadcast_to(z.shape), reduction="none"),
    "sigmoid": lambda z, t: z.sigmoid(),
    "softplus": lambda z, t: z.softplus(),
    "tanh": lambda z, t: z.tanh(),
    "gelu": lambda z, t: z.gelu(),
    "normalize": lambda z, t: minienc.normalize(z),
}


@pytest.mark.parametrize("name", list(EXTREME))
def test_stable_at_extreme_logits(device, name):
    z = minienc.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -3.0]],
                       requires_grad=True, device=device)
    t = minienc.tensor([1, 2, 0], device=device)
    with minienc.detect_anomaly():  # raises at the first NaN or inf, forward or backward
        out = EXTREME[name](z, t)
        (out * out).sum().backward()
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(to_host(z.grad)))


def test_extreme_values_are_right(device):
    z = minienc.tensor([[1e4, -1e4]], device=device)
    assert minienc.cross_entropy(z, [0]).item() == 0.0
    assert minienc.cross_entropy(z, [1]).item() == pytest.approx(2e4)
    assert np.allclose(z.softmax().numpy(), [[1.0, 0.0]])
    assert np.allclose(z.sigmoid().numpy(), [[1.0, 0.0]])
    assert np.allclose(z.softplus().numpy(), [[1e4, 0.0]])
    assert minienc.logsumexp(z).item() == pytest.approx(1e4)
    assert minienc.binary_cross_entropy_with_logits(z, minienc.tensor([[0.0, 1.0]], device=device),
                                                    reduction="sum").item() == pytest.approx(2e4)


# ----- conventions at kinks and ties (the subgradient each op picks) --------------------------
def grad_of(fn, host, device):
    x = minienc.tensor(host, requires_grad=True, device=device)
    fn(x).sum().backward()
    return to_host(x.grad)


def test_subgradients_at_kinks_and_ties(device):
    assert grad_of(lambda x: x.max(), [1.0, 3.0, 3.0], device).tolist() == [0.0, 0.5, 0.5]
    assert grad_of(lambda x: x.min(axis=1), [[2.0, 2.0], [0.0, 1.0]], device).tolist() == \
        [[0.5, 0.5], [1.0, 0.0]]
    assert grad_of(lambda x: minienc.maximum(x, 1.0), [1.0, 2.0, 0.0], device).tolist() == [0.5, 1.0, 0.0]
    assert grad_of(lambda x: x.relu(), [-1.0, 0.0, 2.0], device).tolist() == [0.0, 0.0, 1.0]
    assert grad_of(lambda x: x.abs(), [-1.0, 0.0, 2.0], device).tolist() == [-1.0, 0.0, 1.0]
    assert grad_of(lambda x: x.clip(0.0, 1.0), [-1.0, 0.0, 0.5, 1.0, 2.0], device).tolist() == \
        [0.0, 1.0, 1.0, 1.0, 0.0]


def test_indexing_scatters_with_duplicates(device):
    assert grad_of(lambda x: x[[0, 0, 2, 0]], [1.0, 2.0, 3.0], device).tolist() == [3.0, 0.0, 1.0]
    assert grad_of(lambda x: x[minienc.tensor([1, 1], device=device), 0], [[1.0, 2.0], [3.0, 4.0]],
                   device).tolist() == [[0.0, 0.0], [2.0, 0.0]]
    x = np.arange(6.0).reshape(2, 3)
    assert grad_of(lambda x: x[x > 2.5], x, device).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert grad_of(lambda x: x[:, ::-2] * 3.0, x, device).tolist() == [[3, 0, 3], [3, 0, 3]]
