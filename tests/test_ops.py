"""Every op's backward against finite differences, on shapes hypothesis draws: broadcast pairs,
size-1 axes, non-contiguous views, and values kept away from each op's kinks (relu and abs at 0,
log and sqrt near 0, max ties, clip bounds). Plus: no op turns float32 inputs into float64."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minienc

# `device` and the seeding fixture are function-scoped but constant across examples
HYP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
SHAPES_1D_UP = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)
LAYOUTS = st.sampled_from(["c", "t"])
SEEDS = st.integers(0, 2**16)


def values(seed, shape, kind="any"):
    """Host float64 values of `shape`, away from the kinks that `kind` names."""
    rng = np.random.default_rng(seed)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    if kind == "any":
        return rng.standard_normal(shape)
    if kind == "positive":  # log, sqrt, fractional powers: away from 0
        return rng.uniform(0.3, 2.0, shape)
    if kind == "nonzero":  # relu, abs, a divisor: away from 0
        return sign * rng.uniform(0.1, 2.0, shape)
    if kind == "off_clip":  # away from the bounds +-0.5 used by the clip tests
        inside = rng.random(shape) < 0.5
        return sign * np.where(inside, rng.uniform(0.0, 0.45, shape), rng.uniform(0.55, 1.5, shape))
    if kind == "distinct":  # max/min: no ties, and every gap far wider than the difference step
        size = int(np.prod(shape, dtype=int))
        return (rng.permutation(size) * 0.1 - 0.3 * size / 2).reshape(shape)
    if kind in ("grid_a", "grid_b"):  # maximum(a, b): a - b is always an integer plus 1/2
        return rng.integers(-2, 3, shape) + (0.25 if kind == "grid_a" else -0.25)
    raise ValueError(kind)


def leaf(host, device, layout="c", requires_grad=True):
    """A float64 leaf on `device`. Layout "t" makes it a non-contiguous view: the transpose of an
    array of the reversed shape (gradcheck uses float64 inputs as they are, views included)."""
    if layout == "t" and host.ndim >= 2:
        base = minienc.tensor(np.ascontiguousarray(host.T), dtype="float64", device=device)
        t = base.T.detach()
        assert not t.data.flags.c_contiguous or 1 in host.shape
    else:
        t = minienc.tensor(host, dtype="float64", device=device)
    return t.requires_grad_(requires_grad)


# ----- elementwise ---------------------------------------------------------------------------
UNARY = [
    ("neg", lambda x: -x, "any"),
    ("exp", lambda x: x.exp(), "any"),
    ("log", lambda x: x.log(), "positive"),
    ("sqrt", lambda x: x.sqrt(), "positive"),
    ("abs", lambda x: x.abs(), "nonzero"),
    ("tanh", lambda x: x.tanh(), "any"),
    ("sigmoid", lambda x: x.sigmoid(), "any"),
    ("relu", lambda x: x.relu(), "nonzero"),
    ("gelu", lambda x: x.gelu(), "any"),
    ("softplus", lambda x: x.softplus(), "any"),
    ("pow_int", lambda x: x ** 3, "any"),
    ("pow_frac", lambda x: x ** -1.5, "positive"),
    ("rpow", lambda x: 2.0 ** x, "any"),
    ("scalar_arith", lambda x: (3.0 - x) * 2.0 / 4.0 + 1.0, "any"),
    ("rdiv", lambda x: 1.5 / x, "nonzero"),
    ("clip", lambda x: x.clip(-0.5, 0.5), "off_clip"),
    ("clip_low", lambda x: minienc.clip(x, low=-0.5), "off_clip"),
    ("maximum_scalar", lambda x: minienc.maximum(x, 0.0), "nonzero"),
    ("minimum_scalar", lambda x: minienc.minimum(0.0, x), "nonzero"),
]


@pytest.mark.parametrize("fn,kind", [u[1:] for u in UNARY], ids=[u[0] for u in UNARY])
@HYP
@given(shape=SHAPES, layout=LAYOUTS, seed=SEEDS)
def test_unary(device, fn, kind, shape, layout, seed):
    assert minienc.gradcheck(fn, leaf(values(seed, shape, kind), device, layout))


BINARY = [
    ("add", lambda a, b: a + b, "any", "any"),
    ("sub", lambda a, b: a - b, "any", "any"),
    ("mul", lambda a, b: a * b, "any", "any"),
    ("div", lambda a, b: a / b, "any", "nonzero"),
    ("pow", lambda a, b: a ** b, "positive", "any"),
    ("maximum", minienc.maximum, "grid_a", "grid_b"),
    ("minimum", minienc.minimum, "grid_a", "grid_b"),
]


@pytest.mark.parametrize("fn,kind_a,kind_b", [b[1:] for b in BINARY], ids=[b[0] for b in BINARY])
@HYP
@given(shapes=PAIRS, layouts=st.tuples(LAYOUTS, LAYOUTS), seed=SEEDS)
def test_binary_broadcast(device, fn, kind_a, kind_b, shapes, layouts, seed):
    (sa, sb), _ = shapes
    a = leaf(values(seed, sa, kind_a), device, layouts[0])
    b = leaf(values(seed + 1, sb, kind_b), device, layouts[1])
    assert minienc.gradcheck(fn, a, b)


@HYP
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4), seed=SEEDS)
def test_where(device, shapes, seed):
    (sc, sa, sb), _ = shapes
    condition = minienc.tensor(np.random.default_rng(seed).random(sc) < 0.5, device=device)
    a, b = leaf(values(seed, sa), device), leaf(values(seed + 1, sb), device)
    assert minienc.gradcheck(lambda a, b: minienc.where(condition, a, b), a, b)
    assert minienc.gradcheck(lambda a: minienc.where(condition, a, 0.5), a)


# ----- reductions ----------------------------------------------------------------------------
REDUCTIONS = [
    ("sum", lambda x, axis, keep: x.sum(axis=axis, keepdims=keep), "any"),
    ("mean", lambda x, axis, keep: x.mean(axis=axis, keepdims=keep), "any"),
    ("max", lambda x, axis, keep: x.max(axis=axis, keepdims=keep), "distinct"),
    ("min", lambda x, axis, keep: x.min(axis=axis, keepdims=keep), "distinct"),
    ("var", lambda x, axis, keep: x.var(axis=axis, keepdims=keep), "any"),
    ("var_ddof1", lambda x, axis, keep: x.var(axis=axis, keepdims=keep, ddof=1), "any"),
    ("logsumexp", lambda x, axis, keep: minienc.logsumexp(x, axis=axis, keepdims=keep), "any"),
]


def draw_axis(data, ndim):
    """None, one int (negative too) or a tuple of distinct axes."""
    options = [st.none()]
    if ndim:
        options += [st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1)]
    return data.draw(st.one_of(options), label="axis")


@pytest.mark.parametrize("name,fn,kind", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@HYP
@given(shape=SHAPES, layout=LAYOUTS, keepdims=st.booleans(), seed=SEEDS, data=st.data())
def test_reduction(device, name, fn, kind, shape, layout, keepdims, seed, data):
    axis = draw_axis(data, len(shape))
    if name == "var_ddof1":  # ddof=1 needs two values along the reduced axes
        axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
        if np.prod([shape[a] for a in axes], dtype=int) < 2:
            return
    x = leaf(values(seed, shape, kind), device, layout)
    assert minienc.gradcheck(lambda x: fn(x, axis, keepdims), x)


# ----- shapes and indexing -------------------------------------------------------------------
@HYP
@given(shape=SHAPES, layout=LAYOUTS, seed=SEEDS, data=st.data())
def test_reshape_transpose(device, shape, layout, seed, data):
    x = leaf(values(seed, shape), device, layout)
    target = data.draw(st.permutations(shape), label="target")
    perm = data.draw(st.permutations(range(len(shape))), label="perm")
    assert minienc.gradcheck(lambda x: x.reshape(*target) * 2.0, x)
    assert minienc.gradcheck(lambda x: x.reshape(-1), x)
    assert minienc.gradcheck(lambda x: x.transpose(*perm), x)
    assert minienc.gradcheck(lambda x: x.T, x)
    assert minienc.gradcheck(lambda x: x.permute(perm), x)
    assert minienc.gradcheck(lambda x: x.unsqueeze(0).unsqueeze(-1).squeeze(), x)


@HYP
@given(target=SHAPES, layout=LAYOUTS, seed=SEEDS, data=st.data())
def test_broadcast_to(device, target, layout, seed, data):
    # a trailing part of target with some axes set to 1: a shape that broadcasts *to* target
    kept = data.draw(st.lists(st.booleans(), min_size=len(target), max_size=len(target)), label="kept")
    lead = data.draw(st.integers(0, len(target)), label="dropped leading axes")
    shape = tuple(n if keep else 1 for n, keep in zip(target, kept))[lead:]
    x = leaf(values(seed, shape), device, layout)
    assert minienc.gradcheck(lambda x: x.broadcast_to(target), x)
    assert minienc.gradcheck(lambda x: x.expand(*target), x)


def draw_key(data, shape, rng, device):
    """An index of one kind: int, slice, integer array (with a repeat), boolean mask, or a mix;
    index arrays live on the tensor's device."""
    n = shape[0]
    kinds = ["int", "slice", "array", "list", "tensor", "mask", "mask_axis0"]
    if len(shape) >= 2:
        kinds += ["slice_array", "array_pair", "ellipsis_none"]
    kind = data.draw(st.sampled_from(kinds), label="key kind")
    repeated = np.concatenate([rng.integers(-n, n, size=3), [0, 0]])  # duplicates for sure

    def on_device(array):
        return minienc.tensor(array, device=device).data

    if kind == "int":
        return data.draw(st.integers(-n, n - 1), label="int")
    if kind == "slice":
        return data.draw(st.slices(n), label="slice")
    if kind == "list":
        return [int(i) for i in repeated]
    if kind == "tensor":
        return minienc.tensor(repeated, device=device)
    if kind == "mask":
        return on_device(rng.random(shape) < 0.5)
    if kind == "mask_axis0":
        return on_device(rng.random(n) < 0.5)
    if kind == "slice_array":
        return slice(None, None, -1), on_device(rng.integers(0, shape[1], size=4))
    if kind == "array_pair":
        return on_device(repeated), on_device(np.zeros(5, dtype=int))
    if kind == "ellipsis_none":
        return Ellipsis, 0, None
    return on_device(repeated)


@HYP
@given(shape=SHAPES_1D_UP, layout=LAYOUTS, seed=SEEDS, data=st.data())
def test_getitem(device, shape, layout, seed, data):
    key = draw_key(data, shape, np.random.default_rng(seed), device)
    x = leaf(values(seed, shape), device, layout)
    assert minienc.gradcheck(lambda x: x[key], x)


@HYP
@given(shape=SHAPES_1D_UP, sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       seed=SEEDS, data=st.data())
def test_concatenate_stack(device, shape, sizes, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    parts = []
    for i, size in enumerate(sizes):
        part_shape = list(shape)
        part_shape[axis] = size
        parts.append(leaf(values(seed + i, tuple(part_shape)), device, data.draw(LAYOUTS)))
    assert minienc.gradcheck(lambda *xs: minienc.concatenate(xs, axis=axis), *parts)
    same = [leaf(values(seed + i, shape), device) for i in range(len(sizes))]
    stack_axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="stack axis")
    assert minienc.gradcheck(lambda *xs: minienc.stack(xs, axis=stack_axis), *same)


# ----- matmul --------------------------------------------------------------------------------
def operand(kind, batch, rows, cols):
    if kind == "vec":
        return (rows,) if cols is None else (cols,)
    return (rows, cols) if kind == "mat" else tuple(batch) + (rows, cols)


@HYP
@given(batches=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=2, max_side=3),
       kinds=st.tuples(*[st.sampled_from(["vec", "mat", "batched"])] * 2),
       mkn=st.tuples(*[st.integers(1, 4)] * 3), layouts=st.tuples(LAYOUTS, LAYOUTS), seed=SEEDS)
def test_matmul(device, batches, kinds, mkn, layouts, seed):
    """2-D, batched, broadcast batch dims, a weight shared over a batch, and 1-D on either side."""
    (batch_a, batch_b), _ = batches
    m, k, n = mkn
    shape_a = (k,) if kinds[0] == "vec" else operand(kinds[0], batch_a, m, k)
    shape_b = (k,) if kinds[1] == "vec" else operand(kinds[1], batch_b, k, n)
    a = leaf(values(seed, shape_a), device, layouts[0])
    b = leaf(values(seed + 1, shape_b), device, layouts[1])
    out = a @ b
    assert out.shape == np.matmul(a.numpy(), b.numpy()).shape
    assert minienc.gradcheck(lambda a, b: a @ b, a, b)


# ----- softmax family and losses -------------------------------------------------------------
@HYP
@given(shape=SHAPES_1D_UP, layout=LAYOUTS, seed=SEEDS, data=st.data())
def test_softmax_family(device, shape, layout, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = leaf(values(seed, shape) * 3, device, layout)
    assert minienc.gradcheck(lambda x: x.softmax(axis), x)
    assert minienc.gradcheck(lambda x: x.log_softmax(axis), x)
    away_from_zero = leaf(values(seed, shape, "nonzero"), device)
    assert minienc.gradcheck(lambda x: minienc.normalize(x, axis=axis), away_from_zero)


REDUCTION = st.sampled_from(["mean", "sum", "none"])


@HYP
@given(lead=hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), classes=st.integers(1, 5),
       ignore=st.booleans(), reduction=REDUCTION, layout=LAYOUTS, seed=SEEDS)
def test_cross_entropy(device, lead, classes, ignore, reduction, layout, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, lead)
    if ignore:
        targets = np.where(rng.random(lead) < 0.3, -100, targets)
    logits = leaf(values(seed, lead + (classes,)) * 2, device, layout)
    t = minienc.tensor(targets, device=device)
    kwargs = {"ignore_index": -100} if ignore else {}
    assert minienc.gradcheck(lambda z: minienc.cross_entropy(z, t, reduction=reduction, **kwargs), logits)


@HYP
@given(shape=SHAPES, reduction=REDUCTION, layout=LAYOUTS, seed=SEEDS)
def test_elementwise_losses(device, shape, reduction, layout, seed):
    rng = np.random.default_rng(seed)
    x, target = leaf(values(seed, shape) * 3, device, layout), leaf(rng.uniform(0, 1, shape), device)
    assert minienc.gradcheck(
        lambda x, t: minienc.binary_cross_entropy_with_logits(x, t, reduction=reduction), x, target)
    assert minienc.gradcheck(lambda x, t: minienc.mse_loss(x, t, reduction=reduction), x, target)
    # pred - target away from +-beta = 0.5, where smooth L1 switches from quadratic to linear
    pred = leaf(target.numpy() + values(seed, shape, "off_clip"), device, layout)
    assert minienc.gradcheck(
        lambda p, t: minienc.smooth_l1_loss(p, t, beta=0.5, reduction=reduction), pred, target)


def test_normalize_zero_row(device):
    host = np.random.default_rng(0).standard_normal((3, 4))
    host[1] = 0.0
    host[2] *= 1e-4 / np.linalg.norm(host[2])  # nonzero, but under the eps=1e-3 used below
    x = leaf(host, device)
    out = minienc.normalize(x)
    assert np.all(out.numpy()[1] == 0.0) and np.all(np.isfinite(out.numpy()))
    out.sum().backward()
    assert np.all(np.isfinite(minienc.backend.to_host(x.grad)))
    # below eps the map is x / eps: with eps above the difference step the check sees that branch
    # (the zero row alone would not: there x / eps is 0 whatever the backward does with it)
    assert minienc.gradcheck(lambda x: minienc.normalize(x, eps=1e-3), x)


# ----- no silent float64 ---------------------------------------------------------------------
FLOAT32_OPS = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y, "pow": lambda x, y: x ** y, "neg": lambda x, y: -x,
    "scalars": lambda x, y: (2.0 - x) * 3 / 0.5 + 1, "rdiv": lambda x, y: 1.0 / x,
    "pow_scalar": lambda x, y: x ** 2.5, "rpow": lambda x, y: 2.0 ** x,
    "numpy_scalar": lambda x, y: x * np.float64(2.0) + np.int64(1),
    "matmul": lambda x, y: x @ y.reshape(4, 1), "matmul_1d": lambda x, y: x @ y,
    "exp": lambda x, y: x.exp(), "log": lambda x, y: x.log(), "sqrt": lambda x, y: x.sqrt(),
    "abs": lambda x, y: x.abs(), "tanh": lambda x, y: x.tanh(), "sigmoid": lambda x, y: x.sigmoid(),
    "relu": lambda x, y: x.relu(), "gelu": lambda x, y: x.gelu(), "softplus": lambda x, y: x.softplus(),
    "sum": lambda x, y: x.sum(axis=0), "mean": lambda x, y: x.mean(), "max": lambda x, y: x.max(axis=1),
    "min": lambda x, y: x.min(), "var": lambda x, y: x.var(axis=1, ddof=1),
    "reshape": lambda x, y: x.reshape(-1), "transpose": lambda x, y: x.T,
    "broadcast_to": lambda x, y: y.broadcast_to((2, 3, 4)), "getitem": lambda x, y: x[[0, 0, 2], 1:],
    "mask": lambda x, y: x[x > 1.0], "concatenate": lambda x, y: minienc.concatenate([x, x], axis=1),
    "stack": lambda x, y: minienc.stack([x, x]), "where": lambda x, y: minienc.where(x > 1.0, x, 0.5),
    "maximum": lambda x, y: minienc.maximum(x, y), "minimum": lambda x, y: minienc.minimum(x, 0.5),
    "clip": lambda x, y: x.clip(0.5, 1.5), "softmax": lambda x, y: x.softmax(),
    "log_softmax": lambda x, y: x.log_softmax(0), "logsumexp": lambda x, y: minienc.logsumexp(x),
    "cross_entropy": lambda x, y: minienc.cross_entropy(x, [0, 3, 1], ignore_index=1),
    "bce": lambda x, y: minienc.binary_cross_entropy_with_logits(x, x.detach() * 0.3),
    "mse": lambda x, y: minienc.mse_loss(x, x.detach() * 0.5),
    "smooth_l1": lambda x, y: minienc.smooth_l1_loss(x, x.detach() * 0.5, reduction="none"),
    "normalize": lambda x, y: minienc.normalize(x, axis=0),
    # integer and boolean operands take the floating dtype (NumPy alone would make float64)
    "int_add": lambda x, y: ints(x, [1, 2, 3, 4]) + x, "int_pow": lambda x, y: x ** ints(x, [2, 1, 2, 3]),
    "bool_mask": lambda x, y: x * (x > 1.0), "int_matmul": lambda x, y: ints(x, np.eye(3, dtype=int)) @ x,
    "int_where": lambda x, y: minienc.where(x > 1.0, ints(x, [1, 2, 3, 4]), x),
    "bce_int_targets": lambda x, y: minienc.binary_cross_entropy_with_logits(x, ints(x, np.ones((3, 4), int))),
    "mse_int_target": lambda x, y: minienc.mse_loss(x, ints(x, np.ones((3, 4), int))),
    "concatenate_int": lambda x, y: minienc.concatenate([x, ints(x, np.ones((3, 1), int))], axis=1),
}


def ints(like, values):
    return minienc.tensor(np.asarray(values, dtype=np.int64), device=like.device)


@pytest.mark.parametrize("name", list(FLOAT32_OPS))
def test_float32_in_float32_out(device, name):
    rng = np.random.default_rng(0)
    x = minienc.tensor(rng.uniform(0.5, 2.0, (3, 4)), requires_grad=True, device=device)
    y = minienc.tensor(rng.uniform(0.5, 2.0, (4,)), requires_grad=True, device=device)
    assert x.dtype == np.float32 and y.dtype == np.float32
    out = FLOAT32_OPS[name](x, y)
    assert out.dtype == np.float32, f"{name} returned {out.dtype}"
    (out * out).sum().backward()
    for t in (x, y):
        assert t.grad is None or t.grad.dtype == np.float32, f"{name}'s gradient is {t.grad.dtype}"


@pytest.mark.parametrize("loss", [minienc.mse_loss, minienc.smooth_l1_loss,
                                  minienc.binary_cross_entropy_with_logits])
def test_mean_losses_of_empty_inputs_have_empty_gradients(device, loss):
    pred = minienc.tensor(np.zeros((0, 3)), requires_grad=True, device=device)
    with np.errstate(invalid="ignore", divide="ignore"), pytest.warns(RuntimeWarning):
        loss(pred, minienc.tensor(np.zeros((0, 3)), device=device)).backward()  # NaN, as NumPy's mean
    assert pred.grad.shape == (0, 3)
