"""What the benchmark says about the machine: the CPU, each library's BLAS and its kernel, the
measured GEMM peak, and the matrix-product FLOPs of one training step (so a step time becomes an
achieved GFLOP/s that can be set beside the peak)."""
import os
import platform
import re
import time

import numpy as np


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def numpy_blas():
    """NumPy's BLAS, its version and the kernel it picked for this CPU (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS unknown (no threadpoolctl)"
    for info in threadpool_info():
        if info["user_api"] == "blas" and "numpy" in info.get("filepath", ""):
            kernel = info.get("architecture") or "?"
            name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(info["internal_api"],
                                                                             info["internal_api"])
            return f"{name} {info['version']} ({kernel} kernel, {info.get('threading_layer', '?')})"
    return "BLAS unknown"


def torch_blas(torch):
    show = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", show)
    blas = re.search(r"BLAS_INFO=(\w+)", show)
    name = f"MKL {mkl.group(1)}" if mkl else (blas.group(1) if blas else "BLAS unknown")
    capability = re.search(r"CPU capability usage: (\w+)", show)
    return name + (f", {capability.group(1)}" if capability else "")


def machine_line(device, backend=None):
    parts = [cpu_model(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}",
             f"NumPy {np.__version__} with {numpy_blas()}"]
    try:
        import torch
        parts.append(f"PyTorch {torch.__version__} with {torch_blas(torch)}")
    except ImportError:
        pass
    if device == "cuda":
        cp = backend.cupy()
        parts.append(f"CuPy {cp.__version__}, "
                     f"{cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    return ", ".join(parts)


def gemm_peak(n=1024, repeats=5):
    """{library: GFLOP/s} of an n^3 float32 product (best of `repeats`), at the current thread
    settings: the most a step made of products could reach."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    products = {"NumPy": lambda: a @ b}
    try:
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        products["PyTorch"] = lambda: ta @ tb
    except ImportError:
        pass
    peaks = {}
    for name, product in products.items():
        product()
        best = min(_seconds(product) for _ in range(repeats))
        peaks[name] = 2 * n ** 3 / best / 1e9
    return peaks


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_flops(workload):
    """The matrix-product FLOPs of one training step (forward and backward; products,
    convolutions and attention), counted by PyTorch's FLOP counter on the workload's PyTorch twin
    (the same model, so the same products as minienc's step), or None without PyTorch."""
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    if not hasattr(workload, "torch"):
        return None
    step, _ = workload.torch("cpu")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:    # attention as plain products, so it counts
        step()
    return counter.get_total_flops()
