"""Check an op's backward against central finite differences (Chainer's check_backward, in
spirit).

For f = fn(*inputs) and a random upstream gradient u (never all ones, so a backward that ignores
its incoming gradient fails), the analytic gradient of L(x) = sum(u * f(x)) is compared with

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

entry by entry for small inputs (a failure names the input and entry), and for large ones along a
few random directions v (v . grad vs (L(x + eps v) - L(x - eps v)) / 2 eps) plus per-entry spot
checks: a sum over all entries dilutes an error confined to one of them (a 2% error in one entry
of 300 moves v . grad by well under the tolerance), so a random sample of entries and the entries
of largest analytic magnitude (where a wrong value does the most harm) are each checked by their
own central difference. Everything runs in float64. Besides the values it checks that each gradient has its input's shape (the engine
refuses a wrong dtype or number of gradients, and gradcheck reports it), that a zero upstream
gradient gives zero gradients, that two backward passes agree, and that forward
leaves its inputs unmodified.
"""
from . import backend
from .engine import as_tensor, no_grad, Tensor


class GradcheckError(AssertionError):
    pass


def _to_float64(x):
    if isinstance(x, Tensor) and backend.is_floating(x.dtype):
        data = x.data if x.dtype == backend.dtype("float64") else x.data.astype("float64")
        return as_tensor(data).requires_grad_(x.requires_grad)
    return x


def _analytic(fn, inputs, wrt, upstream, retain_graph=False):
    """Run fn and backward once; returns the output and each input's gradient (zeros if none)."""
    for x in wrt:
        x.grad = None
    out = fn(*inputs)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise GradcheckError("gradcheck: fn must return a tensor that depends on an input requiring grad")
    try:
        out.backward(upstream(out), retain_graph=retain_graph)
    except (ValueError, TypeError, RuntimeError) as exc:
        # the engine's checks: a backward returned a wrong shape, dtype or number of gradients
        raise GradcheckError(f"gradcheck: {exc}") from exc
    return out, [x.grad if x.grad is not None else x.xp.zeros_like(x.data) for x in wrt]


def _again(out, wrt, upstream):
    """A second backward through the retained graph of `out`."""
    for x in wrt:
        x.grad = None
    out.backward(upstream(out))
    return [x.grad if x.grad is not None else x.xp.zeros_like(x.data) for x in wrt]


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, max_full_size=128,
              directions=4, spot_checks=4, raise_exception=True):
    """True if fn's backward matches finite differences on every input with requires_grad.

    Inputs of more than `max_full_size` entries are checked along `directions` random
    directions, then entry by entry at `spot_checks` random entries and the `spot_checks`
    entries of largest analytic gradient (0: directions only). Floating tensors are cast to
    float64 copies first; pass tensors that already are float64 (for instance non-contiguous
    views) to have them used as they are. Inputs are perturbed in place through .data and
    restored exactly (no version bump: no graph sees the perturbation). Raises GradcheckError
    naming the failure (or returns False with raise_exception=False).
    """
    try:
        _gradcheck(fn, [_to_float64(x) for x in inputs], eps, atol, rtol, seed, max_full_size,
                   directions, spot_checks)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _gradcheck(fn, inputs, eps, atol, rtol, seed, max_full_size, directions, spot_checks):
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise GradcheckError("gradcheck: no input has requires_grad=True")
    xp = wrt[0].xp
    names = {id(x): f"input {i}" for i, x in enumerate(inputs)}
    rng = backend.numpy.random.default_rng(seed)
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    originals = [x.data.copy() for x in tensors]
    cache = {}

    def upstream(out):
        if "u" not in cache:
            host = rng.standard_normal(out.shape) + 0.5  # off-centre: never all ones, rarely near zero
            cache["u"] = xp.asarray(host, dtype=out.dtype)
        return cache["u"]

    # Structure first (a wrong shape or an input changed in place makes every later number moot),
    # then values, which name the entry, then the consistency checks.
    out, grads = _analytic(fn, inputs, wrt, upstream, retain_graph=True)
    for x, original in zip(tensors, originals):
        if not bool(xp.array_equal(x.data, original, equal_nan=True)):
            raise GradcheckError(f"gradcheck: forward modified {names[id(x)]} in place")
    for x, g in zip(wrt, grads):
        if tuple(g.shape) != x.shape:
            raise GradcheckError(f"gradcheck: {names[id(x)]} has shape {x.shape} but its gradient "
                                 f"has shape {tuple(g.shape)}")

    def objective():
        with no_grad():
            out = fn(*inputs)
        return float((out.data * upstream(out)).sum())

    for x, g in zip(wrt, grads):
        if x.size <= max_full_size:
            _check_entries(x, g, names[id(x)], objective, eps, atol, rtol)
        else:
            _check_directions(x, g, names[id(x)], objective, rng, directions, eps, atol, rtol)
            if spot_checks:
                _check_entries(x, g, names[id(x)], objective, eps, atol, rtol,
                               _spot_entries(g, rng, spot_checks))

    for x, g, g2 in zip(wrt, grads, _again(out, wrt, upstream)):
        if not bool(xp.allclose(g, g2, rtol=1e-10, atol=1e-12)):
            raise GradcheckError(f"gradcheck: two backward passes disagree for {names[id(x)]}")
    _, zero = _analytic(fn, inputs, wrt, lambda out: xp.zeros(out.shape, dtype=out.dtype))
    for x, g in zip(wrt, zero):
        nonzero = backend.numpy.flatnonzero(backend.to_host(g))
        if nonzero.size:
            index = _index(nonzero[0], x.shape)
            raise GradcheckError(f"gradcheck: a zero upstream gradient gave a non-zero gradient for "
                                 f"{names[id(x)]} (shape {x.shape}) entry {index}: {float(g[index]):.8g}")


def _index(flat, shape):
    return tuple(int(k) for k in backend.numpy.unravel_index(int(flat), shape))


def _check_entries(x, g, name, objective, eps, atol, rtol, entries=None):
    """One central difference per entry: every entry (the full Jacobian-vector product), or the
    flat indices in `entries`."""
    for i in range(x.size) if entries is None else entries:
        index = _index(i, x.shape)
        value = x.data[index].copy()
        x.data[index] = value + eps
        plus = objective()
        x.data[index] = value - eps
        minus = objective()
        x.data[index] = value
        numeric = (plus - minus) / (2 * eps)
        analytic = float(g[index])
        if not abs(numeric - analytic) <= atol + rtol * abs(numeric):  # `not <=` also catches NaN
            raise GradcheckError(f"gradcheck: {name} (shape {x.shape}) entry {index}: numeric "
                                 f"{numeric:.8g} vs analytic {analytic:.8g}")


def _spot_entries(g, rng, count):
    """Flat indices of `count` random entries of g and of the `count` largest in magnitude."""
    np = backend.numpy
    magnitude = np.abs(backend.to_host(g)).reshape(-1)
    count = min(count, magnitude.size)
    largest = np.argpartition(-magnitude, count - 1)[:count]
    sample = rng.choice(magnitude.size, size=count, replace=False)
    return np.unique(np.concatenate([largest, sample])).tolist()


def _check_directions(x, g, name, objective, rng, directions, eps, atol, rtol):
    """For large inputs: v . grad against the central difference along random directions v."""
    original = x.data.copy()
    for d in range(directions):
        direction = x.xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)
        x.data[...] = original + eps * direction
        plus = objective()
        x.data[...] = original - eps * direction
        minus = objective()
        x.data[...] = original
        numeric = (plus - minus) / (2 * eps)
        analytic = float((g * direction).sum())
        if not abs(numeric - analytic) <= atol * x.size ** 0.5 + rtol * abs(numeric):
            raise GradcheckError(f"gradcheck: {name} (shape {x.shape}) random direction {d}: numeric "
                                 f"{numeric:.8g} vs analytic {analytic:.8g}")
