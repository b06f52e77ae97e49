"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019).

With gradient g, step t (from 1), moments m and v (zero at the start):

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

Adam's `weight_decay` is an L2 penalty added to the gradient (g <- g + wd * p) before the moments,
so it is rescaled by the adaptive denominator. AdamW decouples it: p <- p * (1 - lr * wd) before the
Adam step, which is what vision transformers (MAE, I-JEPA) train with. Both match PyTorch's
`torch.optim.Adam` / `AdamW` step for step.

The bias corrections are Python floats computed from the step count kept on the host, so a step
never reads a device value. All arithmetic runs in place on the parameter's dtype.
"""
import math

from .. import checks
from ..backend import get_xp
from . import fused
from .optimizer import Optimizer, check_hyperparameters


class Adam(Optimizer):
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        check_hyperparameters(name, lr, weight_decay, beta1=(betas[0], 0.0, 1.0),
                              beta2=(betas[1], 0.0, 1.0))
        checks.positive(name, "eps", eps)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _init_state(self, p, state):
        xp = get_xp(p.data)
        state["exp_avg"] = xp.zeros_like(p.data)
        state["exp_avg_sq"] = xp.zeros_like(p.data)

    def _update(self, p, group, state):
        xp = get_xp(p.data)
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        state["step"] = t = state["step"] + 1
        m, v, g, w = state["exp_avg"], state["exp_avg_sq"], p.grad, p.data
        # lr * m_hat / (sqrt(v_hat) + eps), with the corrections folded into two host scalars:
        # = (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2))
        root_bc2 = math.sqrt(1.0 - b2 ** t)
        step_size = lr * root_bc2 / (1.0 - b1 ** t)
        if fused.on_gpu(w):  # the same arithmetic in one kernel (see fused.py)
            decay = 1.0 - lr * wd if self.decoupled else 1.0
            l2 = 0.0 if self.decoupled else wd
            fused.kernel("adam")(g, l2, decay, b1, b2, step_size, eps * root_bc2, w, m, v)
            return
        work, decayed = self._work(p, 2)
        if wd != 0:
            if self.decoupled:
                w *= 1.0 - lr * wd
            else:
                xp.multiply(w, wd, out=decayed)
                decayed += g
                g = decayed
        m *= b1                                  # m <- b1 m + (1 - b1) g
        xp.multiply(g, 1.0 - b1, out=work)
        m += work
        v *= b2                                  # v <- b2 v + (1 - b2) g^2
        xp.multiply(g, g, out=work)
        work *= 1.0 - b2
        v += work
        xp.sqrt(v, out=work)
        work += eps * root_bc2
        xp.divide(m, work, out=work)
        work *= step_size
        w -= work


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p * (1 - lr * wd), then the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
