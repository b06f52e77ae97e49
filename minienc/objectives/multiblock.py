"""I-JEPA's multi-block masks on the patch grid (Assran et al. 2023, section 3; the released
code's src/masks/multiblock.py).

For a batch of images on an H x W patch grid (N = H * W patches):

  * target blocks: `num_targets` rectangles (default 4), each covering a fraction s of the grid,
    s ~ U(0.15, 0.2), with aspect ratio (height / width) a ~ U(0.75, 1.5):
        k = int(N * s),  h = round(sqrt(k * a)),  w = round(sqrt(k / a))   (clipped to the grid)
  * one context block: s ~ U(0.85, 1.0), aspect 1, with EVERY target patch removed from it, so
    the context never shows the encoder what it must predict.

Block SIZES are drawn once per batch (every image's blocks have the same shape, so targets stack
into one array); block POSITIONS are drawn per image. The context of each image then keeps a
different number of patches; all are cut to the batch's smallest count so they stack too.
An image whose context keeps fewer than `min_context` patches is drawn again.

Returns host integer arrays (raster patch indices t = row * W + col):
    context (B, Kc)          sorted ascending
    targets (B, T, Kt)       Kt = h * w, each block in raster order

Where this departs from the released sampler, and why:
  * top-left corners are drawn from [0, H - h] INCLUSIVE and a block may span the whole grid.
    The original draws randint(0, H - h) (exclusive) and shrinks any block to H - 1, so no block
    ever touches the last row or column; on a 7x7 grid the "85-100%" context is then always
    the same top-left 6x6.
  * `min_context` applies to the context only, and a failed draw is retried a bounded number of
    times (redrawing that image's targets and context) before a clear error. The original also
    demands more than `min_keep` patches of every TARGET block and, after repeated failures,
    lets the context overlap the targets; with min_keep >= a target block's area (small grids)
    it loops forever.
  * scale and aspect ratio come from two independent uniforms; the original reuses one uniform
    for both (so larger blocks are always taller).
  * `cut="random"` (not in the original) cuts each context to the batch minimum with a random
    subset; `cut="raster"` keeps the first patches in raster order as the original does, which
    on small grids leaves a context made mostly of the image's top rows.
"""
import math

from .. import backend, checks

CUTS = ("raster", "random")


def block_size(grid_size, scale, aspect):
    """(h, w) of a block covering `scale` of the grid with height/width ratio `aspect`, as the
    released code computes it, clipped to the grid (a block may be the whole grid) and >= 1."""
    gh, gw = grid_size
    k = int(gh * gw * scale)
    h = int(round(math.sqrt(k * aspect)))
    w = int(round(math.sqrt(k / aspect)))
    return min(max(h, 1), gh), min(max(w, 1), gw)


class MultiBlockMaskSampler:
    """sampler(batch_size, rng=None) -> (context (B, Kc), targets (B, T, Kt)) host int64 arrays.

    grid_size: int or (H, W) of the patch grid. The defaults are I-JEPA's ImageNet settings.
    cut: "raster" (the original: keep the first Kc context patches in raster order) or "random".
    max_tries: redraws of an image whose context keeps fewer than min_context patches before
        the sampler gives up with an error (instead of looping forever).
    """

    def __init__(self, grid_size, num_targets=4, target_scale=(0.15, 0.2),
                 target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
                 min_context=10, cut="raster", max_tries=100):
        self.grid_size = checks.pair("MultiBlockMaskSampler", "grid_size", grid_size, minimum=1)
        gh, gw = self.grid_size
        checks.positive_int("MultiBlockMaskSampler", "num_targets", num_targets)
        checks.one_of("MultiBlockMaskSampler", "cut", cut, CUTS)
        checks.positive_int("MultiBlockMaskSampler", "max_tries", max_tries)
        checks.positive_int("MultiBlockMaskSampler", "min_context", min_context)
        self.num_targets, self.cut, self.max_tries = num_targets, cut, max_tries
        self.target_scale = checks.span("MultiBlockMaskSampler", "target_scale", target_scale, high=1.0)
        self.target_aspect = checks.span("MultiBlockMaskSampler", "target_aspect", target_aspect)
        self.context_scale = checks.span("MultiBlockMaskSampler", "context_scale", context_scale, high=1.0)
        self.context_aspect = checks.span("MultiBlockMaskSampler", "context_aspect", context_aspect)
        self.min_context = min_context
        n = gh * gw
        if int(n * self.target_scale[0]) < 1:
            raise ValueError(f"MultiBlockMaskSampler: target_scale {target_scale} of a {gh}x{gw} "
                             f"grid rounds to an empty target block; raise the scale or the grid")
        # the smallest context block the ranges allow must hold min_context patches even before
        # any target is removed, or no number of redraws can ever succeed
        smallest = min(a * b for a, b in (block_size(self.grid_size, self.context_scale[0], r)
                                          for r in self.context_aspect))
        if not 1 <= min_context <= smallest:
            raise ValueError(f"MultiBlockMaskSampler: min_context={min_context} must be in "
                             f"[1, {smallest}], the smallest context block on a {gh}x{gw} grid "
                             f"with context_scale {context_scale}")

    def sample_size(self, rng, scale, aspect):
        """One block size for the batch: scale and aspect drawn independently (see module doc)."""
        s = scale[0] + (scale[1] - scale[0]) * rng.random()
        a = aspect[0] + (aspect[1] - aspect[0]) * rng.random()
        return block_size(self.grid_size, s, a)

    def _blocks(self, rng, count, size):
        """`count` per-image positions of an (h, w) block: (count, h*w) raster indices, sorted."""
        np = backend.numpy
        gh, gw = self.grid_size
        h, w = size
        top = rng.integers(0, gh - h + 1, size=count)      # inclusive upper bound: see module doc
        left = rng.integers(0, gw - w + 1, size=count)
        rows = top[:, None, None] + np.arange(h)[None, :, None]
        cols = left[:, None, None] + np.arange(w)[None, None, :]
        return (rows * gw + cols).reshape(count, h * w)

    def _draw(self, rng, count, target_size, context_size):
        """Targets (count, T, Kt) and the context as a boolean mask (count, N)."""
        np = backend.numpy
        n = self.grid_size[0] * self.grid_size[1]
        targets = self._blocks(rng, count * self.num_targets, target_size)
        targets = targets.reshape(count, self.num_targets, -1)
        context = np.zeros((count, n), dtype=bool)
        rows = np.arange(count)[:, None]
        context[rows, self._blocks(rng, count, context_size)] = True
        context[rows, targets.reshape(count, -1)] = False        # no target patch is context
        return targets, context

    def __call__(self, batch_size, rng=None):
        checks.positive_int("MultiBlockMaskSampler", "batch_size", batch_size)
        np = backend.numpy
        rng = backend.host_rng() if rng is None else rng
        target_size = self.sample_size(rng, self.target_scale, self.target_aspect)
        context_size = self.sample_size(rng, self.context_scale, self.context_aspect)
        targets, context = self._draw(rng, batch_size, target_size, context_size)
        for _ in range(self.max_tries):
            short = np.flatnonzero(context.sum(axis=1) < self.min_context)
            if short.size == 0:
                break
            targets[short], context[short] = self._draw(rng, short.size, target_size, context_size)
        else:
            if (context.sum(axis=1) < self.min_context).any():
                raise ValueError(
                    f"MultiBlockMaskSampler: after {self.max_tries} draws a context block of "
                    f"{context_size} patches minus {self.num_targets} targets of {target_size} "
                    f"still keeps fewer than min_context={self.min_context} of the "
                    f"{self.grid_size} grid; lower min_context, num_targets or target_scale")
        keep = int(context.sum(axis=1).min())
        n = context.shape[1]
        if self.cut == "raster":   # the first `keep` context patches in raster order
            key = np.where(context, 0.0, 2.0) + np.arange(n) / n
        else:                      # a random `keep` of them
            key = np.where(context, 0.0, 2.0) + rng.random(context.shape)
        chosen = np.sort(np.argsort(key, axis=1, kind="stable")[:, :keep], axis=1)
        return chosen.astype(np.int64), targets.astype(np.int64)

    def __repr__(self):
        return (f"MultiBlockMaskSampler(grid={self.grid_size}, targets={self.num_targets} x "
                f"scale {self.target_scale} aspect {self.target_aspect}, context scale "
                f"{self.context_scale}, min_context={self.min_context}, cut={self.cut!r})")
