"""I-JEPA's multi-block mask sampler: its invariants over drawn grids, targets and seeds, the
released block-size formula, the last row and column in reach, and settings it refuses (at
once, or after bounded tries instead of looping)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minienc.objectives.multiblock import MultiBlockMaskSampler, block_size


def _rect_of(indices, grid_w):
    rows, cols = np.divmod(np.asarray(indices), grid_w)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


@settings(max_examples=40)
@given(gh=st.integers(4, 12), gw=st.integers(4, 12), num_targets=st.integers(1, 4),
       full_context=st.booleans(), cut=st.sampled_from(["raster", "random"]),
       seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 9))
def test_sampler_invariants(gh, gw, num_targets, full_context, cut, seed, batch):
    target_scale, target_aspect = (0.15, 0.2), (0.75, 1.5)
    context_scale = (1.0, 1.0) if full_context else (0.85, 1.0)
    sampler = MultiBlockMaskSampler((gh, gw), num_targets, target_scale, target_aspect,
                                    context_scale, min_context=2, cut=cut)
    context, targets = sampler(batch, np.random.default_rng(seed))
    n = gh * gw
    assert context.dtype == np.int64 and targets.dtype == np.int64
    assert context.ndim == 2 and context.shape[0] == batch and context.shape[1] >= 2
    assert targets.shape[:2] == (batch, num_targets)
    kt = targets.shape[2]
    # one (h, w) for the whole batch, inside the rounding bounds of the scale/aspect ranges
    k_lo, k_hi = int(n * target_scale[0]), int(n * target_scale[1])
    for b in range(batch):
        assert np.all(np.diff(context[b]) > 0), "context indices are sorted and distinct"
        assert context[b].min() >= 0 and context[b].max() < n
        assert not set(context[b]) & set(targets[b].ravel()), "a context patch is a target"
        for block in targets[b]:
            top, bottom, left, right = _rect_of(block, gw)
            h, w = bottom - top, right - left
            assert h * w == kt == len(set(block)), "a target is a full h x w rectangle"
            assert math.floor(math.sqrt(k_lo * target_aspect[0]) - 0.5) <= h <= min(
                gh, math.ceil(math.sqrt(k_hi * target_aspect[1]) + 0.5))
            assert math.floor(math.sqrt(k_lo / target_aspect[1]) - 0.5) <= w <= min(
                gw, math.ceil(math.sqrt(k_hi / target_aspect[0]) + 0.5))


def test_block_size_matches_the_released_formula():
    assert block_size((14, 14), 0.15, 1.0) == (5, 5)          # k = int(29.4) = 29
    assert block_size((14, 14), 0.2, 1.5) == (8, 5)           # k = 39: sqrt(58.5), sqrt(26)
    assert block_size((7, 7), 1.0, 1.0) == (7, 7)             # the whole grid is allowed


def test_sampler_uses_the_last_row_and_column_and_cuts_as_asked():
    sampler = MultiBlockMaskSampler(7, min_context=4)
    rng = np.random.default_rng(0)
    seen = np.zeros(49, bool)
    for _ in range(20):
        _, targets = sampler(16, rng)
        seen[targets.ravel()] = True
    assert seen[6::7].any() and seen[42:].any(), "blocks reach the last column and row"
    # raster cut: each image keeps the FIRST patches of its (uncut) context in raster order
    raster = MultiBlockMaskSampler(7, context_scale=(1.0, 1.0), min_context=4, cut="raster")
    context, targets = raster(8, np.random.default_rng(1))
    for b in range(8):
        full = np.setdiff1d(np.arange(49), targets[b].ravel())
        np.testing.assert_array_equal(context[b], full[:context.shape[1]])
    random = MultiBlockMaskSampler(7, context_scale=(1.0, 1.0), min_context=4, cut="random")
    context, targets = random(64, np.random.default_rng(1))
    assert context.max(axis=1).mean() > 40, "a random cut keeps patches from the bottom rows"


@pytest.mark.parametrize("options, match", [
    (dict(min_context=50), "min_context"),                         # more than any context block
    (dict(min_context=0), "min_context"),
    (dict(target_scale=(0.001, 0.002)), "empty target"),
    (dict(cut="prefix"), "cut"),
    (dict(target_scale=(0.3, 0.2)), "target_scale"),
])
def test_sampler_refuses_impossible_settings_at_once(options, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskSampler(7, **options)


def test_sampler_gives_up_with_an_error_instead_of_looping():
    # 4 targets of half a 4x4 grid leave almost nothing: 15 kept patches can never happen
    sampler = MultiBlockMaskSampler(4, num_targets=4, target_scale=(0.5, 0.5),
                                    context_scale=(1.0, 1.0), min_context=15, max_tries=50)
    draws, draw = [], sampler._draw

    def counted(*args):
        draws.append(args[1])          # how many images this draw redraws
        return draw(*args)
    sampler._draw = counted
    with pytest.raises(ValueError, match="after 50 draws.*min_context=15"):
        sampler(8, np.random.default_rng(0))
    assert len(draws) == 1 + 50 and draws[0] == 8   # the first draw, then max_tries redraws
