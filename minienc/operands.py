"""How an op's inputs become its operands: tensors on one device, of one floating dtype.

    x * 2.0              a Python or NumPy scalar is weak: it takes x's dtype (float32 stays float32)
    int_tensor + w       an integer or boolean tensor takes the floating operand's dtype, except
    ids @ W (one-hot)    at the positions an op lists in `index_inputs` (class ids, lookup ids,
    x ** int_tensor      conditions), which it uses as they are
    int_tensor * 2.5     with no floating tensor, a float scalar makes the result float32
    x32 + x64            two floating dtypes that differ: an error, never a silent upcast
    cpu + cuda           two devices: an error naming both

NumPy alone would promote the integer cases to float64. Function.__call__ calls `as_operands`
for every op (minienc/engine.py).
"""
from . import backend
from .engine import Tensor, as_tensor, tensor


def as_operands(fn, inputs):
    """The inputs of op `fn` as tensors, by the rules above; a scalar becomes a 0-d tensor of
    the operands' dtype, a list a tensor made by `tensor()`."""
    like = None
    for x in inputs:
        if isinstance(x, Tensor) and (like is None or (like.data.dtype.kind != "f"
                                                       and x.data.dtype.kind == "f")):
            like = x
    if like is None:
        first = inputs[0]
        like = as_tensor(first) if hasattr(first, "shape") else tensor(first)
    dtype = like.data.dtype
    if dtype.kind != "f" and any(_is_float_scalar(x) for x in inputs):
        dtype = backend.numpy.dtype(backend.DEFAULT_DTYPE)
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, backend.SCALAR_TYPES):
            out.append(as_tensor(like.xp.asarray(x, dtype=dtype)))
            continue
        t = x if isinstance(x, Tensor) else as_tensor(x) if hasattr(x, "dtype") else \
            tensor(x, device=like.device)
        if t is not like:
            _check_compatible(fn, like, t, i)
        if t.data.dtype != dtype and dtype.kind == "f" and t.data.dtype.kind in "biu" \
                and i not in fn.index_inputs:
            t = as_tensor(t.data.astype(dtype))
        out.append(t)
    return out


def _is_float_scalar(x):
    return isinstance(x, float) or (isinstance(x, backend.numpy.generic) and x.dtype.kind == "f")


def _check_compatible(fn, like, x, position):
    # same array type means same device: the device lookup runs only when the types differ
    if type(x.data) is not type(like.data) and x.device != like.device:
        raise RuntimeError(
            f"{fn.name}: tensors on different devices: {like.device} (shape {like.shape}) and "
            f"{x.device} (shape {x.shape}); move one with .to(device)")
    if x.data.dtype != like.data.dtype and x.data.dtype.kind == "f" and like.data.dtype.kind == "f" \
            and position not in fn.index_inputs:  # an index input's dtype is the op's to check
        raise TypeError(
            f"{fn.name}: dtypes {like.dtype} and {x.dtype} differ (shapes {like.shape} and {x.shape}); "
            f"the floating operands of an op share one dtype and minienc never upcasts silently: "
            f"cast the {x.dtype} one with .astype('{like.dtype}') (or a whole model with "
            f"model.astype(...))")
