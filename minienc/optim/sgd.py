"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

With gradient g and momentum buffer b (zero at the start), as `torch.optim.SGD` (dampening 0):

    g <- g + wd * p                      (weight decay as an L2 penalty)
    b <- momentum * b + g
    d <- g + momentum * b   (Nesterov)   or   d <- b
    p <- p - lr * d

Starting b at zero gives b = g at the first step, the same as PyTorch's "copy g into b".
"""
from ..backend import get_xp
from . import fused
from .optimizer import Optimizer, check_hyperparameters


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
        xp = get_xp(p.data)
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        state["step"] += 1
        g, w = p.grad, p.data
        if momentum != 0 and fused.on_gpu(w):  # the same arithmetic in one kernel (fused.py)
            fused.kernel("sgd_momentum")(g, lr, wd, momentum, float(group["nesterov"]), w,
                                         state["momentum_buffer"])
            return
        work, decayed = self._work(p, 2)
        if wd != 0:
            xp.multiply(w, wd, out=decayed)
            decayed += g
            g = decayed
        if momentum != 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += g
            if group["nesterov"]:
                xp.multiply(buf, momentum, out=work)
                work += g
                g = work
            else:
                g = buf
        xp.multiply(g, lr, out=work)
        w -= work
