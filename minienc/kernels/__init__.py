"""The fast-path home: every faster variant of an op or an optimizer update, chosen in one place.

minienc/ops/ and minienc/optim/ hold the reference code, each op the formula of its docstring.
This package holds what runs instead when it is faster and gives the same numbers:

    host.py    NumPy: in-place arithmetic on few buffers, row sums without BLAS, updates that
               allocate nothing, big arrays cut into chunks for the thread pool
    cuda.py    CuPy: fused kernels (GELU, layer norm, softmax cross-entropy, the optimizer updates)
    threads.py the small persistent thread pool that host.py hands its chunks to

An op asks `variant(Reference, array)` for the class to run and gets the fast one for the
array's backend, or the reference itself when there is none or the fast paths are off. ONE switch
turns every fast path off: the environment variable MINIENC_FUSED_KERNELS=0 for a whole run (to
measure what they buy, or to debug), `disabled()` for a block (the tests compare both paths
with it). tests/test_kernels.py checks every variant registered here against its reference.

Hardware lore lives here and in docs/benchmarks.md (dated measurements), nowhere else:
- Reductions. The reference ops reduce with `.sum()` / `.mean()`. The fast paths sum a row with
  einsum ('...d->...', or '...d,...d->...' for a sum of products): NumPy's sum-of-products loop is
  vectorised along the row, several times faster than `.sum(axis=-1)` on rows of 12 to 256 values
  and with no temporary for the product. A matrix-vector product with a ones vector is faster
  still with one BLAS thread, but BLAS may split it over threads (and host.py calls it from the
  pool's threads), so BLAS is kept for real matrix products. A max over a short last axis is as
  slow as a sum and einsum has no max, so the attention softmax lays its scores out with the keys
  on a leading axis instead (host.py).
- Threads. BLAS threads only help products; NumPy's ufuncs run on one core but release the GIL,
  so host.py splits big elementwise and row-wise work into contiguous chunks over a persistent
  pool (threads.py), sized with BLAS by `minienc.tuning.set_threads`. Chunks of ~1 MiB also keep
  a fused sequence of in-place steps in cache, which pays even on one thread.
"""
import contextlib
import os

from .. import backend, engine

# MINIENC_FUSED_KERNELS=0 starts with every fast path off (the name predates the NumPy variants)
_enabled = os.environ.get("MINIENC_FUSED_KERNELS", "1") != "0"
_variants = None


def enabled():
    """Whether fast paths are on."""
    return _enabled


@contextlib.contextmanager
def disabled():
    """Inside this block every op and optimizer runs its reference code, on every backend."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def variant(reference, like):
    """What to run in place of `reference` (a Function class or an update function) for the
    array or tensor `like`: its fast variant for like's backend, or `reference` itself."""
    if not _enabled:
        return reference
    if _variants is None:
        _register()
    table = _variants["cuda" if backend.is_cupy(engine.as_array(like)) else "cpu"]
    return table.get(reference, reference)


def registered(device):
    """{reference: fast variant} for "cpu" or "cuda" (what the tests walk through)."""
    if _variants is None:
        _register()
    return dict(_variants[device])


def _register():
    # imported on first use: these modules import ops/ and optim/, which import this package
    global _variants
    from . import cuda, host
    _variants = {"cpu": host.VARIANTS, "cuda": cuda.VARIANTS}
