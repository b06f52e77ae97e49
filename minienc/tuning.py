"""Process-wide tuning for CPU training: the host allocator and the number of threads.

These change the whole process, so the library never calls them by itself: a script that trains
(the demos, through demos/common/; the benchmark, for every implementation alike) calls them
once at start-up.

    from minienc import tuning
    tuning.tune_host_allocator()
    n, timings = tuning.choose_threads()     # a quick probe: 1 thread or every core?
    tuning.set_threads(n)                    # BLAS and minienc's own elementwise pool
"""
import ctypes
import ctypes.util
import time

from . import backend
from .kernels import threads as _pool


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


def set_threads(n):
    """Give minienc `n` host threads: the BLAS library's (matrix products) and the pool that the
    fast paths split elementwise and row-wise work over (minienc/kernels/threads.py)."""
    _pool.set_threads(n)
    set_blas_threads(n)


def get_threads():
    return _pool.get_threads()


def choose_threads(candidates=None, repeats=5):
    """(the fastest thread count, {count: seconds per probe step}): times a small training step
    shaped like a ViT block's MLP on a demo batch (2,048 tokens of width 64 -> 256, GELU, back to
    64, layer norm, backward; ~0.4 GFLOP of products, float32 as in training) with each count of
    `candidates` (default: 1 and every core this process may use), in two interleaved rounds so
    that a moment's noise hits every count alike, and keeps the fastest, a larger count only if it
    is at least 5% faster. Takes about half a second; on a machine that other work keeps
    busy, extra threads wait for each other and the probe picks one."""
    from . import ops
    from .engine import tensor
    cores = _pool.default_threads()
    candidates = sorted(set(candidates or (1, cores)))
    rng = backend.numpy.random.default_rng(0)

    def weight(*shape):
        return tensor((rng.standard_normal(shape) / shape[1] ** 0.5).astype("float32"),
                      requires_grad=True, device="cpu")
    x = tensor(rng.standard_normal((2048, 64)).astype("float32"), device="cpu")
    w1, w2 = weight(256, 64), weight(64, 256)

    def step():
        ops.layer_norm(ops.linear(ops.gelu(ops.linear(x, w1)), w2)).sum().backward()
        w1.grad = w2.grad = None
    previous, times = get_threads(), {n: [] for n in candidates}
    try:
        for _ in range(2):
            for n in candidates:
                set_threads(n)
                step()
                for _ in range(repeats):
                    start = time.perf_counter()
                    step()
                    times[n].append(time.perf_counter() - start)
    finally:
        set_threads(previous)
    timings = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    return fastest_threads(timings), timings


def fastest_threads(timings, margin=0.05):
    """The thread count to use given {count: seconds per step}: the smallest count, replaced by a
    larger one only when that one is at least `margin` (5%) faster than the best so far. More
    threads cost cores other work could use, so a tie goes to fewer."""
    counts = sorted(timings)
    best = counts[0]
    for n in counts[1:]:
        if timings[n] < (1 - margin) * timings[best]:
            best = n
    return best


_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}   # what SkylakeX kernels use


def openblas_kernel_advice():
    """A line of advice when NumPy's OpenBLAS runs its AVX2 (Haswell) kernels on a CPU with
    AVX-512 (its products then run well below what the CPU can do: docs/benchmarks.md), else
    None. OpenBLAS does this on CPU models it does not recognise, or when OPENBLAS_CORETYPE says
    so; the kernel is chosen when NumPy loads, so the fix is an environment variable set before
    Python starts."""
    import os
    try:
        from threadpoolctl import threadpool_info
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f
                          if line.startswith("flags")), set())
    except (ImportError, OSError):
        return None
    kernels = {i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}
    if "Haswell" not in kernels or not _AVX512 <= flags:
        return None
    forced = os.environ.get("OPENBLAS_CORETYPE")
    why = (f"OPENBLAS_CORETYPE={forced} in the environment holds NumPy's OpenBLAS to" if forced else
           "NumPy's OpenBLAS picked")
    return (f"{why} its Haswell (AVX2) kernel on a CPU with AVX-512; OPENBLAS_CORETYPE=SkylakeX "
            f"set before Python starts makes its products faster (see docs/benchmarks.md)")
