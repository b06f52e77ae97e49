"""Corruptions at a chosen strength, for robustness curves: how a frozen encoder's embeddings and
probe accuracy change when the test images are damaged in ways that keep the digit.

    corrupt = corruption("noise", 0.3)        # an Augmentation: corrupt(images, rng=seed)
    curve = [probe_accuracy(corruption(kind, s)(x_test, rng=0)) for s in STRENGTHS[kind]]

kinds and what their strength means (strength 0 leaves every image as it is):
    noise     x + s eps, eps ~ N(0, I), clipped to [0, 1]          (GaussianNoise)
    mask      exactly round(s D) values of each image set to 0      (MaskingNoise)
    shift     the image moved by s whole pixels up, down, left or right (one direction per
              image, drawn at random), zeros moving in
    contrast  mean + (1 - s)(x - mean): s = 0.5 halves the contrast around each image's mean
    stroke    s > 0: thicker strokes, s rounds of a grey-level dilation (the maximum over each
              pixel and its 4 neighbours); s < 0: thinner ones, |s| rounds of erosion (the minimum)

The first two are the denoising autoencoder's own corruptions (minienc/data/augment.py); the last
three are the low-level changes a "semantic" representation should shrug off.
"""
import math

from .. import checks
from .augment import Augmentation, GaussianNoise, MaskingNoise, padded_windows

KINDS = ("noise", "mask", "shift", "contrast", "stroke")
# the strengths the robustness curves sweep (0 first: the clean images)
STRENGTHS = {"noise": (0.0, 0.1, 0.2, 0.3, 0.5), "mask": (0.0, 0.1, 0.25, 0.4, 0.6),
             "shift": (0, 1, 2), "contrast": (0.0, 0.25, 0.5, 0.75), "stroke": (-1, 0, 1)}


class Shift(Augmentation):
    """Move each image by exactly `pixels` whole pixels in one of the four directions (drawn
    per image), filling with zeros."""

    def __init__(self, pixels=1):
        self.pixels = checks.non_negative_int("Shift", "pixels", pixels)

    def apply(self, x, gen, xp):
        s = self.pixels
        if s == 0:
            return x.copy()
        if s >= min(x.shape[2:]):   # every image would come out blank
            raise ValueError(f"Shift: {s} pixels moves every {x.shape[2]}x{x.shape[3]} image out of "
                             f"view (at most {min(x.shape[2:]) - 1})")
        # the four directions as window offsets into the padded image: (0, s) (2s, s) (s, 0) (s, 2s)
        direction = xp.floor(gen.random(x.shape[0]) * 4).astype(xp.int64)
        oy = xp.asarray([0, 2 * s, s, s])[direction]
        ox = xp.asarray([s, s, 0, 2 * s])[direction]
        return padded_windows(x, s, oy, ox)


class Contrast(Augmentation):
    """mean + factor * (x - mean) with each image's own mean (factor 1: unchanged)."""

    def __init__(self, factor=0.5):
        self.factor = checks.non_negative("Contrast", "factor", factor)

    def apply(self, x, gen, xp):
        if self.factor == 1.0:
            return x.copy()   # exactly unchanged (mean + (x - mean) rounds)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return mean + self.factor * (x - mean)


class StrokeWidth(Augmentation):
    """`rounds` > 0: grey-level dilation (each pixel the maximum of itself and its 4
    neighbours), repeated; < 0: erosion (the minimum), |rounds| times. Outside the image
    counts as 0 for the dilation and is ignored by the erosion."""

    def __init__(self, rounds=1):
        # (a bool is not a count; NaN, inf and None are not whole numbers: refused by name)
        if not (checks.is_real(rounds) and math.isfinite(rounds) and int(rounds) == rounds):
            raise ValueError(f"StrokeWidth: rounds must be a whole number, got {rounds!r}")
        self.rounds = int(rounds)

    def apply(self, x, gen, xp):
        pick = xp.maximum if self.rounds > 0 else xp.minimum
        fill = 0.0 if self.rounds > 0 else float("inf")   # inf: the minimum ignores it
        for _ in range(abs(self.rounds)):
            padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)
            out = x
            for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
                out = pick(out, padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]])
            x = out
        return x.copy() if self.rounds == 0 else x


def corruption(kind, strength):
    """The corruption `kind` (one of KINDS) at `strength` (module docstring), an Augmentation."""
    if kind == "noise":
        return GaussianNoise(std=strength, clip=(0.0, 1.0))
    if kind == "mask":
        return MaskingNoise(strength)
    if kind == "shift":
        return Shift(strength)
    if kind == "contrast":
        checks.in_range("corruption", "contrast strength", strength, 0.0, 1.0)
        return Contrast(1.0 - strength)
    if kind == "stroke":
        return StrokeWidth(strength)
    raise ValueError(f"corruption: kind must be one of {KINDS}, got {kind!r}")
