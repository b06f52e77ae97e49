"""Check an op's backward against central finite differences (Chainer's check_backward, in
spirit).

For f = fn(*inputs) and a random upstream gradient u (never all ones, so a backward that ignores
its incoming gradient fails), the analytic gradient of L(x) = sum(u * f(x)) is compared with

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

entry by entry for small inputs (a failure names the input and entry), and along a few random
directions v for large ones (v . grad vs (L(x + eps v) - L(x - eps v)) / 2 eps). Everything runs in
float64. Besides the values it checks that each gradient has its input's shape and dtype, that a
zero upstream gradient gives zero gradients, that two backward passes agree, and that forward
leaves its inputs unmodified.
"""
from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def _to_float64(x):
    if isinstance(x, Tensor) and backend.is_floating(x.dtype):
        data = x.data if x.dtype == backend.dtype("float64") else x.data.astype("float64")
        return Tensor._wrap(data, False, None).requires_grad_(x.requires_grad)
    return x


def _analytic(fn, inputs, wrt, upstream, twice=False):
    for x in wrt:
        x.grad = None
    out = fn(*inputs)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise GradcheckError("gradcheck: fn must return a tensor that depends on an input requiring grad")
    out.backward(upstream(out), retain_graph=twice)
    grads = [x.grad if x.grad is not None else x.xp.zeros_like(x.data) for x in wrt]
    if twice:
        for x in wrt:
            x.grad = None
        out.backward(upstream(out))
        second = [x.grad if x.grad is not None else x.xp.zeros_like(x.data) for x in wrt]
        return grads, second
    return grads


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, max_full_size=128,
              directions=4, raise_exception=True):
    """True if fn's backward matches finite differences on every input with requires_grad.

    Floating tensors are cast to float64 copies first; pass tensors that already are float64
    (for instance non-contiguous views) to have them used as they are. Raises GradcheckError
    naming the failure (or returns False with raise_exception=False).
    """
    try:
        _gradcheck(fn, [_to_float64(x) for x in inputs], eps, atol, rtol, seed, max_full_size, directions)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _gradcheck(fn, inputs, eps, atol, rtol, seed, max_full_size, directions):
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise GradcheckError("gradcheck: no input has requires_grad=True")
    xp = wrt[0].xp
    names = {id(x): f"input {i}" for i, x in enumerate(inputs)}
    rng = backend.numpy.random.default_rng(seed)
    originals = [x.data.copy() for x in wrt]
    cache = {}

    def upstream(out):
        if "u" not in cache:
            host = rng.standard_normal(out.shape) + 0.5  # off-centre: never all ones, rarely near zero
            cache["u"] = xp.asarray(host, dtype=out.dtype)
        return cache["u"]

    grads, second = _analytic(fn, inputs, wrt, upstream, twice=True)
    for x, original in zip(wrt, originals):
        if not bool(xp.array_equal(x.data, original)):
            raise GradcheckError(f"gradcheck: forward modified {names[id(x)]} in place")
    for x, g, g2 in zip(wrt, grads, second):
        if tuple(g.shape) != x.shape:
            raise GradcheckError(f"gradcheck: {names[id(x)]} has shape {x.shape} but its gradient "
                                 f"has shape {tuple(g.shape)}")
        if g.dtype != x.dtype:
            raise GradcheckError(f"gradcheck: {names[id(x)]} is {x.dtype} but its gradient is {g.dtype}")
        if not bool(xp.allclose(g, g2, rtol=1e-10, atol=1e-12)):
            raise GradcheckError(f"gradcheck: two backward passes disagree for {names[id(x)]}")
    zero = _analytic(fn, inputs, wrt, lambda out: xp.zeros(out.shape, dtype=out.dtype))
    for x, g in zip(wrt, zero):
        if bool(xp.any(g != 0)):
            raise GradcheckError(f"gradcheck: a zero upstream gradient gave a non-zero gradient "
                                 f"for {names[id(x)]}")

    def objective():
        with no_grad():
            out = fn(*inputs)
        return float((out.data * upstream(out)).sum())

    for x, g in zip(wrt, grads):
        name = names[id(x)]
        flat = x.data.reshape(-1) if x.data.flags.c_contiguous else None
        if x.size <= max_full_size:
            for i in range(x.size):
                index = tuple(int(k) for k in backend.numpy.unravel_index(i, x.shape))
                value = x.data[index].copy()
                x.data[index] = value + eps
                plus = objective()
                x.data[index] = value - eps
                minus = objective()
                x.data[index] = value
                numeric = (plus - minus) / (2 * eps)
                analytic = float(g[index])
                if abs(numeric - analytic) > atol + rtol * abs(numeric):
                    raise GradcheckError(
                        f"gradcheck: {name} (shape {x.shape}) entry {index}: numeric {numeric:.8g} "
                        f"vs analytic {analytic:.8g}")
        else:
            for d in range(directions):
                direction = xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)
                original = x.data.copy()
                x.data[...] = original + eps * direction
                plus = objective()
                x.data[...] = original - eps * direction
                minus = objective()
                x.data[...] = original
                numeric = (plus - minus) / (2 * eps)
                analytic = float((g * direction).sum())
                if abs(numeric - analytic) > atol * x.size ** 0.5 + rtol * abs(numeric):
                    raise GradcheckError(
                        f"gradcheck: {name} (shape {x.shape}) random direction {d}: numeric "
                        f"{numeric:.8g} vs analytic {analytic:.8g}")
        del flat
