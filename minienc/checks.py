"""Argument checks shared by the constructors, losses and schedules. Each names its owner and the
argument, so a bad value fails where it was given, with its name, instead of as a
ZeroDivisionError or a NumPy message three calls later:

    checks.positive_int("Linear", "in_features", 0)   ->  ValueError: Linear: in_features must be
                                                           a positive integer, got 0
Every check returns the value (ints as Python ints) so it can be used inline.
"""
import math
import numbers


def is_int(value):
    """An integer, and not a bool (True is an int to Python, never a count or a size here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_count(value):
    """An integer >= 0 (a step, an index), not a bool."""
    return is_int(value) and value >= 0


def is_real(value):
    """A real number (int or float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(owner, name, value):
    if not (is_int(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(owner, name, value):
    if not (is_int(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be an integer >= 0, got {value!r}")
    return int(value)


def finite(owner, name, value):
    """Any finite number (a margin may be negative)."""
    if not (is_real(value) and math.isfinite(value)):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return value


def positive(owner, name, value):
    """A finite number > 0 (a temperature, a learning rate's scale, an eps)."""
    if not (is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return value


MIN_TEMPERATURE = 1e-30   # logits / 1e-30 stay ~1e30: float32 (to 3.4e38) still sums a batch of them


def at_least(owner, name, value, floor, why):
    """A finite number > 0 and >= floor, a scale something is divided by: below the floor
    `why` says what overflows."""
    positive(owner, name, value)
    if value < floor:
        raise ValueError(f"{owner}: {name} must be at least {floor:g}, got {value!r}: {why}")
    return value


def temperature(owner, name, value):
    """A finite number > 0, and at least MIN_TEMPERATURE: a loss or a k-NN divides similarities
    in [-1, 1] by it in float32, and below that the logits, or their sum over a batch, overflow
    to inf and then NaN (1e-46 is not even a float32: it becomes 0, and the division 0 / 0)."""
    return at_least(owner, name, value, MIN_TEMPERATURE,
                    f"logits are similarities / {name} in float32, and overflow below it")


def non_negative(owner, name, value):
    if not (is_real(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return value


def in_range(owner, name, value, low, high, include_low=True, include_high=True):
    """low <= value <= high (either end open when its include_ flag is False)."""
    inside = is_real(value) and ((value >= low if include_low else value > low) and
                                  (value <= high if include_high else value < high))
    if not inside:   # (a value that is not a number, None, is refused here, not by a bare >=)
        interval = f"{'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return value


def span(owner, name, value, low=0.0, high=math.inf):
    """A (min, max) pair of numbers with low < min <= max <= high (a scale or ratio range)."""
    ok = _is_sequence(value) and len(value) == 2 and all(is_real(v) for v in value)
    if not (ok and low < value[0] <= value[1] <= high):
        top = "" if high == math.inf else f" <= {high}"
        raise ValueError(f"{owner}: {name} must be (min, max) with {low} < min <= max{top}, "
                         f"got {value!r}")
    return float(value[0]), float(value[1])


def token_id(owner, name, value, vocab_size):
    """An id of a vocabulary of `vocab_size` tokens: an integer in [0, vocab_size) (an id
    outside it never matches a token, so a pad or mask id there silently does nothing)."""
    if not (is_int(value) and 0 <= value < vocab_size):
        raise ValueError(f"{owner}: {name} must be a token id in [0, {vocab_size}), got {value!r}")
    return int(value)


def sizes(owner, name, value):
    """A tuple or list of positive integers (layer widths, channel counts, a shape), as a tuple:
    a bare number here was a raw "'int' object is not iterable"."""
    if not _is_sequence(value):
        raise ValueError(f"{owner}: {name} must be a tuple or list of positive integers, got {value!r}")
    return tuple(positive_int(owner, name, n) for n in value)


def callable_or_none(owner, name, value):
    """None or something to call (an augmentation, a transform, a mask sampler): anything else
    was taken and failed at the first loss as "'int' object is not callable"."""
    if value is not None and not callable(value):
        raise ValueError(f"{owner}: {name} must be callable (or None), got {value!r}")
    return value


def one_of(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def pair(owner, name, value, minimum=None):
    """(value, value) for an int, else the two ints of a sequence -- how a kernel size, stride,
    padding, image size or grid size is given -- each at least `minimum` when one is given."""
    values = (value, value) if is_int(value) else tuple(value) if _is_sequence(value) else None
    if values is None or len(values) != 2 or not all(is_int(v) for v in values) or (
            minimum is not None and min(values) < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{owner}: {name} must be an integer{bound} or a pair of them, got {value!r}")
    return int(values[0]), int(values[1])


def _is_sequence(value):
    return isinstance(value, (tuple, list))
