"""Exponential moving average of a module's parameters: the target networks of BYOL, MoCo and JEPA.

    target <- m * target + (1 - m) * online        (in place, no graph, on the device)

m = 1 leaves the target unchanged; m = 0 copies the online network. The momentum usually follows a
schedule from 0.996 towards 1.0 (`schedules.Cosine(0.996, 1.0, total_steps)`).
"""
import copy

from .. import checks, kernels
from ..engine import Tensor, as_array, no_grad


def ema_step(target, online, momentum):
    """target <- momentum * target + (1 - momentum) * online, on arrays, in place."""
    target[...] = momentum * target + (1.0 - momentum) * online


def _pairs(target, online, include_buffers):
    """(target name, target, online name, online array) per parameter (the target a Parameter,
    whose version the update bumps) and, with include_buffers, per buffer (plain arrays)."""
    t_params, o_params = list(target.named_parameters()), list(online.named_parameters())
    pairs = [(tn, t, on, o.data) for (tn, t), (on, o) in zip(t_params, o_params)]
    if len(t_params) != len(o_params):
        raise ValueError(f"EMA: the target has {len(t_params)} parameters, the online module "
                         f"{len(o_params)}")
    if include_buffers:
        t_buf, o_buf = list(target.named_buffers()), list(online.named_buffers())
        if len(t_buf) != len(o_buf):
            raise ValueError(f"EMA: the target has {len(t_buf)} buffers, the online module "
                             f"{len(o_buf)}")
        pairs += [(tn, t, on, o) for (tn, t), (on, o) in zip(t_buf, o_buf)]
    for tn, t, on, o in pairs:
        if tn != on or t.shape != o.shape:
            raise ValueError(f"EMA: target {tn} {tuple(t.shape)} does not match online {on} "
                             f"{tuple(o.shape)}")
    return pairs


class EMA:
    """Keeps `target` an exponential moving average of `online`.

    ema = EMA(online)                 # target = a frozen deep copy of online
    ema.update(momentum)              # after each optimizer step
    ema.target(x)                     # use the averaged network
    """

    def __init__(self, online, target=None, momentum=0.996, include_buffers=False):
        if target is None:
            target = copy.deepcopy(online)
            for p in target.parameters():
                p.requires_grad = False  # the target learns only through the average
                p.grad = None
        checks.in_range("EMA", "momentum", momentum, 0.0, 1.0)
        self.online, self.target, self.momentum = online, target, momentum
        self.include_buffers = include_buffers
        _pairs(target, online, include_buffers)  # refuse mismatched modules now, not mid-run

    def update(self, momentum=None):
        """target <- m * target + (1 - m) * online, for every parameter (and float buffer)."""
        m = float(checks.in_range("EMA", "momentum", self.momentum if momentum is None else momentum,
                                  0.0, 1.0))
        with no_grad():
            # re-read the arrays each time: Module.to() or load_state_dict() may have replaced them
            for (_, target, _, o) in _pairs(self.target, self.online, self.include_buffers):
                t = as_array(target)
                if t.dtype.kind == "f":  # integer buffers (counters) are not averaged
                    kernels.variant(ema_step, t)(t, o, m)
                if isinstance(target, Tensor):
                    target.bump_version()


def ema_update(target, online, momentum):
    """One EMA step on two modules with the same parameter names and shapes."""
    EMA(online, target=target).update(momentum)
