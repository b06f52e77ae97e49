"""Weight initialisers: Xavier/Glorot, Kaiming/He, truncated normal, constants.

Every initialiser fills a tensor in place and returns it. Values are drawn on the HOST from
`backend.host_rng()` (in float64, then cast to the tensor's dtype) and only then sent to the
tensor's device, so `manual_seed(n)` gives bit-identical weights on CPU and GPU.

Fans follow PyTorch: for a weight of shape (out, in, *kernel), fan_in = in * prod(kernel) and
fan_out = out * prod(kernel).
"""
import math

from .. import backend


def _fans(shape):
    if len(shape) < 2:
        raise ValueError(f"init: fan_in/fan_out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = 1
    for n in shape[2:]:
        receptive *= n
    return shape[1] * receptive, shape[0] * receptive


def _fill(t, host):
    """Cast the host draw to t's dtype and send it to t's device (replacing t.data)."""
    t.data = backend.to_device(host.astype(t.dtype), t.device)
    return t


def _gain(nonlinearity, a=0.0):
    if nonlinearity in ("linear", "sigmoid", "conv2d", "conv_transpose2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + a * a))
    raise ValueError(f"init: unknown nonlinearity {nonlinearity!r}")


def uniform(t, low=0.0, high=1.0):
    return _fill(t, backend.host_rng().uniform(low, high, size=t.shape))


def normal(t, mean=0.0, std=1.0):
    return _fill(t, backend.host_rng().normal(mean, std, size=t.shape))


def zeros(t):
    return _fill(t, backend.numpy.zeros(t.shape))


def ones(t):
    return _fill(t, backend.numpy.ones(t.shape))


def xavier_uniform(t, gain=1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = _fans(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(t, -bound, bound)


def xavier_normal(t, gain=1.0):
    fan_in, fan_out = _fans(t.shape)
    return normal(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = gain * sqrt(3 / fan) (He et al. 2015). With a=sqrt(5) this is PyTorch's
    default for Linear and Conv weights: b = 1 / sqrt(fan_in)."""
    fan = _fans(t.shape)[0 if mode == "fan_in" else 1]
    bound = _gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform(t, -bound, bound)


def kaiming_normal(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan = _fans(t.shape)[0 if mode == "fan_in" else 1]
    return normal(t, 0.0, _gain(nonlinearity, a) / math.sqrt(fan))


def trunc_normal(t, std=0.02, mean=0.0, a=None, b=None):
    """N(mean, std) truncated to [a, b] (default mean +- 2 std), by redrawing the values that fall
    outside. MAE and I-JEPA initialise ViT weights with std 0.02 this way. (PyTorch's and timm's
    defaults truncate at the absolute values -2 and 2, which for std 0.02 truncates nothing; we
    truncate at 2 std, which is what "truncated normal" means in the papers.)"""
    a = mean - 2.0 * std if a is None else a
    b = mean + 2.0 * std if b is None else b
    if not a < b:
        raise ValueError(f"trunc_normal: empty interval [{a}, {b}]")
    rng = backend.host_rng()
    values = rng.normal(mean, std, size=t.shape)
    outside = (values < a) | (values > b)
    while outside.any():  # on the host: each round keeps >= 95% of the redraws for 2-std bounds
        values[outside] = rng.normal(mean, std, size=int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(t, values)


def linear_bias(t, fan_in):
    """PyTorch's default bias for Linear and Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(t, -bound, bound)


def empty(shape, device=None, dtype=None):
    """A float32 (or `dtype`) Parameter of `shape` on `device` (default: the default device),
    filled with zeros until an initialiser above fills it."""
    from .module import Parameter
    array = backend.numpy.zeros(shape, dtype=dtype or backend.DEFAULT_DTYPE)
    return Parameter(array, device=device or backend.get_device())
