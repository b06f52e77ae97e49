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
never reads a device value. `adam_update` is the step on arrays; minienc/kernels/ has its fast
variants (one kernel on the GPU, no temporaries on the host).
"""
import math

from .. import checks, kernels
from ..backend import get_xp
from .optimizer import Optimizer, check_hyperparameters


def adam_update(w, g, m, v, b1, b2, step_size, eps, l2, decay):
    """One Adam(W) step on the arrays w, m, v in place. The bias corrections are folded into two
    scalars: step_size = lr sqrt(1 - b2^t) / (1 - b1^t) and eps = eps sqrt(1 - b2^t), so
    lr * m_hat / (sqrt(v_hat) + eps) = step_size * m / (sqrt(v) + eps). l2 is Adam's penalty
    (0 for AdamW), decay AdamW's factor 1 - lr * wd (1 for Adam)."""
    if l2 != 0:
        g = g + l2 * w
    if decay != 1:
        w *= decay
    m[...] = b1 * m + (1.0 - b1) * g
    v[...] = b2 * v + (1.0 - b2) * g * g
    w -= step_size * m / (get_xp(w).sqrt(v) + eps)


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
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        state["step"] = t = state["step"] + 1
        root_bc2 = math.sqrt(1.0 - b2 ** t)
        update = kernels.variant(adam_update, p.data)
        update(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], b1, b2,
               step_size=lr * root_bc2 / (1.0 - b1 ** t), eps=eps * root_bc2,
               l2=0.0 if self.decoupled else wd, decay=1.0 - lr * wd if self.decoupled else 1.0)


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p * (1 - lr * wd), then the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
