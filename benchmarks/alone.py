"""Each implementation at its best, each in its own process: the second table of benchmark.py.

The interleaved table holds every implementation to the same thread count in one process. A
user does not: PyTorch runs with its defaults (its own thread count, its OpenMP threads spinning
between ops), minienc with the thread count its demos choose at start-up (minienc.tuning's
probe). Here each runs in a process of its own, set up that way; the parent keeps one process
per implementation alive and asks them for `inner` steps in turn (rotating order, a pause after
PyTorch so its spinning threads go quiet before the next one is timed), so that a machine whose
load changes affects them alike.

    python benchmarks/alone.py --serve torch     # a worker: reads "workload batch inner" lines
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def serve(impl):
    """The worker: set up as `impl` would be by its user, then time steps on request."""
    sys.path.insert(0, os.path.join(HERE, ".."))
    from benchmarks import benchmark
    setup = {}
    if impl != "torch":      # minienc and its floor: what the demos do at start-up
        from minienc import tuning
        tuning.tune_host_allocator()
        threads, _ = tuning.choose_threads()
        tuning.set_threads(threads)
        setup["threads"] = threads
    else:
        import torch
        setup["threads"] = torch.get_num_threads()
    print(json.dumps(setup), flush=True)
    steps = {}
    for line in sys.stdin:
        name, batch, inner = line.split()
        key = (name, batch)
        if key not in steps:
            workload = benchmark.WORKLOADS[name](batch=int(batch) if batch != "-" else None)
            step, _ = benchmark.build(workload, impl, "cpu")
            for _ in range(5 if step else 0):
                step()
            steps[key] = step
            benchmark.freeze_setup()
        step, inner = steps[key], int(inner)
        if step is None:
            print("null", flush=True)
            continue
        start = time.perf_counter()
        for _ in range(inner):
            step()
        print(json.dumps((time.perf_counter() - start) / inner * 1e3), flush=True)


def run_alone(names, impls, repeats, inner, batch=None, env=None, quiet_after_torch=0.3):
    """{workload: {impl: [ms per step, ...]}} and {impl: its setup}, from one worker process per
    implementation (started with `env`), asked in turn. A workload an implementation lacks (the
    floor of the ViTs) has no entry for it."""
    workers, setups = {}, {}
    for impl in impls:
        workers[impl] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", impl],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         env=env or dict(os.environ))
        setups[impl] = json.loads(workers[impl].stdout.readline())
    times = {name: {impl: [] for impl in impls} for name in names}
    try:
        for name in names:
            for r in range(repeats):
                for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
                    worker = workers[impl]
                    worker.stdin.write(f"{name} {batch or '-'} {inner}\n")
                    worker.stdin.flush()
                    ms = json.loads(worker.stdout.readline())
                    if ms is not None:
                        times[name][impl].append(ms)
                    if impl == "torch":
                        time.sleep(quiet_after_torch)
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return {name: {impl: t for impl, t in by_impl.items() if t} for name, by_impl in times.items()}, setups


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(__doc__)
