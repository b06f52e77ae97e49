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

from . import backend

_grad_enabled = True
_anomaly_mode = False


@contextlib.contextmanager
def no_grad():
    """Inside this block ops build no graph (inference, EMA updates, evaluation)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


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
        except (ValueError, TypeError, IndexError) as exc:
            if str(exc).startswith(self.name + ":"):
                raise
            shapes = " and ".join(str(tuple(a.shape)) for a in arrays)
            raise type(exc)(f"{self.name}: cannot apply to shapes {shapes}: {exc}") from None
        if _anomaly_mode:
            _check_finite(self, out, "output")
        if _grad_enabled:
            needs = tuple(t.requires_grad for t in tensors)
            if any(needs):
                self.inputs = tensors
                self.needs_grad = needs
                return Tensor._wrap(out, True, self)
        return Tensor._wrap(out, False, None)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def _free(self):
        # Drop the saved arrays and the inputs: the graph below this node is gone for good.
        vars(self).clear()
        self.inputs = None


def _as_tensors(fn, inputs):
    """Turn the inputs of `fn` into tensors on one device; Python numbers become 0-d arrays of
    the first tensor's dtype, so `x * 2.0` stays float32."""
    like = None
    for x in inputs:
        if isinstance(x, Tensor):
            if like is None:
                like = x
            elif x.device != like.device:
                raise RuntimeError(
                    f"{fn.name}: tensors on different devices: {like.device} (shape {like.shape}) "
                    f"and {x.device} (shape {x.shape}); move one with .to(device)")
            elif (x.dtype != like.dtype and backend.is_floating(x.dtype)
                  and backend.is_floating(like.dtype)):
                raise TypeError(
                    f"{fn.name}: dtypes {like.dtype} and {x.dtype} differ; minienc never upcasts "
                    f"silently, cast one with .astype()")
    if like is None:
        like = Tensor(inputs[0])
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            out.append(x)
        elif isinstance(x, (int, float, bool)):
            out.append(Tensor._wrap(like.xp.asarray(x, dtype=like.dtype), False, None))
        else:
            if backend.device_of(x) != like.device:
                raise RuntimeError(
                    f"{fn.name}: an array on {backend.device_of(x)} met a tensor on {like.device}")
            out.append(Tensor._wrap(x, False, None))
    return out


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
        return self.data.shape[0]

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
        return Tensor._wrap(self.data, False, None)

    def item(self):
        """The single value as a Python number (a host sync on the GPU: use it for logging)."""
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a number, got shape {self.shape}")
        return self.data.item() if not backend.is_cupy(self.data) else backend.to_host(self.data).item()

    def numpy(self):
        """Always a host NumPy array (a copy for CuPy tensors)."""
        return backend.to_host(self.data)

    def to(self, device):
        if device == self.device:
            return self
        out = Tensor._wrap(backend.to_device(self.data, device), self.requires_grad, None)
        return out

    def astype(self, dtype):
        return _ops().astype(self, dtype)

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
            grad = grad.data if isinstance(grad, Tensor) else grad
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the output has "
                                 f"shape {self.shape}")
        grads = {id(self): grad}
        for node in self._reverse_topological_order():
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._creator
            if fn is None:
                if node.grad is None:
                    node.grad = g.copy()  # a copy: ops may hand one array to several inputs
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
                        raise ValueError(f"{fn.name}: backward returned a gradient of shape "
                                         f"{ig.shape} for an input of shape {inp.shape}")
                previous = grads.get(id(inp))
                grads[id(inp)] = ig if previous is None else previous + ig
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
    def __add__(self, other): return _ops().add(self, other)
    def __radd__(self, other): return _ops().add(other, self)
    def __sub__(self, other): return _ops().sub(self, other)
    def __rsub__(self, other): return _ops().sub(other, self)
    def __mul__(self, other): return _ops().mul(self, other)
    def __rmul__(self, other): return _ops().mul(other, self)
    def __truediv__(self, other): return _ops().div(self, other)
    def __rtruediv__(self, other): return _ops().div(other, self)
    def __pow__(self, other): return _ops().pow(self, other)
    def __rpow__(self, other): return _ops().pow(other, self)
    def __neg__(self): return _ops().neg(self)
    def __matmul__(self, other): return _ops().matmul(self, other)
    def __rmatmul__(self, other): return _ops().matmul(other, self)
    def __getitem__(self, key): return _ops().getitem(self, key)

    # comparisons give boolean tensors outside the graph (masks, metrics)
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(getattr(self.data, op)(other), False, None)

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    def __eq__(self, other): return self._compare(other, "__eq__")
    def __ne__(self, other): return self._compare(other, "__ne__")
    __hash__ = object.__hash__

    @property
    def T(self): return _ops().transpose(self)
    def transpose(self, *axes): return _ops().transpose(self, *axes)
    def permute(self, *axes): return _ops().transpose(self, *axes)
    def reshape(self, *shape): return _ops().reshape(self, *shape)
    def flatten(self, start_axis=0): return _ops().reshape(self, *self.shape[:start_axis], -1)
    def expand(self, *shape): return _ops().broadcast_to(self, *shape)
    def broadcast_to(self, *shape): return _ops().broadcast_to(self, *shape)
    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return _ops().var(self, axis, keepdims, ddof)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def sqrt(self): return _ops().sqrt(self)
    def abs(self): return _ops().abs(self)
    def tanh(self): return _ops().tanh(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def relu(self): return _ops().relu(self)
    def gelu(self): return _ops().gelu(self)
    def softplus(self): return _ops().softplus(self)
    def clip(self, low=None, high=None): return _ops().clip(self, low, high)
    def softmax(self, axis=-1): return _ops().softmax(self, axis)
    def log_softmax(self, axis=-1): return _ops().log_softmax(self, axis)


_ops_module = None


def _ops():
    global _ops_module
    if _ops_module is None:
        from . import ops
        _ops_module = ops
    return _ops_module


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor. Floating data becomes float32 unless `dtype` says otherwise (so NumPy's
    float64 default never leaks into training); integers and booleans keep their type."""
    if isinstance(data, Tensor):
        data = data.data
    if device is None:
        device = backend.device_of(data) if hasattr(data, "dtype") else backend.get_device()
    backend.check_device(device)
    xp = backend.xp_for(device)
    if hasattr(data, "dtype") and backend.device_of(data) != device:
        data = backend.to_device(data, device)
    if dtype is not None:
        array = xp.asarray(data, dtype=dtype)
    else:
        array = xp.asarray(data)
        if backend.is_floating(array.dtype) and array.dtype != backend.DEFAULT_DTYPE:
            array = array.astype(backend.DEFAULT_DTYPE)
    if array is data and hasattr(data, "dtype"):
        array = array.copy()  # a tensor owns its data: later in-place updates never touch the caller's array
    return Tensor._wrap(array, False, None).requires_grad_(requires_grad) if requires_grad \
        else Tensor._wrap(array, False, None)
