"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017), as SimCLR trains with it.

This follows SimCLR's `LARSOptimizer` with classic momentum (google-research/simclr,
lars_optimizer.py). Per parameter, with momentum buffer v (zero at the start):

    g     <- g + wd * p                                     (L2 decay, unless excluded)
    trust <- eta * ||p|| / ||g||   if ||p|| > 0 and ||g|| > 0, else 1   (unless excluded)
    v     <- momentum * v + lr * trust * g
    p     <- p - v                    (Nesterov: p <- p - (momentum * v + lr * trust * g))

SimCLR excludes batch-norm parameters and biases from both the decay and the trust ratio (by
variable name); here `exclude_bias_and_norm=True` excludes every parameter with ndim <= 1, which
in minienc are exactly the biases and the norm scales and shifts. Note that the learning rate sits
inside the momentum buffer ("classic" momentum), as in SimCLR.

The norms and the trust ratio stay on the device as 0-d arrays: no value is read back to the host.
"""
from .. import checks
from ..backend import get_xp
from .optimizer import Optimizer, check_hyperparameters


def _norm(xp, a):
    flat = a.reshape(-1)
    return xp.sqrt(xp.dot(flat, flat))


class LARS(Optimizer):
    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, trust_coefficient=0.001,
                 nesterov=False, exclude_bias_and_norm=True):
        check_hyperparameters("LARS", lr, weight_decay, momentum=(momentum, 0.0, 1.0))
        checks.positive("LARS", "trust_coefficient", trust_coefficient)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, nesterov=nesterov,
                                      exclude_bias_and_norm=exclude_bias_and_norm))

    def _init_state(self, p, state):
        state["momentum_buffer"] = get_xp(p.data).zeros_like(p.data)

    def _update(self, p, group, state):
        xp = get_xp(p.data)
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        state["step"] += 1
        g, w, v = p.grad, p.data, state["momentum_buffer"]
        scaled_lr = lr
        if not (group["exclude_bias_and_norm"] and p.ndim <= 1):
            if wd != 0:
                g = g + wd * w
            w_norm, g_norm = _norm(xp, w), _norm(xp, g)
            usable = (w_norm > 0) & (g_norm > 0)
            # where() picks 1 for zero norms; the safe denominator keeps 0/0 from warning
            ratio = group["trust_coefficient"] * w_norm / xp.where(usable, g_norm, 1.0)
            scaled_lr = xp.where(usable, ratio, 1.0).astype(w.dtype) * lr
        v[...] = momentum * v + scaled_lr * g
        w -= (momentum * v + scaled_lr * g) if group["nesterov"] else v
