"""Speed record: one float32 training step of each workload, side by side in one run.

    python benchmarks/benchmark.py --workloads all            # every workload on CPU: the whole table
    python benchmarks/benchmark.py --workloads mlp_ae,vit_mae --profile   # and where minienc's time goes
    python benchmarks/benchmark.py --workloads all --device cuda --batch 256   # GPU, larger batches

For every workload it builds the same model, from the same initial weights and on the same batch,
three ways: minienc; the same model written by hand in NumPy (CuPy on --device cuda) with no
autograd at all -- forward, a hand-derived backward and Adam in place, the floor minienc is
measured against; and PyTorch when it is installed (never a minienc dependency). It first checks
that the three give the same losses for a few steps (so they do the same work), then times them
interleaved: each repeat runs `--inner` steps of every implementation in turn (the order rotates
from repeat to repeat, so none always follows the same neighbour), and the table
reports the median ms per step over `--repeats` repeats after `--warmup` steps, with the
interquartile range, steps/s, peak memory of a step, and the ratios to the floor and to PyTorch.

Two more tables say the rest of the truth on the CPU. "Compute": the matrix-product FLOPs of one
step (PyTorch's FLOP counter on the PyTorch twin) divided by each step time, beside the GEMM peak
measured on this machine (an n^3 float32 product) -- how far each is from the limit. "Alone"
(benchmarks/alone.py; --no-alone skips it): each implementation in its own process as a user
would run it -- PyTorch at its defaults, minienc (and its floor) with the thread count
minienc.tuning's start-up probe picks -- asked for steps in turn.

Workloads (issue 9): mlp_ae and simclr_mlp (benchmarks/bench_mlp.py, with NumPy floors), conv_ae,
vit_mae and vit_jepa (benchmarks/bench_vision.py; PyTorch twins of the ViT parts in
benchmarks/bench_torch_vit.py). A workload is a class with `__init__(seed, batch)`, its minienc model as `.model`,
`parts(device)` -> (optimizer, loss_fn, after) for minienc (tests/test_gpu_path.py reuses these
as its registry of representative models), and optionally `numpy(xp)` and `torch(device)`, each
returning (step, loss) callables.
"""
import argparse
import datetime
import gc
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))  # run as a script from a checkout
from minienc import backend, tuning  # noqa: E402
from benchmarks import alone, bench_mlp, bench_vision, machine  # noqa: E402


# ----- workloads (benchmarks/bench_mlp.py, benchmarks/bench_vision.py) -------------------------------------
WORKLOADS = {cls.name: cls for cls in bench_mlp.WORKLOADS + bench_vision.WORKLOADS}


# ----- running ---------------------------------------------------------------------------------
def _sync_for(impl, device):
    if device != "cuda":
        return lambda: None
    if impl == "torch":
        import torch
        return torch.cuda.synchronize
    return lambda: backend.cupy().cuda.Device().synchronize()


NO_TORCH = ("PyTorch is not installed, so its columns, the compute table (its FLOP counter) and "
            "its process in the alone table are skipped. PyTorch is never a minienc dependency; "
            "for its columns install its CPU build (docs/benchmarks.md used 2.13.0+cpu): "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu")


def torch_installed():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def build(workload, impl, device):
    """(step, loss) for one implementation, or (None, reason) when it cannot run here."""
    if impl == "minienc":
        return bench_mlp.train_step(*workload.parts(device))
    if impl == "numpy":
        if not hasattr(workload, "numpy"):
            return None, "no hand-written version of this workload"
        return workload.numpy(backend.xp_for(device))
    if impl == "torch":
        if not torch_installed():
            return None, NO_TORCH
        import torch
        if device == "cuda" and not torch.cuda.is_available():
            return None, "PyTorch has no CUDA here"
        return workload.torch(device)
    raise ValueError(f"unknown implementation {impl!r}")


def freeze_setup():
    """Move everything alive now (the libraries, the models, the batches) out of the cyclic
    garbage collector's view: its full passes otherwise walk them all (170,000 objects once
    PyTorch is imported), a pause of ~100 ms every few dozen ViT steps that lands on whichever
    implementation is running. Steps make no reference cycles that need it."""
    gc.collect()
    gc.freeze()


def peak_step_memory(step, sync, device, impl):
    """Peak bytes a step allocates above what it starts with, or None where it cannot be seen:
    on the CPU tracemalloc sees NumPy's buffers (not PyTorch's); on the GPU a CuPy memory hook
    counts the pool's allocations, and torch.cuda keeps its own peak."""
    if device == "cpu":
        if impl == "torch":
            return None
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return peak
    sync()
    if impl == "torch":
        import torch
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync()
        return torch.cuda.max_memory_allocated() - base
    with _CupyPeak() as hook:
        step()
        sync()
    return hook.peak


class _CupyPeak:
    """Tracks the bytes CuPy's pool hands out between enter and exit, and their peak."""

    def __enter__(self):
        cp = backend.cupy()
        outer = self

        class Hook(cp.cuda.MemoryHook):
            name = "minienc_peak"

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                outer.now += mem_size
                outer.peak = max(outer.peak, outer.now)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                outer.now -= mem_size

        self.now = self.peak = 0
        self.hook = Hook()
        self.hook.__enter__()
        return self

    def __exit__(self, *exc):
        return self.hook.__exit__(*exc)


def run_workload(name, impls, device, warmup, repeats, inner, check_steps=3, batch=None):
    workload = WORKLOADS[name](batch=batch)
    built, notes = {}, []
    for impl in impls:
        step, loss = build(workload, impl, device)
        if step is None:
            notes.append(f"{name}: {impl} skipped: {loss}")
        else:
            built[impl] = (step, loss, _sync_for(impl, device))
    # same work: the first few losses agree across implementations (same weights, same batch)
    losses = {}
    for impl, (step, loss, sync) in built.items():
        losses[impl] = []
        for _ in range(check_steps):
            step()
            losses[impl].append(loss())
    ref = losses.get("numpy") or next(iter(losses.values()))
    for impl, ls in losses.items():
        if not np.allclose(ls, ref, rtol=1e-4, atol=1e-6):
            notes.append(f"{name}: WARNING {impl} losses {ls} differ from {ref}")
    for impl, (step, _, sync) in built.items():
        for _ in range(warmup):
            step()
        sync()
    freeze_setup()
    times = {impl: [] for impl in built}
    order = list(built)
    for r in range(repeats):
        for impl in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            step, _, sync = built[impl]
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                step()
            sync()
            times[impl].append((time.perf_counter() - t0) / inner * 1e3)
    memory = {impl: peak_step_memory(step, sync, device, impl)
              for impl, (step, _, sync) in built.items()}
    return times, memory, notes


HEADER = ["workload", "implementation", "ms/step (median)", "IQR", "steps/s", "peak step MB",
          "vs NumPy floor", "vs PyTorch"]


LABELS = {"minienc": "minienc", "numpy": "NumPy by hand (floor)", "torch": "PyTorch"}


def table_rows(results, device):
    """One row of strings per (workload, implementation), in HEADER's order."""
    floor = "NumPy by hand (floor)" if device == "cpu" else "CuPy by hand (floor)"
    labels = {"numpy": floor, "torch": f"PyTorch {device}", "minienc": "minienc"}
    rows = []
    for name, (times, memory, _) in results.items():
        med = {impl: statistics.median(t) for impl, t in times.items()}
        for impl, t in times.items():
            q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
            mem = f"{memory[impl] / 2**20:.1f}" if memory.get(impl) is not None else "n/a"
            vs_np = f"{med[impl] / med['numpy']:.2f}x" if "numpy" in med else "-"
            vs_t = f"{med[impl] / med['torch']:.2f}x" if "torch" in med else "-"
            rows.append([name, labels[impl], f"{med[impl]:.3f}", f"{q[2] - q[0]:.3f}",
                         f"{1e3 / med[impl]:.0f}", mem, vs_np, vs_t])
    return rows


def columns(results):
    """HEADER, less "vs PyTorch" when PyTorch timed nothing (not installed, or not asked for)."""
    timed_torch = any("torch" in times for times, _, _ in results.values())
    return HEADER if timed_torch else HEADER[:-1]


def table(results, device):
    """The markdown table (what README shows)."""
    header = columns(results)
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    lines += ["| " + " | ".join(row[:len(header)]) + " |" for row in table_rows(results, device)]
    return "\n".join(lines)


def text_table(results, device):
    """The same rows aligned for a terminal."""
    header = columns(results)
    rows = [header] + [row[:len(header)] for row in table_rows(results, device)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def profile(name, device, steps=200, batch=None):
    """cProfile of minienc's step: the top functions by own time."""
    import cProfile
    import pstats
    step, _ = bench_mlp.train_step(*WORKLOADS[name](batch=batch).parts(device))
    for _ in range(10):
        step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    print(f"\ncProfile of {steps} minienc {name} steps (top 25 by own time):")
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def set_threads(n):
    """Give minienc (BLAS and its elementwise pool, through minienc.tuning) and PyTorch `n`
    threads each; returns what the header should say about threads."""
    if n is not None:
        tuning.set_threads(n)
    blas = f"minienc threads {tuning.get_threads()}"
    try:
        from threadpoolctl import threadpool_info
        counts = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        blas += f", BLAS threads {','.join(map(str, counts))}"
    except ImportError:
        if n is not None:
            blas += f", BLAS threads NOT set (no threadpoolctl; export OPENBLAS_NUM_THREADS={n})"
    try:
        import torch
        if n is not None:
            torch.set_num_threads(n)
        blas += f", PyTorch threads {torch.get_num_threads()}"
    except ImportError:
        pass
    return blas


def compute_table(results, names, batch, peaks):
    """Markdown rows: each workload's matrix-product GFLOP per step and the GFLOP/s each
    implementation achieved in the interleaved run, beside the measured GEMM peak."""
    lines = ["| workload | matmul GFLOP/step | " + " | ".join(
        f"{LABELS[i]} GFLOP/s" for i in ("minienc", "numpy", "torch")) + " |",
        "| --- |" + " ---: |" * 4]
    for name in names:
        flops = machine.matmul_flops(WORKLOADS[name](batch=batch))
        if flops is None:
            continue
        med = {impl: statistics.median(t) for impl, t in results[name][0].items()}
        cells = [f"{flops / 1e9 / (med[i] / 1e3):.1f}" if i in med else "-"
                 for i in ("minienc", "numpy", "torch")]
        lines.append(f"| {name} | {flops / 1e9:.3f} | " + " | ".join(cells) + " |")
    peak = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    return "\n".join(lines) + f"\n\nGEMM peak here (1024^3 float32, best of 5, same threads): {peak}"


def _threads(n):
    return f"{n} thread" + ("s" if n != 1 else "")


def alone_table(times, setups):
    labels = {impl: f"{LABELS[impl]} ({_threads(setups[impl]['threads'])})" for impl in setups}
    impls = list(setups)
    ratio = {"minienc", "torch"} <= set(impls)      # the last column only when both ran
    lines = ["| workload | " + " | ".join(f"{labels[i]} ms/step" for i in impls) + " |"
             + (" minienc / PyTorch |" if ratio else ""),
             "| --- |" + " ---: |" * (len(impls) + ratio)]
    for name, by_impl in times.items():
        med = {impl: statistics.median(t) for impl, t in by_impl.items()}
        cells = [f"{med[i]:.3f}" if i in med else "-" for i in impls]
        if ratio:
            cells.append(f"{med['minienc'] / med['torch']:.2f}x" if {"minienc", "torch"} <= set(med) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="mlp_ae",
                    help=f"'all' or comma-separated, from {list(WORKLOADS)}")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size for every workload (default: each workload's own)")
    ap.add_argument("--impls", default="minienc,numpy,torch")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30, help="timed repeats (median of these)")
    ap.add_argument("--inner", type=int, default=5, help="steps per timed repeat")
    ap.add_argument("--profile", action="store_true", help="also cProfile minienc's step")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and PyTorch threads, the same for every implementation; 0 leaves "
                         "each library its own default (see docs/benchmarks.md for why one is "
                         "the default)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator untuned (the demos tune it; see "
                         "minienc.tuning.tune_host_allocator) to see malloc's share of a step")
    ap.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True,
                    help="on the CPU, also time each implementation alone in its own process at "
                         "its own best settings (benchmarks/alone.py)")
    args = ap.parse_args(argv)
    # PyTorch's OpenMP workers spin for a while after each op by default, stealing the cores from
    # whichever implementation runs next in the interleaved loop; passive waiting keeps them fair
    # (set before anything imports torch; the alone table runs PyTorch without it)
    env_for_alone = dict(os.environ)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    names = list(WORKLOADS) if args.workloads == "all" else \
        [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; available: {sorted(WORKLOADS)}")
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    without_torch = "torch" in impls and not torch_installed()
    if without_torch:
        impls.remove("torch")      # before anything (the alone table's worker) tries to import it
    tuned = not args.default_malloc and tuning.tune_host_allocator()
    malloc = "glibc malloc tuned (mallopt)" if tuned else "default malloc"
    threads = set_threads(args.threads or None)
    print(f"# minienc benchmark, {datetime.date.today()}, device {args.device}")
    print(f"# {machine.machine_line(args.device, backend)}")
    if without_torch:
        print(f"# NOTE: {NO_TORCH}")
    advice = tuning.openblas_kernel_advice()
    if advice:
        print(f"# NOTE: {advice}")
    print(f"# median of {args.repeats} interleaved repeats (rotating order) of {args.inner} steps "
          f"after {args.warmup} warm-up steps, float32, {malloc}, {threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, gc.freeze() after set-up\n")
    results = {}
    for name in names:
        print(f"# timing {name} ...", file=sys.stderr, flush=True)   # progress; the table is stdout
        results[name] = run_workload(name, impls, args.device, args.warmup, args.repeats,
                                     args.inner, batch=args.batch)
    print(text_table(results, args.device))
    print("\nmarkdown:\n")
    print(table(results, args.device))
    for _, _, notes in results.values():
        for note in notes:
            print("note:", note)
    if args.device == "cpu" and "torch" in impls:
        print("\ncompute: matrix-product GFLOP of one step (PyTorch's FLOP counter on the twin) / "
              "median step time of the table above\n")
        print(compute_table(results, names, args.batch, machine.gemm_peak()))
    if args.alone and args.device == "cpu":
        pytorch = "PyTorch: its defaults; " if "torch" in impls else ""
        print(f"\nalone: each implementation in its own process at its own best ({pytorch}"
              f"minienc and the floor: the threads minienc.tuning's probe picks), asked "
              f"for {args.inner} steps in turn, median of {args.repeats}\n", flush=True)
        times, setups = alone.run_alone(names, impls, args.repeats, args.inner, args.batch, env_for_alone)
        print(alone_table(times, setups))
    if args.profile:
        for name in names:
            profile(name, args.device, batch=args.batch)
    return results


if __name__ == "__main__":
    main()
