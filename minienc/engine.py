"""Tensor, Function and reverse-mode automatic differentiation.

A `Tensor` wraps an array (`data`, NumPy on "cpu" or CuPy on "cuda") and remembers the `Function`
that made it. A `Function` is one differentiable op: `forward(*arrays)` computes the output and
keeps only what backward needs; `backward(grad)` returns one gradient per input. `Tensor.backward`
walks the graph in reverse topological order (iteratively, so deep graphs do not hit Python's
recursion limit), undoes broadcasting in one place (`sum_to`), and frees each node as it goes.

Ownership: an output holds its creator, the creator holds its inputs; nothing points back at the
output, so a finished graph is collected as soon as the user drops the loss.

Versions: every tensor counts the in-place updates of its data made through minienc (optimizer
steps, EMA updates, `copy_`, `+=`). A Function records its inputs' and output's versions when it
is called; if one it saved for backward has changed by the time backward reaches it, backward
refuses (naming the op and the shape) instead of computing a gradient from the new values.
Writing into `.data` directly bypasses the count: call `bump_version()` after it.

Grad mode (`no_grad`) and anomaly mode (`detect_anomaly`) are per thread: minienc/modes.py.
"""
from . import backend
from .modes import (_check_finite, _modes, detect_anomaly, enable_grad,  # noqa: F401 (re-exported)
                    is_grad_enabled, no_grad)


def sum_to(grad, shape):
    """Sum `grad` over the axes that broadcasting expanded, so it has `shape` again (None when
    `grad` has fewer axes than `shape`)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0:
        return None  # fewer axes than the input: not a broadcast the engine can undo
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

    Inputs become operands by minienc/operands.py's rules: integer and boolean inputs take the
    floating inputs' dtype (so `ids @ W` stays float32), except at the positions listed in
    `index_inputs` (class ids, lookup ids, conditions), which the op uses as they are. An op
    whose output is a view of its first input (reshape, transpose, basic indexing) sets
    `is_view`, so the two share one version counter.
    """

    index_inputs = ()
    is_view = False

    @property
    def name(self):
        return type(self).__name__.lower()

    def __call__(self, *inputs):
        tensors = as_operands(self, inputs)
        arrays = [t.data for t in tensors]
        try:
            out = self.forward(*arrays)
        except (IndexError, TypeError, ValueError) as exc:
            if str(exc).startswith(self.name + ":"):
                raise  # the op's own check, which names it already
            raise _named_error(self, exc, arrays) from exc   # chained: the failing line stays
        if _modes.anomaly:
            _check_finite(self, out, "output")
        version = tensors[0]._version if self.is_view else [0]
        if _modes.grad_enabled:
            needs = tuple(t.requires_grad for t in tensors)
            if any(needs):
                self.inputs, self.needs_grad = tensors, needs
                # what backward compares against: the inputs' versions, then the output's
                self.versions = [t._version[0] for t in tensors]
                self.versions.append(version[0])
                return Tensor._wrap(out, True, self, version)
        return Tensor._wrap(out, False, None, version)

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


class Tensor:
    """An array with a gradient. See `minienc.tensor` for the constructor users call.

    `_version` counts the in-place updates of `data` made through minienc (optimizer steps, EMA
    updates, `copy_`, `+=`): a one-element list, shared by a tensor and the views made of it, so
    an op that saved either sees an update through the other."""

    __slots__ = ("data", "grad", "requires_grad", "_creator", "_version", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` defer to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        made = tensor(data, requires_grad, dtype, device)
        self.data, self.grad, self.requires_grad, self._creator = made.data, None, made.requires_grad, None
        self._version = [0]

    @classmethod
    def _wrap(cls, data, requires_grad, creator, version=None):
        t = object.__new__(cls)
        t.data, t.grad, t.requires_grad, t._creator = data, None, requires_grad, creator
        t._version = [0] if version is None else version
        return t

    # ----- backward: the chain rule -------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into the `.grad` of every leaf that requires it.

        First the order: every node after all the nodes that use it (a depth-first walk kept on
        a stack, so graphs deeper than Python's recursion limit work). Then the chain rule along
        it: a node's gradient is complete when the walk reaches it, and its creator's `backward`
        turns it into one gradient per input. The guards (the contract a Function is held to,
        in-place changes since forward, a graph already freed) are the helpers below the class."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:  # everything below this node is ordered: the node can follow it
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            fn = node._creator
            if fn is not None:
                if fn.inputs is None:
                    raise _freed_graph_error(fn)
                for inp in fn.inputs:
                    if inp.requires_grad and id(inp) not in seen:
                        stack.append((inp, False))

        grads = {id(self): _initial_grad(self, grad)}   # d(self)/d(node) so far, by node
        for node in reversed(order):
            grad_out = grads.pop(id(node), None)
            if grad_out is None:  # no path from self to this node carries a gradient
                continue
            fn = node._creator
            if fn is None:  # a leaf; its first gradient is copied, as .grad is updated in place
                if node.grad is None:
                    node.grad = grad_out.copy()
                else:
                    node.grad += grad_out
                continue
            _check_versions(fn, node)
            input_grads = fn.backward(grad_out)   # the chain rule: d(self)/d(input), per input
            for inp, g in zip(fn.inputs, _fit_to_inputs(fn, input_grads)):
                if g is not None:  # a tensor used twice sums the gradients of both uses
                    previous = grads.get(id(inp))
                    grads[id(inp)] = g if previous is None else previous + g
            if not retain_graph:
                fn._free()  # its saved arrays and inputs are needed no more

    # ----- what it is -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    xp = property(lambda self: backend.get_xp(self.data))
    is_leaf = property(lambda self: self._creator is None)
    version = property(lambda self: self._version[0], doc="In-place updates of data so far.")

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

    # ----- changing it in place ---------------------------------------------------------------
    def bump_version(self):
        """Record an in-place update of `data`. minienc's own updates call it; call it after
        writing into `.data` yourself, or ops that saved the old values cannot tell."""
        self._version[0] += 1

    def copy_(self, source):
        """Write `source` (a tensor, array or number, broadcast to this shape) into this tensor's
        data in place, and bump its version. Outside a graph, like every in-place update."""
        self._check_in_place("copy_", source)
        source = as_array(source)
        if hasattr(source, "shape"):
            source = backend.to_device(source, self.device)
        self.data[...] = source
        self.bump_version()
        return self

    def _check_in_place(self, what, other):
        if _modes.grad_enabled and self.requires_grad and self._creator is None:
            raise RuntimeError(
                f"{what}: an in-place update of a leaf tensor that requires grad (shape "
                f"{self.shape}) would not be recorded in the graph; do it inside "
                f"`with minienc.no_grad():` (as an optimizer does), or write x = x + y")

    def _in_place(self, other, method, op, symbol):
        """x += y (and -=, *=, /=): inside a graph, the out-of-place x = op(x, y), since the
        engine records no in-place ops; otherwise x.data is updated in place and x's version
        bumped. A leaf that requires grad cannot be updated in place inside a graph."""
        self._check_in_place(f"x {symbol} y", other)
        if _modes.grad_enabled and (self.requires_grad or getattr(other, "requires_grad", False)):
            return op(self, other)
        getattr(self.data, method)(as_array(other))
        self.bump_version()
        return self

    def __iadd__(self, other): return self._in_place(other, "__iadd__", ops.add, "+=")
    def __isub__(self, other): return self._in_place(other, "__isub__", ops.sub, "-=")
    def __imul__(self, other): return self._in_place(other, "__imul__", ops.mul, "*=")
    def __itruediv__(self, other): return self._in_place(other, "__itruediv__", ops.div, "/=")

    # ----- leaving the graph, leaving the device ----------------------------------------------
    def detach(self):
        """The same data outside the graph (no copy; it shares this tensor's version counter)."""
        return Tensor._wrap(self.data, False, None, self._version)

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


# ----- the guards: what Function.__call__ and Tensor.backward check, beside what they compute ----

def _named_error(fn, exc, arrays):
    """An error raised inside fn.forward, with the op's name and its operands' shapes, as the
    plain built-in type (NumPy's subclasses take other constructor arguments)."""
    kind = next(k for k in (IndexError, TypeError, ValueError) if isinstance(exc, k))
    shapes = " and ".join(str(tuple(a.shape)) for a in arrays)
    return kind(f"{fn.name}: cannot apply to shapes {shapes}: {exc}")


def _initial_grad(output, grad):
    """The gradient backward starts from: ones for a scalar output, else `grad`, which must have
    the output's shape and device (and is cast to its dtype: a float64 seed must not upcast the
    whole pass)."""
    if not output.requires_grad:
        raise RuntimeError(f"backward: this tensor (shape {output.shape}) does not require grad "
                           f"and has no graph; did an input have requires_grad=True?")
    if grad is None:
        if output.data.size != 1:
            raise RuntimeError(f"backward: a gradient can be created implicitly only for a scalar "
                               f"output, got shape {output.shape}; pass grad= of that shape")
        return output.xp.ones_like(output.data)
    grad = as_array(grad)
    if tuple(grad.shape) != output.shape:
        raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the output has "
                         f"shape {output.shape}")
    if backend.device_of(grad) != output.device:
        raise RuntimeError(f"backward: grad is on {backend.device_of(grad)} but the output "
                           f"is on {output.device}")
    return grad if grad.dtype == output.data.dtype else grad.astype(output.data.dtype)


def _freed_graph_error(fn):
    return RuntimeError(f"backward: the graph through {fn.name} was already freed by an earlier "
                        f"backward(); pass retain_graph=True to the first backward to go through "
                        f"it twice")


def _check_versions(fn, output):
    """Refuse to run fn's backward if an array it saved in forward -- an input or its output --
    was changed in place since (an optimizer step, an EMA update, copy_, +=): the gradient would
    be computed from the new values and be silently wrong."""
    for i, (t, seen) in enumerate(zip((*fn.inputs, output), fn.versions)):
        if t._version[0] != seen and _saved_by(fn, t.data):
            what = "its output" if t is output else f"input {i}"
            raise RuntimeError(
                f"backward: {fn.name} saved {what} (shape {t.shape}) for its backward, and it was "
                f"changed in place since (version {seen}, now {t._version[0]}: an optimizer step, "
                f"an EMA update, copy_ or +=); call backward() before the update, or run the "
                f"forward again after it")


def _saved_by(fn, array):
    """Whether an array `fn` keeps (an attribute, or an item of a tuple or list attribute) shares
    memory with `array`: only then can an in-place change of `array` reach fn's backward."""
    xp = backend.get_xp(array)
    for value in vars(fn).values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if type(item) is type(array) and xp.may_share_memory(item, array):
                return True
    return False


def _fit_to_inputs(fn, grads):
    """What fn.backward returned, as one gradient (or None) per input, each given its input's
    shape (the broadcast axes summed away) and held to the contract: one per input, the input's
    dtype, and in anomaly mode no NaN or inf."""
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    if len(grads) != len(fn.inputs):
        raise RuntimeError(f"{fn.name}: backward returned {len(grads)} gradient(s) for "
                           f"{len(fn.inputs)} input(s); return one per input (None for an input "
                           f"without a gradient)")
    fitted = []
    for i, (inp, g) in enumerate(zip(fn.inputs, grads)):
        if g is None or not inp.requires_grad:
            fitted.append(None)
            continue
        if _modes.anomaly:
            _check_finite(fn, g, "gradient (backward)")
        if g.shape != inp.data.shape:
            g = sum_to(g, inp.data.shape)
            if g is None or g.shape != inp.data.shape:
                raise ValueError(f"{fn.name}: backward returned a gradient of shape "
                                 f"{tuple(grads[i].shape)} for input {i} of shape {inp.shape}")
        if g.dtype != inp.data.dtype:  # a leaf's .grad always has the leaf's dtype
            raise TypeError(f"{fn.name}: backward returned a {g.dtype} gradient for input {i} "
                            f"of dtype {inp.dtype} (shape {inp.shape}); minienc never upcasts "
                            f"silently: compute it in the input's dtype")
        fitted.append(g)
    return fitted


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


# ops and operands import this module (Function, Tensor); the circles close here, after both
# are defined
from . import ops  # noqa: E402
from .operands import as_operands  # noqa: E402
