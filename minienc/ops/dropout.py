"""Inverted dropout: zero each element with probability p and scale the survivors by 1/(1-p), so
the expected value is unchanged and evaluation needs no rescaling (Srivastava et al. 2014).

The mask is drawn on the input's own device from `backend.rng(device)`, in the input's dtype,
so nothing crosses between host and GPU and nothing is upcast.
"""
from .. import backend
from ..engine import Function


class DropoutFunction(Function):
    name = "dropout"

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        rng = backend.rng(backend.device_of(x))
        # the scaled keep-mask is saved as one array: backward is a single multiply
        self.mask = rng.random(x.shape, dtype=x.dtype) >= self.p
        self.mask = self.mask.astype(x.dtype)
        self.mask *= 1.0 / (1.0 - self.p)
        return x * self.mask

    def backward(self, g):
        return g * self.mask


def dropout(x, p=0.5, training=True):
    """Identity when not training or p == 0 (no op, no graph node)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return DropoutFunction(p)(x)
