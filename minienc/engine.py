"""Tensor, Function and reverse-mode automatic differentiation.

A `Tensor` wraps an array (`data`, NumPy on "cpu" or CuPy on "cuda") and remembers the `Function`
that made it. A `Function` is one differentiable op: `forward(*arrays)` computes the output and
keeps only what backward needs; `backward(grad)` returns one gradient per input. `Tensor.backward`
walks the graph in reverse topological order (iteratively, so deep graphs do not hit Python's
recursion limit), undoes broadcasting in one place (`sum_to`), and frees each node as it goes.

Ownership: an output holds its creator, the creator holds its inputs; nothing points back at the
output, so a finished graph is collected as soon as the user drops the loss.
"""
import contextlib
import sys

from . import backend

_grad_enabled = True
_anomaly_mode = False


@contextlib.contextmanager
def _grad_mode(enabled):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, enabled
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Inside this block ops build no graph (inference, EMA updates, evaluation)."""
    return _grad_mode(False)


def enable_grad():
    """Build graphs again inside a `no_grad()` block (a probe trained during evaluation)."""
    return _grad_mode(True)


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Raise at the first op whose forward output or backward gradient holds NaN or inf.
    Costs a host sync per op, so it is a debugging mode, off by default."""
    global _anomaly_mode
    previous, _anomaly_mode = _anomaly_mode, True
    try:
        yield
    finally:
        _anomaly_mode = previous


def _check_finite(fn, array, what):
    if backend.is_floating(array.dtype) and not bool(backend.get_xp(array).isfinite(array).all()):
        raise FloatingPointError(
            f"detect_anomaly: {fn.name} produced NaN or inf in its {what} (shape {tuple(array.shape)})")


def _owned(array):
    """Whether nothing but the caller's variable can see `array`'s memory: it owns its buffer (it
    is no view) and no other reference to it exists -- not another input's gradient (Add hands
    one array to both inputs), not an op's saved state (retain_graph), not the caller's seed.
    Such an array can become a leaf's .grad as it is; anything else is copied first, because a
    .grad is later updated in place (accumulation, clipping). The count is CPython's, compared
    with that of an array held by one local variable (measured once, below)."""
    return array.base is None and sys.getrefcount(array) <= _SOLE_OWNER


def _sole_owner_count():
    probe = backend.numpy.empty(0)  # held by this one variable, as `g` is in Tensor.backward
    return _refcount(probe)


def _refcount(array):
    return sys.getrefcount(array)


_SOLE_OWNER = _sole_owner_count()


def sum_to(grad, shape):
    """Sum `grad` over the axes that broadcasting expanded, so it has `shape` again."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"cannot sum a gradient of shape {grad.shape} to shape {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if lead:
        grad = grad.reshape(grad.shape[lead:])
    return grad


class Function:
    """Base class of every differentiable op. Subclass it with `forward(self, *arrays)` and
    `backward(self, grad)`, then call an instance on tensors: `Square()(x)`.

    `forward` gets raw arrays and returns one array; save on `self` what backward needs.
    `backward` gets the output gradient and returns one gradient (or None) per input, each with
    the input's shape or a shape that broadcasts to the output (the engine sums it back).
    `self.needs_grad[i]` tells whether input i wants a gradient, so work can be skipped.
    """

    @property
    def name(self):
        return type(self).__name__.lower()

    def __call__(self, *inputs):
        tensors = _as_tensors(self, inputs)
        arrays = [t.data for t in tensors]
        try:
            out = self.forward(*arrays)
        except (IndexError, TypeError, ValueError) as exc:
            if str(exc).startswith(self.name + ":"):
                raise
            # re-raise as the plain built-in type: NumPy's subclasses take other constructor arguments
            kind = next(k for k in (IndexError, TypeError, ValueError) if isinstance(exc, k))
            shapes = " and ".join(str(tuple(a.shape)) for a in arrays)
            raise kind(f"{self.name}: cannot apply to shapes {shapes}: {exc}") from None
        if _anomaly_mode:
            _check_finite(self, out, "output")
        if _grad_enabled:
            needs = tuple(t.requires_grad for t in tensors)
            if any(needs):
                self.inputs = tensors
                self.needs_grad = needs
                return Tensor._wrap(out, True, self)
        return as_tensor(out)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def _free(self):
        # Drop the saved arrays and the inputs: the graph below this node is gone for good.
        vars(self).clear()
        self.inputs = None


class ToDevice(Function):
    """A differentiable copy across devices (what `Tensor.to` uses for a result of ops)."""

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, g):
        return backend.to_device(g, self.source)


def _as_tensors(fn, inputs):
    """Turn the inputs of `fn` into tensors on one device. Python and NumPy scalars are weak: they
    take the dtype of the first floating tensor, so `x * 2.0` stays float32 and `where(mask, x, 1.5)`
    is not cast to the mask's bool. Arrays and tensors are strong: two floating dtypes that differ
    are an error, never a silent upcast."""
    like = None
    for x in inputs:
        if isinstance(x, Tensor) and (like is None or (like.data.dtype.kind != "f"
                                                       and x.data.dtype.kind == "f")):
            like = x
    if like is None:
        first = inputs[0]
        like = as_tensor(first) if hasattr(first, "shape") else tensor(first)
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            t = x
        elif isinstance(x, backend.SCALAR_TYPES):
            dtype = like.data.dtype
            if dtype.kind != "f" and (isinstance(x, float) or getattr(x, "dtype", dtype).kind == "f"):
                dtype = backend.DEFAULT_DTYPE  # a float scalar must not be truncated to an int or bool
            out.append(as_tensor(like.xp.asarray(x, dtype=dtype)))
            continue
        else:
            t = as_tensor(x)
        if t is not like:
            _check_compatible(fn, like, t)
        out.append(t)
    return out


def _check_compatible(fn, like, x):
    # same array type means same device: the device lookup runs only when the types differ
    if type(x.data) is not type(like.data) and x.device != like.device:
        raise RuntimeError(
            f"{fn.name}: tensors on different devices: {like.device} (shape {like.shape}) and "
            f"{x.device} (shape {x.shape}); move one with .to(device)")
    if x.data.dtype != like.data.dtype and x.data.dtype.kind == "f" and like.data.dtype.kind == "f":
        raise TypeError(
            f"{fn.name}: dtypes {like.dtype} and {x.dtype} differ (shapes {like.shape} and {x.shape}); "
            f"minienc never upcasts silently, cast one with .astype()")


class Tensor:
    """An array with a gradient. See `minienc.tensor` for the constructor users call."""

    __slots__ = ("data", "grad", "requires_grad", "_creator", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` defer to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        made = tensor(data, requires_grad, dtype, device)
        self.data, self.grad, self.requires_grad, self._creator = made.data, None, made.requires_grad, None

    @classmethod
    def _wrap(cls, data, requires_grad, creator):
        t = object.__new__(cls)
        t.data, t.grad, t.requires_grad, t._creator = data, None, requires_grad, creator
        return t

    # ----- what it is -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    xp = property(lambda self: backend.get_xp(self.data))
    is_leaf = property(lambda self: self._creator is None)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __bool__(self):
        # NumPy's rule: one element converts (a host sync on the GPU), more is ambiguous and raises
        return bool(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({backend.to_host(self.data)!r}, device={self.device!r}{grad})"

    def requires_grad_(self, flag=True):
        if flag and not backend.is_floating(self.dtype):
            raise TypeError(f"tensor: only floating-point tensors can require gradients, "
                            f"got dtype {self.dtype} (shape {self.shape})")
        self.requires_grad = flag
        return self

    # ----- leaving the graph, leaving the device ----------------------------------------------
    def detach(self):
        return as_tensor(self.data)

    def item(self):
        """The single value as a Python number (a host sync on the GPU: use it for logging)."""
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a number, got shape {self.shape}")
        return self.data.item() if not backend.is_cupy(self.data) else backend.to_host(self.data).item()

    def numpy(self):
        """Always a host NumPy array (a copy for CuPy tensors)."""
        return backend.to_host(self.data)

    def to(self, device):
        """This tensor on `device`. A leaf moves as a leaf (a weight made with requires_grad=True
        and then sent to the GPU still collects its own .grad); a result of ops moves through a
        differentiable copy, so gradients flow back to the device it came from."""
        if device == self.device:
            return self
        if self._creator is None:
            return Tensor._wrap(backend.to_device(self.data, device), self.requires_grad, None)
        return ToDevice(device)(self)

    def astype(self, dtype):
        return ops.astype(self, dtype)

    def zero_grad(self):
        self.grad = None

    # ----- backward ---------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into the `.grad` of every leaf that requires it."""
        if not self.requires_grad:
            raise RuntimeError(f"backward: this tensor (shape {self.shape}) does not require grad "
                               f"and has no graph; did an input have requires_grad=True?")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: a gradient can be created implicitly only for a scalar "
                                   f"output, got shape {self.shape}; pass grad= of that shape")
            grad = self.xp.ones_like(self.data)
        else:
            grad = as_array(grad)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the output has "
                                 f"shape {self.shape}")
            if backend.device_of(grad) != self.device:
                raise RuntimeError(f"backward: grad is on {backend.device_of(grad)} but the output "
                                   f"is on {self.device}")
            if grad.dtype != self.data.dtype:
                grad = grad.astype(self.data.dtype)  # a float64 seed must not upcast the whole pass
        grads = {id(self): grad}
        for node in self._reverse_topological_order():
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._creator
            if fn is None:
                if node.grad is None:
                    node.grad = g if _owned(g) else g.copy()
                else:
                    node.grad += g
                continue
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if _anomaly_mode:
                for ig in input_grads:
                    if ig is not None:
                        _check_finite(fn, ig, "gradient (backward)")
            for inp, ig in zip(fn.inputs, input_grads):
                if ig is None or not inp.requires_grad:
                    continue
                if ig.shape != inp.data.shape:
                    ig = sum_to(ig, inp.data.shape)
                    if ig.shape != inp.data.shape:
                        position = next(i for i, t in enumerate(fn.inputs) if t is inp)
                        raise ValueError(f"{fn.name}: backward returned a gradient of shape "
                                         f"{tuple(ig.shape)} for input {position} of shape {inp.shape}")
                previous = grads.get(id(inp))
                grads[id(inp)] = ig if previous is None else previous + ig
            g = ig = previous = input_grads = None  # only `grads` holds them now (see _owned)
            if not retain_graph:
                fn._free()

    def _reverse_topological_order(self):
        """Nodes that need a gradient, each after every node that uses it (iterative DFS)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            fn = node._creator
            if fn is not None:
                if fn.inputs is None:
                    raise RuntimeError(
                        f"backward: the graph through {fn.name} was already freed by an earlier "
                        f"backward(); pass retain_graph=True to the first backward to go through it twice")
                for inp in fn.inputs:
                    if inp.requires_grad and id(inp) not in seen:
                        stack.append((inp, False))
        order.reverse()
        return order

    # ----- operators: defined in minienc.ops, bound here --------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __neg__(self): return ops.neg(self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, key): return ops.getitem(self, key)

    # comparisons give boolean tensors outside the graph (masks, metrics)
    def _compare(self, other, op):
        return as_tensor(getattr(self.data, op)(as_array(other)))

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    def __eq__(self, other): return self._compare(other, "__eq__")
    def __ne__(self, other): return self._compare(other, "__ne__")
    __hash__ = object.__hash__

    @property
    def T(self): return ops.transpose(self)
    def transpose(self, *axes): return ops.transpose(self, *axes)
    def permute(self, *axes): return ops.transpose(self, *axes)
    def reshape(self, *shape): return ops.reshape(self, *shape)
    def flatten(self, start_axis=0): return ops.reshape(self, *self.shape[:start_axis], -1)
    def unsqueeze(self, axis): return ops.unsqueeze(self, axis)
    def squeeze(self, axis=None): return ops.squeeze(self, axis)
    def expand(self, *shape): return ops.broadcast_to(self, *shape)
    def broadcast_to(self, *shape): return ops.broadcast_to(self, *shape)
    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return ops.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return ops.var(self, axis, keepdims, ddof)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs(self)
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def gelu(self): return ops.gelu(self)
    def softplus(self): return ops.softplus(self)
    def clip(self, low=None, high=None): return ops.clip(self, low, high)
    def softmax(self, axis=-1): return ops.softmax(self, axis)
    def log_softmax(self, axis=-1): return ops.log_softmax(self, axis)


def as_tensor(array):
    """A tensor over `array` itself (no copy), outside any graph: how library code hands a raw
    array (a batch, a mask, a buffer) to the ops. `tensor()` is the copying constructor users call."""
    return Tensor._wrap(array, False, None)


def as_array(x):
    """The raw array under `x` if it is a tensor, else `x` as it is."""
    return x.data if isinstance(x, Tensor) else x


def _made(array, requires_grad):
    return as_tensor(array).requires_grad_(requires_grad) if requires_grad else as_tensor(array)


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor (always a copy of `data`). Floating data becomes float32 unless `dtype` says
    otherwise (so NumPy's float64 default never leaks into training); integers and booleans keep
    their type. Without `device`, a CuPy array stays on the GPU and anything else goes to the
    default device (`set_device`, MINIENC_DEVICE)."""
    if isinstance(data, Tensor):
        data = data.data
    if device is None:
        device = "cuda" if backend.is_cupy(data) else backend.get_device()
    xp = backend.xp_for(device)
    if hasattr(data, "dtype") and backend.device_of(data) != device:
        data = backend.to_device(data, device)
    if dtype is not None:
        array = xp.asarray(data, dtype=dtype)
    else:
        array = xp.asarray(data)
        if array.dtype.kind == "f" and array.dtype != backend.DEFAULT_DTYPE:
            array = array.astype(backend.DEFAULT_DTYPE)
    if array is data:
        array = array.copy()  # a tensor owns its data: later in-place updates never touch the caller's array
    return _made(array, requires_grad)


# ops imports this module (Function, Tensor); the circle closes here, after both are defined
from . import ops  # noqa: E402
