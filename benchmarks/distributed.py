"""Data-parallel throughput: the same global batch trained by 1 process and by W processes.

    python benchmarks/distributed.py                           # simclr and vit_mae, 1 vs 2 processes
    python benchmarks/distributed.py --workloads simclr --processes 1 2 --rounds 5 --steps 40

Each measurement is a fresh launch (`mpiexec -n W python benchmarks/distributed.py --worker ...`
for W > 1) with one BLAS thread per process. A worker builds the model, takes its share of the
global batch (batch / W rows), runs --warmup steps, then times --steps data-parallel steps:
forward, backward, the gradients averaged over the processes (distributed.GradientReducer), the
optimizer step. Every call of the engine (all-reduce, all-gather, reduce-scatter, broadcast) is
timed too, waiting for the slower process included: that is the "communication" column.

The launches are interleaved (1 process, W processes, then the other order in the next round)
so that load from other work on the machine falls on both alike; the table gives the median of
the rounds. Strong scaling: efficiency = samples/s with W processes / (W * samples/s with one).

Workloads:
  simclr   demos/simclr.py's model (MLP 64-512-512-64 and head 64-256-64, batch norm), NT-Xent at
           temperature 0.5 over both views, LARS; with W > 1: SyncBatchNorm and the negatives
           gathered from every process (SimCLR's global BN and cross-replica negatives);
           global batch 256 images (512 views); the views are noisy copies (no augmentation)
  vit_mae  benchmarks/bench_vision.py's MAE (ViT 28x28, patch 4, dim 128, depth 4; decoder 64x2),
           AdamW, global batch 64
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import minienc  # noqa: E402
from minienc import distributed, nn, tuning  # noqa: E402

WORKLOADS = ("simclr", "vit_mae")


# ----- the worker (one process of a launch) ------------------------------------------------------
def _simclr(share, seed):
    from minienc.objectives.contrastive import SimCLR, projection_head
    from minienc.optim import LARS
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (512, 512), 64, batch_norm=True))
    model = SimCLR(encoder, projection_head(64, 256, 64), temperature=0.5, distributed=True)
    nn.SyncBatchNorm.convert(model)
    rng = np.random.default_rng(seed + distributed.rank())
    images = rng.random((share, 1, 8, 8), dtype=np.float32)
    views = [minienc.tensor(images + 0.1 * rng.standard_normal(images.shape).astype(np.float32))
             for _ in range(2)]
    optimizer = LARS(model.parameters(), lr=1.0, weight_decay=1e-6)
    return model, optimizer, lambda: model.loss_of_views(*views)["loss"]


def _vit_mae(share, seed):
    from benchmarks import bench_vision
    workload = bench_vision.VitMAE(seed=seed + distributed.rank(), batch=share)
    optimizer, loss_fn, _ = workload.parts("cpu")
    return workload.model, optimizer, loss_fn


BUILDERS = {"simclr": (_simclr, 256), "vit_mae": (_vit_mae, 64)}


def _time_engine_calls(engine):
    """Wrap the engine's collectives so each call adds its wall time to `spent[0]`."""
    spent = [0.0]
    for name in ("allreduce_", "allgather", "reduce_scatter", "broadcast_"):
        call = getattr(engine, name)

        def timed(*args, _call=call, **kwargs):
            began = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began
        setattr(engine, name, timed)
    return spent


def worker(name, batch, steps, warmup, seed=0):
    tuning.tune_host_allocator()   # as the demos and benchmarks/benchmark.py do
    tuning.set_blas_threads(1)
    engine = distributed.init()
    world = distributed.world_size()
    build, default_batch = BUILDERS[name]
    batch = batch or default_batch
    if batch % world:
        raise SystemExit(f"--batch {batch} does not split into {world} processes")
    minienc.manual_seed(seed)
    model, optimizer, loss_fn = build(batch // world, seed)
    distributed.broadcast_parameters(model)
    reduce_gradients = distributed.GradientReducer(model.parameters())
    spent = _time_engine_calls(engine) if world > 1 else [0.0]

    def step():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        reduce_gradients()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    engine.barrier()
    spent[0] = 0.0
    began = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()     # a finished step (a no-op wait on the CPU)
    seconds = time.perf_counter() - began
    communication = spent[0]
    slowest = engine.allgather_object((seconds, communication))
    if distributed.is_main():
        seconds = max(s for s, _ in slowest)
        print("RESULT " + json.dumps({
            "workload": name, "processes": world, "global_batch": batch,
            "per_process_batch": batch // world, "steps": steps, "seconds": seconds,
            "steps_per_s": steps / seconds, "samples_per_s": steps * batch / seconds,
            "communication_share": max(c for _, c in slowest) / seconds}), flush=True)


# ----- the driver ------------------------------------------------------------------------------
def _mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else "mpiexec"


def launch(name, processes, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.batch:
        command += ["--batch", str(args.batch)]
    if processes > 1:
        command = [_mpiexec(), "-n", str(processes)] + command
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=ROOT, MINIENC_DEVICE="cpu")
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=None, help="global batch (default per workload)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.batch, args.steps, args.warmup)
    rows = []
    for name in args.workloads:
        results = {p: [] for p in args.processes}
        for r in range(args.rounds):
            order = args.processes if r % 2 == 0 else list(reversed(args.processes))
            for processes in order:
                results[processes].append(launch(name, processes, args))
                print(f"{name} round {r + 1}: {processes} process(es) "
                      f"{results[processes][-1]['samples_per_s']:.0f} samples/s", file=sys.stderr)
        one = statistics.median(x["samples_per_s"] for x in results[min(args.processes)])
        for processes in args.processes:
            runs = results[processes]
            row = dict(runs[0], **{k: statistics.median(x[k] for x in runs) for k in
                                   ("seconds", "steps_per_s", "samples_per_s", "communication_share")})
            row["rounds"] = [round(x["samples_per_s"], 1) for x in runs]
            row["efficiency"] = row["samples_per_s"] / (processes / min(args.processes) * one)
            rows.append(row)
    print("\n| workload | processes | global batch | per process | steps/s | samples/s | "
          "efficiency | communication | samples/s per round |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['processes']} | {r['global_batch']} | "
              f"{r['per_process_batch']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.0f} | "
              f"{r['efficiency']:.0%} | {r['communication_share']:.0%} | "
              f"{', '.join(f'{v:.0f}' for v in r['rounds'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
