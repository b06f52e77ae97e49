"""Colour augmentations on the device, and SimCLR's recipe built from them.

The same contract as minienc/data/augment.py (these are `Augmentation`s): a batch (N, C, H, W) in,
the same shape, dtype, device and type out, random parameters drawn per image from the seeded
generator of the images' device (or `rng=`), no host sync. Images are in [0, 1]; C is 3 (RGB) or
1 (grey: saturation, hue and grayscale then change nothing, as in torchvision).

Formulas (torchvision's ColorJitter and friends, which the PyTorch SimCLR/BYOL/DINO code uses):
    gray(x)      = 0.299 R + 0.587 G + 0.114 B             (ITU-R 601-2 luma, as PIL's "L")
    brightness   x' = clip(b x),                          b ~ U[max(0, 1 - B), 1 + B]
    contrast     x' = clip(c x + (1 - c) mean(gray(x))),  c ~ U[max(0, 1 - C), 1 + C]
    saturation   x' = clip(s x + (1 - s) gray(x)),        s ~ U[max(0, 1 - S), 1 + S]
    hue          x' = hsv_to_rgb((h + d) mod 1, s, v),    d ~ U[-H, H], H <= 0.5 of the wheel
    grayscale    x' = gray(x) in every channel
    blur         x' = x convolved with a normalised Gaussian of std sigma ~ U[sigma_min, sigma_max]
                 (separable, K x K, reflected at the borders)
    solarize     x' = 1 - x where x > t, else x           (so t = 1 leaves images in [0, 1] alone)
    flip         x'[..., j] = x[..., W - 1 - j]
ColorJitter applies brightness, contrast, saturation, hue in that fixed order; torchvision
shuffles the order per call, which a batched, sync-free pipeline cannot do per image.
"""
import math

from .. import checks
from .augment import Augmentation, Compose, RandomResizedCrop, uniform

LUMA = (0.299, 0.587, 0.114)


def check_colour_images(owner, x):
    """Refuse what a colour augmentation would silently turn into garbage: channels other than 1
    (grey) or 3 (RGB) -- 2, or RGBA's 4. Pixels outside [0, 1], such as [0, 255] bytes, are
    refused by every augmentation with that value_range, and channels-last images by every one."""
    channels = x.shape[1]
    if channels not in (1, 3):
        layout = "; drop the alpha channel of RGBA images, x[:, :3]" if channels == 4 else ""
        raise ValueError(f"{owner}: expects channels-first images (N, C, H, W) with C = 1 (grey) "
                         f"or 3 (RGB), got shape {tuple(x.shape)}{layout}")


def gray(x, xp):
    """(N, 1, H, W) luma of RGB images (N, 3, H, W); grey images are their own luma."""
    if x.shape[1] == 1:
        return x
    return (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]).astype(x.dtype, copy=False)


def _factor(gen, strength, n, dtype):
    """Per-image factors ~ U[max(0, 1 - strength), 1 + strength], shaped to broadcast."""
    return uniform(gen, max(0.0, 1.0 - strength), 1.0 + strength, n, dtype)[:, None, None, None]


def rgb_to_hsv(x, xp):
    """Hue, saturation, value (each (N, H, W), hue in [0, 1)) of RGB images (N, 3, H, W)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    value = xp.maximum(xp.maximum(r, g), b)
    delta = value - xp.minimum(xp.minimum(r, g), b)
    saturation = xp.where(value > 0, delta / xp.where(value > 0, value, 1), 0)
    safe = xp.where(delta > 0, delta, 1)
    rc, gc, bc = (value - r) / safe, (value - g) / safe, (value - b) / safe
    hue = xp.where(value == r, bc - gc, xp.where(value == g, 2 + rc - bc, 4 + gc - rc))
    hue = xp.where(delta > 0, (hue / 6) % 1.0, 0)
    return hue.astype(x.dtype, copy=False), saturation.astype(x.dtype, copy=False), value


def hsv_to_rgb(hue, saturation, value, xp):
    """RGB images (N, 3, H, W) from hue in [0, 1), saturation and value (each (N, H, W))."""
    sector = xp.floor(hue * 6)
    f = hue * 6 - sector
    sector = sector.astype(xp.int64) % 6
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    cases = [sector == k for k in range(6)]
    r = xp.select(cases, [value, q, p, p, t, value])
    g = xp.select(cases, [t, value, value, q, p, p])
    b = xp.select(cases, [p, p, t, value, value, q])
    return xp.stack([r, g, b], axis=1).astype(value.dtype, copy=False)


class ColorJitter(Augmentation):
    """Random brightness, contrast, saturation (each a strength: factors in [1 - s, 1 + s]) and
    hue (a shift of up to +-hue of the colour wheel, hue <= 0.5), in that order, each result
    clipped to [0, 1]; with probability p per image, else the image is kept."""

    value_range = (0.0, 1.0)

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0):
        for name, value in (("brightness", brightness), ("contrast", contrast),
                            ("saturation", saturation)):
            if not (checks.is_real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ColorJitter: {name} must be >= 0 and finite, got {value!r}")
        if not (checks.is_real(hue) and 0 <= hue <= 0.5):
            raise ValueError(f"ColorJitter: hue must be in [0, 0.5] (a fraction of the colour "
                             f"wheel), got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = (
            brightness, contrast, saturation, hue, p)

    def apply(self, x, gen, xp):
        check_colour_images("ColorJitter", x)
        n, dt = x.shape[0], x.dtype
        if self.brightness:
            x = self.clipped(x * _factor(gen, self.brightness, n, dt), xp)
        if self.contrast:
            mean = gray(x, xp).mean(axis=(1, 2, 3), keepdims=True)
            c = _factor(gen, self.contrast, n, dt)
            x = self.clipped(c * x + (1 - c) * mean, xp)
        if self.saturation and x.shape[1] == 3:
            s = _factor(gen, self.saturation, n, dt)
            x = self.clipped(s * x + (1 - s) * gray(x, xp), xp)
        if self.hue and x.shape[1] == 3:
            hue, saturation, value = rgb_to_hsv(x, xp)
            shift = uniform(gen, -self.hue, self.hue, n, dt)[:, None, None]
            x = self.clipped(hsv_to_rgb((hue + shift) % 1.0, saturation, value, xp), xp)
        return x


class RandomGrayscale(Augmentation):
    """With probability p per image, its luma in every channel (grey images: unchanged)."""

    value_range = (0.0, 1.0)   # not clipped (luma keeps [0, 1]), but [0, 255] pixels are a mistake

    def __init__(self, p=0.2):
        self.p = p

    def apply(self, x, gen, xp):
        check_colour_images("RandomGrayscale", x)
        return xp.broadcast_to(gray(x, xp), x.shape).copy()


class GaussianBlur(Augmentation):
    """With probability p per image, a Gaussian blur of std sigma ~ U[sigma] (pixels) with a
    kernel_size x kernel_size kernel (odd; SimCLR: a tenth of the image side), separable,
    borders reflected."""

    def __init__(self, kernel_size=3, sigma=(0.1, 2.0), p=0.5):
        if not (checks.is_int(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"GaussianBlur: kernel_size must be odd and positive, got {kernel_size!r}")
        if not (isinstance(sigma, (tuple, list)) and len(sigma) == 2
                and all(checks.is_real(s) for s in sigma) and 0 < sigma[0] <= sigma[1] < math.inf):
            raise ValueError(f"GaussianBlur: sigma must be a range 0 < low <= high, got {sigma}")
        self.kernel_size, self.sigma, self.p = kernel_size, tuple(sigma), p

    def apply(self, x, gen, xp):
        n, dt, k = x.shape[0], x.dtype, self.kernel_size // 2
        if k == 0:
            return x.copy()
        if k >= min(x.shape[2:]):
            raise ValueError(f"GaussianBlur: kernel_size {self.kernel_size} needs images larger than "
                             f"{k} pixels a side, got {x.shape[2:]}")
        sigma = uniform(gen, self.sigma[0], self.sigma[1], n, dt)
        offsets = xp.arange(-k, k + 1, dtype=dt)
        weights = xp.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
        weights = weights / weights.sum(axis=1, keepdims=True)      # (N, K), each sums to 1
        for axis in (2, 3):   # rows, then columns: a K x K kernel as two passes of K taps
            pad = [(0, 0)] * 4
            pad[axis] = (k, k)
            padded = xp.pad(x, pad, mode="reflect")
            length = x.shape[axis]
            out = xp.zeros_like(x)
            for tap in range(2 * k + 1):
                window = [slice(None)] * 4
                window[axis] = slice(tap, tap + length)
                out += weights[:, tap, None, None, None] * padded[tuple(window)]
            x = out
        return x


class Solarize(Augmentation):
    """With probability p per image, every value above `threshold` becomes 1 - value."""

    def __init__(self, threshold=0.5, p=0.2):
        self.threshold, self.p = checks.in_range("Solarize", "threshold", threshold, 0.0, 1.0), p

    def apply(self, x, gen, xp):
        return xp.where(x > self.threshold, 1 - x, x)


class RandomHorizontalFlip(Augmentation):
    """With probability p per image, mirrored left to right."""

    def __init__(self, p=0.5):
        self.p = p

    def apply(self, x, gen, xp):
        return xp.ascontiguousarray(x[..., ::-1])


def simclr_augment(image_size=32, strength=0.5, blur=False, crop_scale=(0.08, 1.0)):
    """SimCLR's augmentations (Chen et al. 2020, appendix A; the released data_util.py): a random
    resized crop (8-100% of the area, aspect 3/4-4/3), a horizontal flip (p 0.5), colour jitter
    of brightness/contrast/saturation 0.8 * strength and hue 0.2 * strength (p 0.8), grayscale
    (p 0.2), and a Gaussian blur (p 0.5, sigma 0.1-2.0, kernel a tenth of the side) when `blur`.
    The defaults are its CIFAR-10 settings (strength 0.5, no blur); ImageNet: strength 1, blur.
    Departure: the released code's brightness is additive (a delta), torchvision's (here) a factor."""
    steps = [RandomResizedCrop(scale=crop_scale, ratio=(3 / 4, 4 / 3)),
             RandomHorizontalFlip(p=0.5),
             ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength, p=0.8),
             RandomGrayscale(p=0.2)]
    if blur:
        # as the released code: a kernel of side // 10, made odd by its radius
        steps.append(GaussianBlur(kernel_size=2 * (image_size // 10 // 2) + 1, p=0.5))
    return Compose(steps)
