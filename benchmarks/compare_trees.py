"""Before and after: minienc's training step from two source trees, side by side in time.

    git worktree add /tmp/before main       # or: git archive main | tar -x -C /tmp/before
    python benchmarks/compare_trees.py --a /tmp/before --b . --workloads all --clock cpu --torch

One worker process per tree (and, with --torch, one for PyTorch from tree B) builds each workload
and waits; the parent asks them for `inner` steps in turn, rotating the order, so a machine whose
load changes affects them alike. It prints each median and the median of the paired ratios B/A
(each repeat's B time over the A time next to it) with its interquartile range. --clock cpu
times the workers' CPU time instead of the wall clock: on a machine other work keeps busy, a
one-thread step's CPU time hardly moves while its wall time can double. --b-env KEY=VALUE sets a
variable for worker B only (e.g. OPENBLAS_CORETYPE, to see what a BLAS kernel is worth).
"""
import argparse
import gc
import os
import statistics
import subprocess
import sys
import time


def worker(tree, name, impl, threads, batch, clock):
    sys.path.insert(0, tree)
    os.chdir(tree)
    from benchmarks import benchmark as bench
    try:
        from minienc.tuning import tune_host_allocator
    except ImportError:                       # a tree from before minienc/tuning.py
        from minienc.backend import tune_host_allocator
    tune_host_allocator()
    bench.set_threads(threads)
    step, _ = bench.build(bench.WORKLOADS[name](batch=batch), impl, "cpu")
    for _ in range(5):
        step()
    gc.collect()
    gc.freeze()
    clock = time.process_time if clock == "cpu" else time.perf_counter
    print("ready", flush=True)
    for line in sys.stdin:
        steps = int(line)
        start = clock()
        for _ in range(steps):
            step()
        print((clock() - start) / steps * 1e3, flush=True)


def compare(name, workers, args):
    """{label: [ms per step]} for one workload, the workers asked in turn."""
    procs = {}
    for label, tree, impl, extra_env in workers:
        env = dict(os.environ, PYTHONPATH=tree, OMP_WAIT_POLICY="PASSIVE", **extra_env)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", tree, name, impl,
               "--threads", str(args.threads), "--clock", args.clock]
        if args.batch:
            cmd += ["--batch", str(args.batch)]
        procs[label] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
    for p in procs.values():
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{name}: a worker failed to start")
    order = list(procs)
    times = {label: [] for label in order}
    try:
        for r in range(args.repeats):
            for label in order[r % len(order):] + order[:r % len(order)]:
                p = procs[label]
                p.stdin.write(f"{args.inner}\n")
                p.stdin.flush()
                times[label].append(float(p.stdout.readline()))
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", help="the tree to compare against (before)")
    ap.add_argument("--b", default=".", help="the tree to compare (after)")
    ap.add_argument("--workloads", default="all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--torch", action="store_true", help="a third worker: PyTorch, from tree B")
    ap.add_argument("--b-env", default=None, help="KEY=VALUE for worker B only")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        tree, name, impl = args.worker
        return worker(tree, name, impl, args.threads, args.batch, args.clock)
    if not args.a:
        ap.error("--a (the tree to compare against) is required")
    trees = [os.path.abspath(t) for t in (args.a, args.b)]
    names = ["mlp_ae", "simclr_mlp", "conv_ae", "vit_mae", "vit_jepa"] if args.workloads == "all" \
        else args.workloads.split(",")
    b_env = dict([args.b_env.split("=", 1)]) if args.b_env else {}
    workers = [("A", trees[0], "minienc", {}), ("B", trees[1], "minienc", b_env)]
    if args.torch:
        workers.append(("T", trees[1], "torch", {}))
    print(f"# A = {trees[0]}\n# B = {trees[1]} {args.b_env or ''}\n# {args.threads} thread(s), "
          f"median of {args.repeats} x {args.inner} steps, {args.clock} clock")
    for name in names:
        times = compare(name, workers, args)
        med = {label: statistics.median(t) for label, t in times.items()}
        ratios = sorted(b / a for a, b in zip(times["A"], times["B"]))
        q = statistics.quantiles(ratios, n=4)
        line = (f"{name:11s} A {med['A']:8.3f} ms  B {med['B']:8.3f} ms  B/A paired median "
                f"{statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})")
        if args.torch:
            line += f"  PyTorch {med['T']:8.3f} ms  A/PyTorch {med['A'] / med['T']:.2f}x  " \
                    f"B/PyTorch {med['B'] / med['T']:.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
