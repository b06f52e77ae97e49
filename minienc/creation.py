"""Creation helpers: zeros, ones, the *_like forms and seeded random draws. float32 unless a dtype
is asked for, on the default device (`set_device`, MINIENC_DEVICE) unless `device` says otherwise."""
from . import backend
from .ops.shape import _shape_arg
from .engine import _made


def _creation_args(dtype, device):
    device = backend.check_device(device) if device is not None else backend.get_device()
    return (dtype if dtype is not None else backend.DEFAULT_DTYPE), device


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    dtype, device = _creation_args(dtype, device)
    return _made(backend.xp_for(device).zeros(_shape_arg(shape), dtype=dtype), requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    dtype, device = _creation_args(dtype, device)
    return _made(backend.xp_for(device).ones(_shape_arg(shape), dtype=dtype), requires_grad)


def zeros_like(x, dtype=None, requires_grad=False):
    dtype = x.dtype if dtype is None else dtype
    return zeros(x.shape, dtype=dtype, device=x.device, requires_grad=requires_grad)


def ones_like(x, dtype=None, requires_grad=False):
    dtype = x.dtype if dtype is None else dtype
    return ones(x.shape, dtype=dtype, device=x.device, requires_grad=requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal draws from the seeded generator of `device` (see `manual_seed`)."""
    dtype, device = _creation_args(dtype, device)
    array = backend.rng(device).standard_normal(_shape_arg(shape), dtype=dtype)
    return _made(array, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform draws in [0, 1) from the seeded generator of `device`."""
    dtype, device = _creation_args(dtype, device)
    return _made(backend.rng(device).random(_shape_arg(shape), dtype=dtype), requires_grad)
