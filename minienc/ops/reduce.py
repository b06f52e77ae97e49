"""Reductions: sum, mean, max, var (NumPy's `axis` and `keepdims`)."""
import builtins

from ..backend import get_xp
from ..engine import Function


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} dimensions")
    return tuple(sorted(a % ndim if ndim else 0 for a in axes))


def shift_for_exp(x, axis, keepdims=True):
    """The maximum over `axis` to subtract before exp (the stable softmax and logsumexp), with 0
    for the rows whose entries are all -inf: there x - max would be -inf - -inf = NaN, while with
    0 it stays -inf, exp gives 0, and the row's logsumexp is log(0) = -inf, as PyTorch gives.
    Attention's fully masked rows are such rows too."""
    top = x.max(axis=axis, keepdims=keepdims)
    return get_xp(x).where(top == float("-inf"), x.dtype.type(0), top)


def reciprocal(count):
    """1 / count, the factor of a mean's gradient; 0 for a mean over no values (the input is then
    empty and so is its gradient; the forward gives NaN, as NumPy and PyTorch do)."""
    return 1.0 / count if count else 0.0


def _unreduce(g, in_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input again."""
    if not keepdims:
        shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
        g = g.reshape(shape)
    return g


class _Reduction(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def _setup(self, x):
        self.in_shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]


class Sum(_Reduction):
    def forward(self, x):
        self._setup(x)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        return get_xp(g).broadcast_to(_unreduce(g, self.in_shape, self.axes, self.keepdims), self.in_shape)


class Mean(_Reduction):
    def forward(self, x):
        self._setup(x)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        g = _unreduce(g, self.in_shape, self.axes, self.keepdims) * reciprocal(self.count)
        return get_xp(g).broadcast_to(g, self.in_shape)


class Max(_Reduction):
    """Max over axes; tied maxima share the gradient equally."""
    pick = "max"

    def forward(self, x):
        self._setup(x)
        out = getattr(x, self.pick)(axis=self.axes, keepdims=True)
        self.mask = x == out
        return out if self.keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        g = _unreduce(g, self.in_shape, self.axes, self.keepdims)
        ties = self.mask.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        return self.mask * (g / ties)


class Min(Max):
    """Min over axes; tied minima share the gradient equally."""
    pick = "min"


class Var(_Reduction):
    def __init__(self, axis=None, keepdims=False, ddof=0):
        super().__init__(axis, keepdims)
        self.ddof = ddof

    def forward(self, x):
        self._setup(x)
        if self.count - self.ddof <= 0:
            raise ValueError(f"var: {self.count} values with ddof={self.ddof} leave no degrees of freedom")
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        return (self.centered * self.centered).sum(axis=self.axes, keepdims=self.keepdims) \
            * (1.0 / (self.count - self.ddof))

    def backward(self, g):
        g = _unreduce(g, self.in_shape, self.axes, self.keepdims)
        return g * self.centered * (2.0 / (self.count - self.ddof))


def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)  # noqa: A001
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)  # noqa: A001
def min(x, axis=None, keepdims=False): return Min(axis, keepdims)(x)  # noqa: A001
def var(x, axis=None, keepdims=False, ddof=0): return Var(axis, keepdims, ddof)(x)


def off_diagonal_square_sum(m):
    """sum_{i != j} m_ij^2 of a square matrix (D, D), summed over the off-diagonal entries
    themselves: the whole sum minus the diagonal's cancels in float32 exactly where VICReg and
    Barlow Twins aim (a decorrelated batch), leaving noise, even below zero."""
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"off_diagonal_square_sum: expected a square matrix (D, D), got "
                         f"{tuple(m.shape)}")
    xp = get_xp(m.data)
    off_diagonal = 1 - xp.eye(m.shape[0], dtype=m.dtype)   # a constant: no gradient of its own
    return (m * m * off_diagonal).sum()
