"""Elementwise ops. Binary ops broadcast; the engine sums gradients back to each input's shape.

GELU here is the tanh approximation (Hendrycks & Gimpel 2016, as in GPT-2 and BERT's TF code;
PyTorch's `gelu(approximate="tanh")`): NumPy has no erf, and the tanh form has an exact
elementwise derivative that is cheap on both backends.
"""
from .. import kernels
from ..backend import get_xp
from ..engine import as_array, as_tensor, Function, Tensor


class Add(Function):
    def forward(self, x, y):
        return x + y

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, x, y):
        return x - y

    def backward(self, g):
        return g, (-g if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, g):
        return (g * self.y if self.needs_grad[0] else None,
                g * self.x if self.needs_grad[1] else None)


class Div(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x / y

    def backward(self, g):
        gx = g / self.y
        return (gx if self.needs_grad[0] else None,
                -gx * self.x / self.y if self.needs_grad[1] else None)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class PowConst(Function):
    """x ** p for a constant Python number p."""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, g):
        return g * self.p * self.x ** (self.p - 1)


class Pow(Function):
    """x ** y with both tensors (x > 0 where y needs a gradient)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        self.out = x ** y
        return self.out

    def backward(self, g):
        xp = get_xp(g)
        return (g * self.y * self.x ** (self.y - 1) if self.needs_grad[0] else None,
                g * self.out * xp.log(self.x) if self.needs_grad[1] else None)


class Exp(Function):
    def forward(self, x):
        self.out = get_xp(x).exp(x)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_xp(x).log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.out = get_xp(x).sqrt(x)
        return self.out

    def backward(self, g):
        return g * 0.5 / self.out


class Abs(Function):
    def forward(self, x):
        self.x = x
        return get_xp(x).abs(x)

    def backward(self, g):
        return g * get_xp(g).sign(self.x)


class TanhFunction(Function):
    name = "tanh"

    def forward(self, x):
        self.out = get_xp(x).tanh(x)
        return self.out

    def backward(self, g):
        return g * (1.0 - self.out * self.out)


class SigmoidFunction(Function):
    name = "sigmoid"

    def forward(self, x):
        # 0.5 * (1 + tanh(x/2)) is the logistic function without overflow for large |x|
        self.out = 0.5 * (get_xp(x).tanh(0.5 * x) + 1.0)
        return self.out

    def backward(self, g):
        return g * self.out * (1.0 - self.out)


class ReLUFunction(Function):
    name = "relu"

    def forward(self, x):
        # the mask in x's dtype: float * float is NumPy's fast loop, float * bool a casting one
        # (and np.maximum is slower than both)
        self.positive = (x > 0).astype(x.dtype)
        return x * self.positive

    def backward(self, g):
        return g * self.positive


GELU_C = 0.7978845608028654  # sqrt(2 / pi)
GELU_K = 0.044715


class GELUFunction(Function):
    """0.5 x (1 + tanh(c (x + k x^3))), the tanh approximation (see the module docstring).

    With t = tanh(c (x + k x^3)) the derivative is 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)."""

    name = "gelu"

    def forward(self, x):
        self.x = x
        self.t = get_xp(x).tanh(GELU_C * (x + GELU_K * x * x * x))
        return 0.5 * x * (1.0 + self.t)

    def backward(self, g):
        x, t = self.x, self.t
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_K * x * x))


class Softplus(Function):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for any x."""

    def forward(self, x):
        xp = get_xp(x)
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        return g * (0.5 * (get_xp(g).tanh(0.5 * self.x) + 1.0))


class Where(Function):
    index_inputs = (0,)  # the condition stays boolean

    def forward(self, condition, x, y):
        self.condition = condition
        return get_xp(x).where(condition, x, y)

    def backward(self, g):
        zero = g.dtype.type(0)
        xp = get_xp(g)
        return (None,
                xp.where(self.condition, g, zero) if self.needs_grad[1] else None,
                xp.where(self.condition, zero, g) if self.needs_grad[2] else None)


class Maximum(Function):
    """Elementwise max; at ties each side gets half the gradient."""
    pick = "maximum"

    def forward(self, x, y):
        xp = get_xp(x)
        # built in the inputs' dtype: a Python 0.5 times a bool array would make float64
        self.x_share = (x > y) + (x == y) * x.dtype.type(0.5) if self.pick == "maximum" else \
            (x < y) + (x == y) * x.dtype.type(0.5)
        return getattr(xp, self.pick)(x, y)

    def backward(self, g):
        share = self.x_share
        return (g * share if self.needs_grad[0] else None,
                g * (1 - share) if self.needs_grad[1] else None)


class Minimum(Maximum):
    """Elementwise min; at ties each side gets half the gradient."""
    pick = "minimum"


class Clip(Function):
    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        xp = get_xp(x)
        self.inside = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            self.inside &= x >= self.low
        if self.high is not None:
            self.inside &= x <= self.high
        return xp.clip(x, self.low, self.high)

    def backward(self, g):
        return g * self.inside


class AsType(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


def add(x, y): return Add()(x, y)
def sub(x, y): return Sub()(x, y)
def mul(x, y): return Mul()(x, y)
def div(x, y): return Div()(x, y)
def neg(x): return Neg()(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def abs(x): return Abs()(x)  # noqa: A001 (the NumPy name)
def tanh(x): return TanhFunction()(x)
def sigmoid(x): return SigmoidFunction()(x)
def relu(x): return ReLUFunction()(x)
def gelu(x): return kernels.variant(GELUFunction, x)()(x)
def softplus(x): return Softplus()(x)
def maximum(x, y): return Maximum()(x, y)
def minimum(x, y): return Minimum()(x, y)
def clip(x, low=None, high=None): return Clip(low, high)(x)
def astype(x, dtype): return AsType(dtype)(x)


def pow(x, y):  # noqa: A001
    if isinstance(y, (int, float)) and isinstance(x, Tensor):
        return PowConst(y)(x)
    return Pow()(x, y)


def where(condition, x, y):
    condition = as_array(condition)
    return Where()(as_tensor(condition) if hasattr(condition, "dtype") else condition,
                   x, y)
