"""Batched image augmentations that run on the images' own device.

Every augmentation takes a batch of images `(N, C, H, W)` (a NumPy or CuPy array, or a minienc
Tensor) and returns a batch of the same shape, dtype, device and type. Random parameters are drawn
per image, on the device, from a generator: pass `rng=` a generator (`backend.rng(device)` or
`xp.random.default_rng(seed)`) or an int seed; with neither, the seeded generator of the images'
device is used (`minienc.manual_seed`). Nothing here reads a device value back to the host, so an
augmentation costs no host sync inside a training step.

Geometric transforms share one sampler, `affine_sample`: each output pixel is mapped back into the
input through a per-image 2x3 matrix and read with bilinear interpolation (zeros outside), the way
`F.affine_grid` + `F.grid_sample` work in PyTorch.

    aug = Compose([RandomResizedCrop(), RandomAffine(degrees=10), GaussianNoise(0.05)])
    view1, view2 = aug(images), aug(images)      # two random views of the same batch
"""
import math

from .. import backend, checks
from ..engine import as_array, as_tensor, Tensor


def generator(rng, like):
    """The random generator to use for the array `like`: `rng` itself, a fresh one seeded with
    `rng` if it is an int, or the device's seeded generator if it is None."""
    device = backend.device_of(like)
    if rng is None:
        return backend.rng(device)
    if isinstance(rng, int):
        return backend.xp_for(device).random.default_rng(rng)
    if backend.is_cupy(rng) != (device == "cuda"):
        raise TypeError(f"augmentation: images on {device} need a generator of the same device "
                        f"(backend.rng({device!r}) or an int seed), got {type(rng).__module__}")
    return rng


def uniform(gen, low, high, n, dtype):
    """n draws from U[low, high) in `dtype` (low/high may be per-image arrays)."""
    return low + (high - low) * gen.random(n, dtype=dtype)


RANGE_SLACK = 0.5   # how far outside its range, as a share of it, a pixel may stray (an overshoot)


def check_range(owner, x, low=0.0, high=1.0):
    """Refuse images clearly outside [low, high], the range an augmentation clips its result to
    (pixels in [0, 255], or images already standardised, would be saturated silently). Checked
    on the host only: on a GPU reading the extremes back would be a sync every step."""
    extremes = backend.host_extremes(x)
    if extremes is None:
        return
    slack, (smallest, largest) = RANGE_SLACK * (high - low), extremes
    if smallest < low - slack or largest > high + slack:
        hint = " (pixels in [0, 255]? divide by 255)" if (low, high) == (0.0, 1.0) and largest > 2 else ""
        raise ValueError(f"{owner}: expects images in [{low:g}, {high:g}], got values in "
                         f"[{smallest:g}, {largest:g}]{hint}; normalise after the augmentations "
                         f"that clip, not before")


def looks_channels_last(shape):
    """(N, H, W, C) images given where (N, C, H, W) is expected: a last axis of 1, 3 or 4
    (grey, RGB, RGBA) after more than 4 "channels". (N, C, H, W) images are never that narrow."""
    return shape[-1] in (1, 3, 4) and shape[1] > 4


class Augmentation:
    """Base class: checks the input, finds the generator, applies `self.apply` to the raw array,
    keeps each image unchanged with probability 1 - p, and gives back the caller's type."""

    _p = 1.0
    # (low, high): the range the images must lie in, set by the augmentations that clip their
    # result to it (`self.clipped`) or assume it; checked here, once for all (check_range)
    value_range = None

    @property
    def p(self):
        """The probability of applying the augmentation to each image, in [0, 1] (checked here,
        once for every augmentation, when a subclass sets it)."""
        return self._p

    @p.setter
    def p(self, value):
        self._p = checks.in_range(type(self).__name__, "p", value, 0.0, 1.0)

    def __call__(self, x, rng=None):
        data = as_array(x)
        name = type(self).__name__
        if data.ndim != 4:
            raise ValueError(f"{name}: expects a batch of images (N, C, H, W), got shape {tuple(data.shape)}")
        if looks_channels_last(data.shape):
            raise ValueError(f"{name}: expects channels-first images (N, C, H, W), got shape "
                             f"{tuple(data.shape)}; it looks channels-last (N, H, W, C), as CIFAR "
                             f"or PIL arrays come: move the channels first, x.transpose(0, 3, 1, 2)")
        if not backend.is_floating(data.dtype):
            raise TypeError(f"{name}: expects floating-point images, got dtype {data.dtype}")
        if self.value_range is not None:
            check_range(name, data, *self.value_range)
        gen = generator(rng, data)
        xp = backend.get_xp(data)
        out = self.apply(data, gen, xp)
        if self.p < 1.0:
            # one coin per image; both branches are computed, which is cheaper than gathering
            skip = gen.random(data.shape[0], dtype=data.dtype) >= self.p
            out = xp.where(skip[:, None, None, None], data, out)
        out = out.astype(data.dtype, copy=False)
        return as_tensor(out) if isinstance(x, Tensor) else out

    def apply(self, x, gen, xp):
        raise NotImplementedError

    def clipped(self, x, xp):
        """x clipped to the augmentation's value_range (unchanged without one)."""
        return x if self.value_range is None else xp.clip(x, *self.value_range)

    def __repr__(self):
        fields = ", ".join(f"{'p' if k == '_p' else k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Augmentation):
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, augmentations):
        self.augmentations = list(augmentations)

    def apply(self, x, gen, xp):
        for aug in self.augmentations:
            x = aug(x, gen)
        return x


# ----- the shared geometric sampler ---------------------------------------------------------------

def affine_sample(x, theta, out_hw=None):
    """Resample images through per-image affine maps with bilinear interpolation.

    x: (N, C, H, W). theta: (N, 2, 3), mapping an OUTPUT pixel position (column, row), measured
    in pixels from the output's centre, to an INPUT position measured from the input's centre.
    Measuring from centres makes rotation and scaling act about the image centre, and measuring
    in pixels keeps angles right for non-square images. Outside the input reads as zero.
    Returns (N, C, Ho, Wo) with Ho, Wo = out_hw (default: the input size).
    """
    xp = backend.get_xp(x)
    n, c, h, w = x.shape
    ho, wo = out_hw if out_hw is not None else (h, w)
    dtype = x.dtype
    theta = theta.astype(dtype, copy=False)
    cols = xp.arange(wo, dtype=dtype) - (wo - 1) / 2
    rows = xp.arange(ho, dtype=dtype) - (ho - 1) / 2
    # input coordinates of every output pixel: (N, Ho, Wo), back in index units
    u = (theta[:, 0, 0, None, None] * cols[None, None, :] + theta[:, 0, 1, None, None] * rows[None, :, None]
         + theta[:, 0, 2, None, None]) + (w - 1) / 2
    v = (theta[:, 1, 0, None, None] * cols[None, None, :] + theta[:, 1, 1, None, None] * rows[None, :, None]
         + theta[:, 1, 2, None, None]) + (h - 1) / 2
    u0, v0 = xp.floor(u), xp.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.astype(xp.int64), v0.astype(xp.int64)
    channels_last = x.transpose(0, 2, 3, 1)          # (N, H, W, C): one gather reads all channels
    batch = xp.arange(n)[:, None, None]
    out = xp.zeros((n, ho, wo, c), dtype=dtype)
    for dv, wv in ((0, 1 - fv), (1, fv)):
        for du, wu in ((0, 1 - fu), (1, fu)):
            vi, ui = v0 + dv, u0 + du
            inside = (vi >= 0) & (vi < h) & (ui >= 0) & (ui < w)
            weight = (wv * wu * inside).astype(dtype, copy=False)
            picked = channels_last[batch, xp.clip(vi, 0, h - 1), xp.clip(ui, 0, w - 1)]
            out += picked * weight[..., None]
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))


def affine_matrices(xp, angle, scale, shear, tx, ty, dtype):
    """theta (N, 2, 3) for `affine_sample` that INVERTS the forward map
    q = scale * R(angle) @ Shear(shear) @ p + (tx, ty)   (angles in radians, shifts in pixels),
    i.e. p = Shear^-1 @ R(-angle) @ (q - t) / scale."""
    cos, sin = xp.cos(angle), xp.sin(angle)
    k = xp.tan(shear)                       # Shear = [[1, k], [0, 1]], its inverse [[1, -k], [0, 1]]
    # R(-angle) = [[cos, sin], [-sin, cos]]; then Shear^-1; then divide by scale
    a, b = (cos + k * sin) / scale, (sin - k * cos) / scale
    c, d = -sin / scale, cos / scale
    theta = xp.stack([xp.stack([a, b, -(a * tx + b * ty)], axis=-1),
                      xp.stack([c, d, -(c * tx + d * ty)], axis=-1)], axis=1)
    return theta.astype(dtype, copy=False)


# ----- the augmentations --------------------------------------------------------------------------

class RandomCrop(Augmentation):
    """Pad by `padding` pixels (zeros) and crop back to the original size at a random offset:
    a random shift of up to `padding` pixels in each direction (the CIFAR-style crop)."""

    def __init__(self, padding=2, p=1.0):
        self.padding = checks.non_negative_int("RandomCrop", "padding", padding)
        self.p = p

    def apply(self, x, gen, xp):
        n = x.shape[0]
        pad = self.padding
        if pad == 0:
            return x.copy()
        # offsets in {0, ..., 2*pad}, drawn per image
        oy = xp.floor(gen.random(n) * (2 * pad + 1)).astype(xp.int64)
        ox = xp.floor(gen.random(n) * (2 * pad + 1)).astype(xp.int64)
        return padded_windows(x, pad, oy, ox)


def padded_windows(x, pad, top, left):
    """Each image of x (N, C, h, w), zero-padded by `pad` pixels on every side, cut back to
    (h, w) at its corner (top, left) (device arrays (N,), in [0, 2*pad]): one gather."""
    xp = backend.get_xp(x)
    h, w = x.shape[2:]
    images = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = top[:, None] + xp.arange(h)
    cols = left[:, None] + xp.arange(w)
    # the sliced channel axis sits between advanced indices, so NumPy puts it last: (N, h, w, C)
    out = images[xp.arange(len(images))[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))


class RandomAffine(Augmentation):
    """Random rotation (+-degrees), translation (+-translate of the size), scale (a range) and
    shear (+-shear degrees) about the image centre, bilinear, zeros outside."""

    def __init__(self, degrees=15.0, translate=0.1, scale=(0.9, 1.1), shear=0.0, p=1.0):
        self.degrees = checks.non_negative("RandomAffine", "degrees", degrees)
        self.translate = checks.in_range("RandomAffine", "translate", translate, 0.0, 1.0)
        self.scale = checks.span("RandomAffine", "scale", scale)
        self.shear = checks.non_negative("RandomAffine", "shear", shear)
        self.p = p

    def apply(self, x, gen, xp):
        n, _, h, w = x.shape
        dt = x.dtype
        rad = math.pi / 180
        angle = uniform(gen, -self.degrees * rad, self.degrees * rad, n, dt)
        shear = uniform(gen, -self.shear * rad, self.shear * rad, n, dt)
        scale = uniform(gen, self.scale[0], self.scale[1], n, dt)
        tx = uniform(gen, -self.translate * w, self.translate * w, n, dt)
        ty = uniform(gen, -self.translate * h, self.translate * h, n, dt)
        return affine_sample(x, affine_matrices(xp, angle, scale, shear, tx, ty, dt))


class RandomResizedCrop(Augmentation):
    """SimCLR's crop: a random box with `scale` of the area and aspect ratio in `ratio`
    (log-uniform), resized back to the full image with bilinear interpolation, or to `size`
    (an int or (H, W): the multi-crop's smaller local views; then p must be 1).

    torchvision retries until the box fits; here the box sides are clipped to the image instead,
    which keeps the draw a fixed number of device operations (no data-dependent loop)."""

    def __init__(self, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), p=1.0, size=None):
        self.scale = checks.span("RandomResizedCrop", "scale", scale, high=1.0)
        self.ratio, self.p = checks.span("RandomResizedCrop", "ratio", ratio), p
        self.size = None if size is None else checks.pair("RandomResizedCrop", "size", size, minimum=1)
        if self.size is not None and p < 1.0:
            raise ValueError(f"RandomResizedCrop: with size={self.size} every image changes size, "
                             f"so p must be 1, got p={p}")

    def apply(self, x, gen, xp):
        n, _, h, w = x.shape
        ho, wo = self.size or (h, w)
        dt = x.dtype
        area = uniform(gen, self.scale[0], self.scale[1], n, dt)
        aspect = xp.exp(uniform(gen, math.log(self.ratio[0]), math.log(self.ratio[1]), n, dt))
        fw = xp.minimum(xp.sqrt(area * aspect), 1.0)   # box width and height as fractions
        fh = xp.minimum(xp.sqrt(area / aspect), 1.0)
        # box centre, in pixels from the image centre, anywhere that keeps the box inside
        cx = uniform(gen, -1.0, 1.0, n, dt) * (1 - fw) * (w / 2)
        cy = uniform(gen, -1.0, 1.0, n, dt) * (1 - fh) * (h / 2)
        zero = xp.zeros(n, dtype=dt)
        # an output pixel spans fw * w / wo input pixels (1 output pixel = fw input pixels at wo = w)
        sx, sy = fw * (w / wo), fh * (h / ho)
        theta = xp.stack([xp.stack([sx, zero, cx], axis=-1), xp.stack([zero, sy, cy], axis=-1)], axis=1)
        return affine_sample(x, theta, (ho, wo))


class GaussianNoise(Augmentation):
    """Add N(0, std^2) noise to every pixel; `clip=(low, high)` clips the result."""

    def __init__(self, std=0.1, clip=None, p=1.0):
        self.std, self.value_range = checks.non_negative("GaussianNoise", "std", std), clip
        self.p = p

    def apply(self, x, gen, xp):
        return self.clipped(x + self.std * gen.standard_normal(x.shape, dtype=x.dtype), xp)


class RandomErasing(Augmentation):
    """Zhong et al. 2017 (as torchvision): with probability p, set a random box with `scale` of
    the area and aspect `ratio` to `value`. Box sides are clipped to the image (no retry loop)."""

    def __init__(self, p=0.5, scale=(0.02, 0.25), ratio=(0.3, 3.3), value=0.0):
        self.p, self.value = p, checks.finite("RandomErasing", "value", value)
        self.scale = checks.span("RandomErasing", "scale", scale, high=1.0)
        self.ratio = checks.span("RandomErasing", "ratio", ratio)

    def apply(self, x, gen, xp):
        n, _, h, w = x.shape
        dt = x.dtype
        area = uniform(gen, self.scale[0], self.scale[1], n, dt) * (h * w)
        aspect = xp.exp(uniform(gen, math.log(self.ratio[0]), math.log(self.ratio[1]), n, dt))
        bh = xp.clip(xp.round(xp.sqrt(area * aspect)), 1, h).astype(xp.int64)
        bw = xp.clip(xp.round(xp.sqrt(area / aspect)), 1, w).astype(xp.int64)
        top = xp.floor(gen.random(n) * (h - bh + 1)).astype(xp.int64)
        left = xp.floor(gen.random(n) * (w - bw + 1)).astype(xp.int64)
        rows = xp.arange(h)[None, :]
        cols = xp.arange(w)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])     # (N, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])   # (N, W)
        box = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return xp.where(box, xp.asarray(self.value, dtype=dt), x)


class BrightnessContrast(Augmentation):
    """Jitter brightness (multiply by b in [1-brightness, 1+brightness]) then contrast (blend
    with the image's mean by c in [1-contrast, 1+contrast]), as torchvision's ColorJitter does for
    one channel; the result is clipped to `clip` (images in [0, 1] by default; None: no clip)."""

    def __init__(self, brightness=0.4, contrast=0.4, clip=(0.0, 1.0), p=1.0):
        checks.in_range("BrightnessContrast", "brightness", brightness, 0.0, 1.0)
        checks.in_range("BrightnessContrast", "contrast", contrast, 0.0, 1.0)
        if clip is not None:   # (low, high), any finite range
            clip = checks.span("BrightnessContrast", "clip", clip, low=-math.inf)
        self.brightness, self.contrast, self.value_range = brightness, contrast, clip
        self.p = p

    def apply(self, x, gen, xp):
        n = x.shape[0]
        dt = x.dtype
        b = uniform(gen, 1 - self.brightness, 1 + self.brightness, n, dt)[:, None, None, None]
        c = uniform(gen, 1 - self.contrast, 1 + self.contrast, n, dt)[:, None, None, None]
        out = self.clipped(x * b, xp)
        mean = out.mean(axis=(1, 2, 3), keepdims=True)
        return self.clipped(mean + c * (out - mean), xp)


# ----- corruption noises (the denoising autoencoder's q(x~ | x), Vincent et al. 2010) ----------

def exact_fraction_mask(gen, xp, shape, fraction):
    """Boolean (N, ...) with exactly round(fraction * D) True entries in each example's D entries,
    chosen uniformly at random on the device: rank random keys within each row and keep the
    lowest ranks (Vincent et al. corrupt a fixed number of components per example)."""
    n = shape[0]
    d = 1
    for size in shape[1:]:
        d *= size
    count = int(round(fraction * d))
    keys = gen.random((n, d), dtype=backend.DEFAULT_DTYPE)
    # argsort gives a strict order even on tied keys, so the count is exact
    ranks = xp.argsort(xp.argsort(keys, axis=1), axis=1)
    return (ranks < count).reshape(shape)


class MaskingNoise(Augmentation):
    """Masking noise: exactly round(fraction * D) values of each image (all channels and pixels
    together), chosen at random, are set to 0."""

    def __init__(self, fraction=0.25):
        self.fraction = checks.in_range(type(self).__name__, "fraction", fraction, 0, 1)

    def apply(self, x, gen, xp):
        mask = exact_fraction_mask(gen, xp, x.shape, self.fraction)
        return xp.where(mask, self.fill(gen, xp, x), x)

    def fill(self, gen, xp, x):
        return xp.zeros((), dtype=x.dtype)


class SaltAndPepperNoise(MaskingNoise):
    """Salt-and-pepper noise: the chosen values become `low` or `high` by a fair coin each."""

    def __init__(self, fraction=0.25, low=0.0, high=1.0):
        super().__init__(fraction)
        self.low = checks.finite("SaltAndPepperNoise", "low", low)
        self.high = checks.finite("SaltAndPepperNoise", "high", high)

    def fill(self, gen, xp, x):
        coin = gen.random(x.shape, dtype=x.dtype) < 0.5
        return xp.where(coin, xp.asarray(self.high, dtype=x.dtype), xp.asarray(self.low, dtype=x.dtype))


def contrastive_augment(crop_scale=(0.6, 1.0), degrees=10.0, shear=0.0, noise=0.05, erase_p=0.25):
    """A starting recipe for two-view methods on small grey digits: SimCLR's crop (`crop_scale`
    of the area) and brightness/contrast jitter, a small rotation (and `shear`), Gaussian noise
    and an erased patch. No flips (a mirrored 2 is not a 2). Strengths are milder than SimCLR's
    ImageNet recipe because an 8x8 digit has little to lose."""
    return Compose([
        RandomResizedCrop(scale=crop_scale, ratio=(3 / 4, 4 / 3)),
        RandomAffine(degrees=degrees, translate=0.0, scale=(1.0, 1.0), shear=shear),
        BrightnessContrast(0.4, 0.4, p=0.8),
        GaussianNoise(noise, clip=(0.0, 1.0)),
        RandomErasing(p=erase_p, scale=(0.02, 0.15)),
    ])


# ----- multi-crop (Caron et al. 2020, SwAV; DINO) -------------------------------------------------

class MultiCrop:
    """Multi-crop views of a batch: `global_crops` random-resized crops covering `global_scale` of
    the image at `global_size`, then `local_crops` covering `local_scale` at `local_size`, each
    then passed through `transform` (the rest of the augmentation: jitter, noise, ...; the local
    crops through `local_transform` if given). Returns a list of batches, the global crops first,
    on the images' device and of their type.

        views = MultiCrop(2, 6)(images)     # DINO: the teacher sees views[:2], the student all
        view1, view2 = MultiCrop(2, 0, global_scale=(0.5, 1.0), transform=jitter)(images)
                                            # any two-view objective: two global crops

    DINO's defaults: global crops of 40-100% of the image at 224 pixels, local crops of 5-40% at
    96 pixels (global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), local_size=96). Sizes default
    to the input's, as an encoder with a fixed input size (an MLP on pixels) needs.
    """

    def __init__(self, global_crops=2, local_crops=6, global_scale=(0.4, 1.0),
                 local_scale=(0.05, 0.4), global_size=None, local_size=None, ratio=(3 / 4, 4 / 3),
                 transform=None, local_transform=None):
        checks.positive_int("MultiCrop", "global_crops", global_crops)
        checks.non_negative_int("MultiCrop", "local_crops", local_crops)
        for name, (low, high) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"MultiCrop: {name} must satisfy 0 < low <= high <= 1, got {(low, high)}")
        self.global_crops, self.local_crops = int(global_crops), int(local_crops)
        self.global_crop = RandomResizedCrop(global_scale, ratio, size=global_size)
        self.local_crop = RandomResizedCrop(local_scale, ratio, size=local_size)
        self.transform = transform
        self.local_transform = local_transform if local_transform is not None else transform

    def __call__(self, images, rng=None):
        gen = generator(rng, as_array(images))
        views = []
        for i in range(self.global_crops + self.local_crops):
            local = i >= self.global_crops
            view = (self.local_crop if local else self.global_crop)(images, gen)
            transform = self.local_transform if local else self.transform
            views.append(view if transform is None else transform(view, gen))
        return views

    def __repr__(self):
        return (f"MultiCrop({self.global_crops} x {self.global_crop}, {self.local_crops} x "
                f"{self.local_crop}, transform={self.transform!r})")
