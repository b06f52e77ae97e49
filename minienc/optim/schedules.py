"""Schedules: a value as a pure function of the step, so a checkpoint only needs the step.

    lr = WarmupCosine(base=1e-3, total_steps=10_000, warmup_steps=500)   # lr(step)
    wd = Cosine(0.04, 0.4, total_steps=10_000)                          # DINO/I-JEPA weight decay
    m  = Cosine(0.996, 1.0, total_steps=10_000)                         # BYOL/JEPA EMA momentum

Cosine from a to b over T steps:  b + (a - b) * (1 + cos(pi * t / T)) / 2,  so f(0) = a, f(T) = b.
Linear warmup from `start` to `base` over W steps: start + (base - start) * t / W (DINO and MAE
start at 0), then a cosine from `base` to `final` over the remaining T - W steps. Steps past T
stay at the final value. Values are Python floats (host arithmetic; nothing touches the device).
"""
import math


def _check(name, total_steps, warmup_steps=0):
    if total_steps <= 0:
        raise ValueError(f"{name}: total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"{name}: warmup_steps must be in [0, total_steps={total_steps}], "
                         f"got {warmup_steps}")


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
        self.value = value

    def __call__(self, step):
        return float(self.value)


class LinearSchedule(Schedule):
    """From `start` to `end` linearly over `total_steps` (I-JEPA's EMA momentum), then `end`."""

    def __init__(self, start, end, total_steps):
        _check("LinearSchedule", total_steps)
        self.start, self.end, self.total_steps = start, end, total_steps

    def __call__(self, step):
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        return float(self.start + (self.end - self.start) * progress)


class Cosine(Schedule):
    """From `start` to `end` along half a cosine over `total_steps`, then `end`."""

    def __init__(self, start, end, total_steps):
        _check("Cosine", total_steps)
        self.start, self.end, self.total_steps = start, end, total_steps

    def __call__(self, step):
        return float(cosine(step, self.start, self.end, self.total_steps))


class WarmupCosine(Schedule):
    """Linear warmup from `start` to `base` over `warmup_steps`, then cosine to `final` at
    `total_steps` (the learning-rate schedule of SimCLR, MAE, DINO and I-JEPA)."""

    def __init__(self, base, total_steps, warmup_steps=0, final=0.0, start=0.0):
        _check("WarmupCosine", total_steps, warmup_steps)
        self.base, self.total_steps, self.warmup_steps = base, total_steps, warmup_steps
        self.final, self.start = final, start

    def __call__(self, step):
        if step < self.warmup_steps:
            return float(self.start + (self.base - self.start) * max(step, 0) / self.warmup_steps)
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return float(self.base)
        return float(cosine(step - self.warmup_steps, self.base, self.final, decay_steps))
