"""Process-wide tuning for CPU training: the host allocator and the number of BLAS threads.

These change the whole process, so the library never calls them by itself: a script that trains
(the demos, through demos/common.py; the benchmark, for every implementation alike) calls them
once at start-up.

    from minienc import tuning
    tuning.tune_host_allocator()
    tuning.set_blas_threads(1)
"""
import ctypes
import ctypes.util


def tune_host_allocator():
    """Ask glibc to keep freed memory for reuse instead of returning every large block to the OS.

    A training step allocates and frees the same large temporaries every time. By default glibc
    serves each block over its mmap threshold with a fresh mmap, page-faulted in on first touch and
    unmapped on free (docs/benchmarks.md: ~30% of an MLP step on a 2-core CPU). Raising the mmap
    and trim thresholds makes freed blocks reusable, as a caching allocator does. Linux/glibc only
    (elsewhere it does nothing). Returns whether it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError, TypeError):
        return False


_blas_limits = None


def set_blas_threads(n):
    """Cap the host BLAS library at `n` threads (through threadpoolctl, when it is installed).
    Returns whether the cap took effect."""
    global _blas_limits
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    _blas_limits = threadpool_limits(limits=int(n), user_api="blas")
    return True
