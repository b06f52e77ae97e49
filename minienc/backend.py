"""The one place that imports numpy and cupy by name.

Everything else asks this module for an array namespace (`get_xp`), a device name, a random
generator or a scatter-add. CuPy is optional and imported lazily, so a machine without a GPU never
pays for it, and a user who asks for "cuda" without it gets told exactly what to install.
"""
import os

import numpy

DEVICES = ("cpu", "cuda")
DEFAULT_DTYPE = numpy.float32
# Python and NumPy scalars: ops cast them to their tensor's dtype instead of promoting the tensor
SCALAR_TYPES = (int, float, numpy.generic)
_cupy = None
_default_device = None
_generators = {}
_seed = None


def cupy():
    """Import CuPy on first use; a clear error if it is missing or no GPU is visible."""
    global _cupy
    if _cupy is None:
        try:
            import cupy as cp
        except ImportError as exc:
            raise RuntimeError(
                "device 'cuda' needs CuPy: pip install 'minienc[gpu]' (cupy-cuda12x) on a machine "
                f"with an NVIDIA GPU and CUDA 12 ({exc})") from None
        _cupy = cp
    return _cupy


def nccl():
    """cupy.cuda.nccl, CuPy's binding of NVIDIA's NCCL (minienc.distributed's GPU engine); a
    clear error if this CuPy has none."""
    cupy()
    try:
        from cupy.cuda import nccl as module
    except ImportError as exc:
        raise RuntimeError(f"minienc.distributed's NCCL engine needs CuPy built with NCCL "
                           f"(the cupy-cuda12x wheel ships it): {exc}") from None
    if not getattr(module, "available", True):
        raise RuntimeError("minienc.distributed: this CuPy has no NCCL; install a cupy-cuda wheel "
                           "that ships it")
    return module


def cuda_available():
    try:
        return cupy().cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    return device


def xp_for(device):
    """The array module that backs `device`."""
    return cupy() if check_device(device) == "cuda" else numpy


def is_cupy(array):
    return type(array).__module__.startswith("cupy")


def get_xp(array):
    """numpy or cupy, whichever owns `array`: the DeZero-style switch in one helper."""
    return cupy() if is_cupy(array) else numpy


def device_of(array):
    return "cuda" if is_cupy(array) else "cpu"


def to_device(array, device):
    """Move `array` to `device` (a copy only when it must cross)."""
    if device_of(array) == check_device(device):
        return array
    if device == "cuda":
        return cupy().asarray(array)
    return array.get()


def to_host(array):
    """Always a host NumPy array (an explicit device-to-host copy for CuPy)."""
    return array.get() if is_cupy(array) else numpy.asarray(array)


def host_extremes(array):
    """(smallest, largest) of a host array's values, for checks of the data; None for a CuPy
    array (reading them back would be a device sync every step: the checks are the host's) or an
    empty one."""
    if is_cupy(array) or not array.size:
        return None
    return float(array.min()), float(array.max())


def to_host_later(array):
    """Start a copy of `array` to the host without waiting for the device; returns a function
    that gives the host copy, waiting (if at all) only for the work enqueued before this call.
    A NumPy array is copied at once. On CuPy: pinned memory, an asynchronous copy on the current
    stream and an event behind it, so a value can be read a step late at no sync."""
    if not is_cupy(array):
        copy = numpy.array(array)
        return lambda: copy
    gpu = cupy()
    import cupyx
    array = gpu.ascontiguousarray(array)
    host = cupyx.empty_pinned(array.shape, array.dtype)
    stream = gpu.cuda.get_current_stream()
    gpu.cuda.runtime.memcpyAsync(host.ctypes.data, array.data.ptr, array.nbytes,
                                 gpu.cuda.runtime.memcpyDeviceToHost, stream.ptr)
    copied = gpu.cuda.Event(block=False, disable_timing=True)
    copied.record(stream)

    def result(source=array):   # holds the source until the copy is read
        copied.synchronize()
        return host
    return result


def to_host_floats(columns):
    """{name: Python floats} from {name: a list of 0-d device arrays (or numbers)}, every
    device column in one read (stacking promotes float32 to float64 exactly, never down)."""
    host = {k: [float(a) for a in v] for k, v in columns.items() if not hasattr(v[0], "dtype")}
    device = [k for k in columns if k not in host]
    if device:
        xp = get_xp(columns[device[0]][0])
        table = xp.stack([xp.stack([a.reshape(()) for a in columns[k]]) for k in device])
        host.update(zip(device, to_host(table).tolist()))
    return {k: host[k] for k in columns}


def set_device(device):
    """Set the default device for new tensors and modules."""
    global _default_device
    if device == "cuda":
        cupy()
    _default_device = check_device(device)


def get_device():
    global _default_device
    if _default_device is None:
        set_device(os.environ.get("MINIENC_DEVICE", "cpu"))
    return _default_device


def manual_seed(seed):
    """Seed one generator per backend. Weights are drawn on the host (see `host_rng`), so the
    same seed gives the same model on CPU and GPU; device generators drive dropout and masks."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def rng(device="cpu"):
    """The seeded generator of `device` (created on first use from the last `manual_seed`)."""
    gen = _generators.get(device)
    if gen is None:
        seed = _seed if _seed is not None else numpy.random.SeedSequence().entropy % (2**63)
        offset = DEVICES.index(check_device(device))
        if device == "cuda":
            gen = cupy().random.Generator(cupy().random.XORWOW(seed + offset))
        else:
            gen = numpy.random.Generator(numpy.random.PCG64(seed + offset))
        _generators[device] = gen
    return gen


def host_rng():
    return rng("cpu")


def get_rng_state():
    """The host generator's state as a plain dict (for checkpoints)."""
    return host_rng().bit_generator.state


def set_rng_state(state):
    host_rng().bit_generator.state = state


def scatter_add(target, indices, values):
    """target[indices] += values, with repeated indices accumulated (np.add.at / cupy.add.at)."""
    if is_cupy(target):
        cp = cupy()
        if hasattr(cp.add, "at"):
            cp.add.at(target, indices, values)
        else:  # CuPy before 13 has only the older name
            import cupyx
            cupyx.scatter_add(target, indices, values)
    else:
        numpy.add.at(target, indices, values)
    return target


def is_floating(dtype):
    return numpy.issubdtype(numpy.dtype(dtype), numpy.floating)


def dtype(name):
    return numpy.dtype(name)
