"""One-kernel updates for CuPy arrays: Adam/AdamW, SGD with momentum, and the EMA.

On a GPU a small model's step is bound by kernel launches, not arithmetic: the NumPy-style Adam
update is a dozen elementwise kernels per parameter. These CuPy ElementwiseKernels do the same
arithmetic -- the formulas at the top of adam.py, sgd.py and ema.py, in that order -- in one pass
over each parameter. The NumPy code paths stay the readable reference; the tests check both
against the same closed-form updates. Kernels are compiled on first use.
"""
from .. import backend, kernels

_SOURCES = {
    # in: g and host scalars; in-out: p, m, v (each element read, then written, independently)
    "adam": ("T g, T l2, T decay, T beta1, T beta2, T step_size, T eps_root", "T p, T m, T v", """
        T grad = g + l2 * p;              // Adam: L2 penalty through the moments (0 for AdamW)
        p = p * decay;                    // AdamW: decoupled decay, 1 - lr * wd (1 for Adam)
        m = beta1 * m + (1 - beta1) * grad;
        v = beta2 * v + (1 - beta2) * grad * grad;
        p = p - step_size * m / (sqrt(v) + eps_root);
        """),
    "sgd_momentum": ("T g, T lr, T wd, T momentum, T nesterov", "T p, T buf", """
        T d = g + wd * p;
        buf = momentum * buf + d;
        p = p - lr * (nesterov != 0 ? d + momentum * buf : buf);
        """),
    "ema": ("T online, T m", "T target", """
        target = m * target + (1 - m) * online;
        """),
}


def kernel(name):
    """The compiled ElementwiseKernel `name` (compiled and cached by minienc/kernels.py)."""
    return kernels.elementwise(name, _SOURCES)


def on_gpu(array):
    return backend.is_cupy(array)
