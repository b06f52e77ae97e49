"""Shape and indexing ops: reshape, transpose, broadcast_to, getitem, concatenate, stack."""
from .. import kernels
from ..backend import get_xp, scatter_add
from ..engine import as_array, Function, Tensor


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


class Reshape(Function):
    is_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Transpose(Function):
    is_view = True

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        if self.axes is None:
            self.axes = tuple(range(x.ndim))[::-1]
        elif sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation of a "
                             f"{x.ndim}-dimensional shape {x.shape}")
        return x.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return g.transpose(inverse)


class BroadcastTo(Function):
    is_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return get_xp(x).broadcast_to(x, self.shape)

    def backward(self, g):
        return g  # the engine's sum_to folds the broadcast axes back


def _is_basic(key):
    """Basic indexing (ints, slices, None, Ellipsis) never selects an element twice."""
    parts = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, slice)) or k is None or k is Ellipsis for k in parts)


class GetItem(Function):
    """x[key] for ints, slices, integer arrays and boolean masks. Backward scatters the gradient
    back; integer arrays may repeat an index, so they go through scatter_add."""

    def __init__(self, key):
        self.key = key
        self.is_view = _is_basic(key)  # basic indexing returns a view of x, fancy indexing a copy

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.key]

    def backward(self, g):
        gx = get_xp(g).zeros(self.in_shape, dtype=g.dtype)
        parts = self.key if isinstance(self.key, tuple) else (self.key,)
        if _is_basic(self.key) or (len(parts) == 1 and getattr(parts[0], "dtype", None) == bool):
            gx[self.key] = g
        else:
            scatter_add(gx, self.key, g)
        return gx


class Concatenate(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return get_xp(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, g):
        xp = get_xp(g)
        cuts = []
        total = 0
        for n in self.sizes[:-1]:
            total += n
            cuts.append(total)
        return tuple(xp.split(g, cuts, axis=self.axis))


class Stack(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        shapes = {x.shape for x in xs}
        if len(shapes) > 1:
            raise ValueError(f"stack: every input must have the same shape, got {sorted(shapes)}")
        return get_xp(xs[0]).stack(xs, axis=self.axis)

    def backward(self, g):
        xp = get_xp(g)
        return tuple(xp.moveaxis(g, self.axis, 0))


def reshape(x, *shape): return Reshape(_shape_arg(shape))(x)


def unsqueeze(x, axis):
    """A new size-1 axis at `axis` (negative counts from the end of the result, as in NumPy)."""
    shape = list(x.shape)
    shape.insert(axis if axis >= 0 else len(shape) + 1 + axis, 1)
    return Reshape(tuple(shape))(x)


def squeeze(x, axis=None):
    """Drop size-1 axes: all of them, or only `axis` (an int or a tuple), which must have size 1."""
    ndim = len(x.shape)
    axes = [a for a, n in enumerate(x.shape) if n == 1] if axis is None else \
        [a % ndim for a in ((axis,) if isinstance(axis, int) else axis)]
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return Reshape(tuple(n for a, n in enumerate(x.shape) if a not in axes))(x)
def broadcast_to(x, *shape): return BroadcastTo(_shape_arg(shape))(x)


def transpose(x, *axes):
    axes = _shape_arg(axes) if axes else None
    return Transpose(axes)(x)


def getitem(x, key):
    if isinstance(key, tuple):
        key = tuple(as_array(k) for k in key)
    elif isinstance(key, Tensor):
        key = key.data
    elif isinstance(key, list):
        key = x.xp.asarray(key)
    return kernels.variant(GetItem, x)(key)(x)


def concatenate(tensors, axis=0): return Concatenate(axis)(*tensors)
def stack(tensors, axis=0): return Stack(axis)(*tensors)
