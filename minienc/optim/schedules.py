"""Schedules: a value as a pure function of the step, so a checkpoint only needs the step.

    lr = WarmupCosine(base=1e-3, total_steps=10_000, warmup_steps=500)   # lr(step)
    wd = Cosine(0.04, 0.4, total_steps=10_000)                          # DINO/I-JEPA weight decay
    m  = Cosine(0.996, 1.0, total_steps=10_000)                         # BYOL/JEPA EMA momentum

Cosine from a to b over T steps:  b + (a - b) * (1 + cos(pi * t / T)) / 2,  so f(0) = a, f(T) = b.
Linear warmup from `start` to `base` over W steps: start + (base - start) * t / W (DINO and MAE
start at 0), then a cosine from `base` to `final` over the remaining T - W steps. Steps before 0
count as step 0 and steps past T stay at the final value. Values are Python floats (host
arithmetic; nothing touches the device).
"""
import math

from .. import checks


def _check(name, total_steps, warmup_steps=0, **values):
    """total_steps a positive int, warmup_steps an int in [0, total_steps], `values` numbers."""
    checks.positive_int(name, "total_steps", total_steps)
    checks.non_negative_int(name, "warmup_steps", warmup_steps)
    if warmup_steps > total_steps:
        raise ValueError(f"{name}: warmup_steps must be in [0, total_steps={total_steps}], "
                         f"got {warmup_steps}")
    for key, value in values.items():
        checks.finite(name, key, value)


def cosine(step, start, end, total_steps):
    progress = min(max(step, 0), total_steps) / total_steps
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """A callable step -> float."""

    def __call__(self, step):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    def __init__(self, value):
        _check("Constant", 1, value=value)
        self.value = value

    def __call__(self, step):
        return float(self.value)


class LinearSchedule(Schedule):
    """From `start` to `end` linearly over `total_steps` (I-JEPA's EMA momentum), then `end`."""

    def __init__(self, start, end, total_steps):
        _check("LinearSchedule", total_steps, start=start, end=end)
        self.start, self.end, self.total_steps = start, end, total_steps

    def __call__(self, step):
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        return float(self.start + (self.end - self.start) * progress)


class Cosine(Schedule):
    """From `start` to `end` along half a cosine over `total_steps`, then `end`."""

    def __init__(self, start, end, total_steps):
        _check("Cosine", total_steps, start=start, end=end)
        self.start, self.end, self.total_steps = start, end, total_steps

    def __call__(self, step):
        return float(cosine(step, self.start, self.end, self.total_steps))


class WarmupCosine(Schedule):
    """Linear warmup from `start` to `base` over `warmup_steps`, then cosine to `final` at
    `total_steps` (the learning-rate schedule of SimCLR, MAE, DINO and I-JEPA)."""

    def __init__(self, base, total_steps, warmup_steps=0, final=0.0, start=0.0):
        _check("WarmupCosine", total_steps, warmup_steps, base=base, final=final, start=start)
        self.base, self.total_steps, self.warmup_steps = base, total_steps, warmup_steps
        self.final, self.start = final, start

    def __call__(self, step):
        step = max(step, 0)   # before the first step is the first step, as in every schedule here
        if step < self.warmup_steps:
            return float(self.start + (self.base - self.start) * step / self.warmup_steps)
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return float(self.base)
        return float(cosine(step - self.warmup_steps, self.base, self.final, decay_steps))
