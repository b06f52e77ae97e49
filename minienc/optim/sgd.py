"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

With gradient g and momentum buffer b (zero at the start), as `torch.optim.SGD` (dampening 0):

    g <- g + wd * p                      (weight decay as an L2 penalty)
    b <- momentum * b + g
    d <- g + momentum * b   (Nesterov)   or   d <- b
    p <- p - lr * d

Starting b at zero gives b = g at the first step, the same as PyTorch's "copy g into b".
`sgd_update` is the step on arrays; minienc/kernels/ has its fast variants.
"""
from .. import kernels
from ..backend import get_xp
from .optimizer import Optimizer, check_hyperparameters


def sgd_update(w, g, buf, lr, weight_decay, momentum, nesterov):
    """One SGD step on w (and the momentum buffer buf, None without momentum) in place."""
    if weight_decay != 0:
        g = g + weight_decay * w
    if momentum != 0:
        buf[...] = momentum * buf + g
        g = (g + momentum * buf) if nesterov else buf
    w -= lr * g


class SGD(Optimizer):
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        check_hyperparameters("SGD", lr, weight_decay, momentum=(momentum, 0.0, 1.0))
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _init_state(self, p, state):
        if self.defaults["momentum"] != 0 or any(g["momentum"] != 0 for g in self.param_groups):
            state["momentum_buffer"] = get_xp(p.data).zeros_like(p.data)

    def _update(self, p, group, state):
        state["step"] += 1
        update = kernels.variant(sgd_update, p.data)
        update(p.data, p.grad, state.get("momentum_buffer") if group["momentum"] != 0 else None,
               group["lr"], group["weight_decay"], group["momentum"], group["nesterov"])
