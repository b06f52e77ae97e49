"""Grad mode and anomaly mode, each per thread (as in PyTorch).

`no_grad()` builds no graph (inference, EMA updates, evaluation); `enable_grad()` builds one again
inside it; `detect_anomaly()` makes every op check its output, and backward every gradient, for
NaN and inf. The engine (minienc/engine.py) reads both on every op call.
"""
import contextlib
import threading

from . import backend


class _Modes(threading.local):
    """Grad mode and anomaly mode, one pair per thread (as in PyTorch): a `no_grad()` block in an
    evaluation thread never changes what a training thread records. The class attributes are
    the values every new thread starts with."""
    grad_enabled = True
    anomaly = False


_modes = _Modes()


@contextlib.contextmanager
def _set_mode(name, value):
    previous = getattr(_modes, name)
    setattr(_modes, name, value)
    try:
        yield
    finally:
        setattr(_modes, name, previous)


def no_grad():
    """Inside this block ops build no graph (inference, EMA updates, evaluation). Per thread."""
    return _set_mode("grad_enabled", False)


def enable_grad():
    """Build graphs again inside a `no_grad()` block (a probe trained during evaluation)."""
    return _set_mode("grad_enabled", True)


def is_grad_enabled():
    return _modes.grad_enabled


def detect_anomaly():
    """Raise at the first op whose forward output or backward gradient holds NaN or inf.
    Costs a host sync per op, so it is a debugging mode, off by default. Per thread."""
    return _set_mode("anomaly", True)


def _check_finite(fn, array, what):
    if backend.is_floating(array.dtype) and not bool(backend.get_xp(array).isfinite(array).all()):
        raise FloatingPointError(
            f"detect_anomaly: {fn.name} produced NaN or inf in its {what} (shape {tuple(array.shape)})")
