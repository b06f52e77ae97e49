"""What every image demo shares: the same flags, the same set-up, the same evaluation report.

    args = image_parser(__doc__, epochs=30, latent_dim=32).parse_args()
    data = setup(args)                       # seed, device, dataset, output folder
    ...train with minienc.train.Trainer...
    report(args, data, "autoencoder", encoder, random_encoder)   # the table every demo prints
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minienc  # noqa: E402
from minienc import tuning  # noqa: E402
from minienc.data import DATA_HELP, load_dataset  # noqa: E402
from minienc.eval import baseline_records, evaluate, print_table  # noqa: E402


def image_parser(description, epochs=20, latent_dim=None, batch_size=128, lr=1e-3, data="digits"):
    """The flags every image demo takes: --epochs --latent-dim --batch-size --lr --device --data
    --seed --out (defaults per demo)."""
    parser = argparse.ArgumentParser(description=description.strip().split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=epochs)
    if latent_dim is not None:
        parser.add_argument("--latent-dim", type=int, default=latent_dim)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINIENC_DEVICE or cpu)")
    parser.add_argument("--data", default=data, help=DATA_HELP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default: runs/<demo name>)")
    parser.add_argument("--draws", type=int, default=100, help="few-shot probe draws")
    add_blas_threads_flag(parser)
    add_distributed_flag(parser)
    return parser


def add_blas_threads_flag(parser):
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="host BLAS threads (see minienc.tuning.set_blas_threads: the demos' "
                             "small matrices run fastest on one)")


def tune_process(blas_threads):
    """The process-wide CPU settings every demo starts with (see minienc.tuning): freed
    temporaries are reused across steps, and the host BLAS gets `blas_threads` threads."""
    tuning.tune_host_allocator()
    tuning.set_blas_threads(blas_threads)


def setup(args):
    """Seed, default device and output folder from the flags; returns the dataset."""
    setup_distributed(args)
    minienc.manual_seed(args.seed + _rank())
    tune_process(args.blas_threads)
    if args.device:
        minienc.set_device(args.device)
    args.device = minienc.get_device()
    if args.out is None:
        args.out = os.path.join("runs", os.path.splitext(os.path.basename(sys.argv[0]))[0])
    os.makedirs(args.out, exist_ok=True)
    data = load_dataset(args.data, seed=args.seed)
    print(f"data: {data}   device: {args.device}   output: {args.out}")
    return data


def report(args, data, name, encoder, random_encoder=None, extra_records=(), baselines=True,
           params=None):
    """Evaluate `encoder` (a Module or a callable from image batches to embeddings) beside the
    baselines (raw pixels, PCA to the same dimension, the same encoder at random init), print
    the table and write it to <out>/results.json (baseline records marked "baseline": true).
    `params` overrides the parameter count (for an encoder given as a plain function). Returns
    the records."""
    if _rank():
        return []   # rank 0 alone evaluates (every rank holds the same weights)
    options = dict(draws=args.draws, seed=args.seed, verbose=False)
    record = evaluate(encoder, data, name=name, **options)
    record["params"] = params if params is not None else _parameter_count(encoder)
    record["train_s"] = _training_seconds(args.out)
    records = [record, *extra_records]
    if baselines:
        records += [dict(r, baseline=True) for r in baseline_records(
            data, dim=record["dim"], random_encoder=random_encoder, **options)]
    print_table(records, title=f"\nevaluation on {data.name} (test split, frozen embeddings)")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    return records


def _parameter_count(encoder):
    """Parameters of the trained model behind `encoder` (a Module, or a bound method of one)."""
    owner = getattr(encoder, "__self__", encoder)
    count = getattr(owner, "num_parameters", None)
    return int(count()) if callable(count) else None


def _training_seconds(out):
    """Wall-clock seconds of the run's training loop, as the Trainer logged them."""
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            last = [line for line in f if line.strip()][-1]
        return round(json.loads(last)["elapsed_s"], 1)
    except (OSError, IndexError, KeyError, ValueError):
        return None


# ----- collapse gauges over training (the joint-embedding demos: BYOL, SimSiam, VICReg, Barlow
# Twins, DINO). Without negatives nothing in the loss itself forbids mapping every image to one
# point; these two numbers show whether the method's own remedy is working.

def add_gauge_flags(parser, every=100):
    parser.add_argument("--monitor-every", type=int, default=every,
                        help="steps between RankMe / embedding-std checks (collapse: both fall)")
    return parser


class CollapseGauges:
    """A Trainer callback: every `every` steps, RankMe and the embedding std of each of
    `encoders` (name -> a Module or a function of image batches: the representation, and the
    output the loss sees, where collapse shows first) on `images`, kept in `curves`. Call
    `record(0)` before training for the starting point."""

    def __init__(self, images, every, **encoders):
        self.images, self.every, self.encoders = images, max(1, every), encoders
        self.curves = {"step": []}
        for name in encoders:
            self.curves[f"RankMe ({name})"] = []
            self.curves[f"embedding std ({name})"] = []

    def record(self, step):
        from minienc.eval import embedding_std, encode, rankme
        self.curves["step"].append(step)
        for name, encoder in self.encoders.items():
            features = encode(encoder, self.images)
            self.curves[f"RankMe ({name})"].append(rankme(features))
            self.curves[f"embedding std ({name})"].append(embedding_std(features))

    def __call__(self, trainer):
        if trainer.step % self.every == 0:
            self.record(trainer.step)


def save_training_curves(args, name, gauges, terms=(), log_scale=("loss",)):
    """<out>/curves.png: the loss and each logged term in `terms` (as the Trainer wrote them to
    metrics.jsonl, one point per log interval); <out>/gauges.png and gauges.json: the collapse
    gauges over training."""
    from minienc.eval import plot_curves
    with open(os.path.join(args.out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [row["step"] for row in rows]
    curves = {key: (steps, [row[key] for row in rows]) for key in ("loss", *terms)}
    print("saved", plot_curves(curves, os.path.join(args.out, "curves.png"),
                               title=f"{name}: loss over training", log_scale=log_scale))
    with open(os.path.join(args.out, "gauges.json"), "w") as f:
        json.dump(gauges.curves, f)
    steps = gauges.curves["step"]
    path = plot_curves({k: (steps, v) for k, v in gauges.curves.items() if k != "step"},
                       os.path.join(args.out, "gauges.png"),
                       title=f"{name}: collapse gauges on the train images (eval mode)")
    print("saved", path)
    return path


# ----- several processes (minienc.distributed) --------------------------------------------------

def add_distributed_flag(parser):
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel over the processes of an MPI launcher, e.g. mpiexec "
                             "-n 2 python demos/simclr.py --distributed (--batch-size stays the "
                             "global batch, split between the processes)")


def _rank():
    from minienc import distributed  # pure Python: mpi4py comes only with distributed.init()
    return distributed.rank()


def setup_distributed(args):
    """With --distributed: join the launcher's processes (minienc.distributed.init()). Rank 0
    keeps --out and prints; the other ranks print nothing and write into a temporary folder
    removed at exit (the Trainer has them resume from rank 0's checkpoint). setup() then seeds
    each rank's random stream apart (augmentations, masks); the weights still start as rank
    0's, which the Trainer broadcasts."""
    if not getattr(args, "distributed", False):
        return
    import atexit
    import shutil
    import tempfile
    from minienc import distributed
    distributed.init()
    if distributed.world_size() == 1:
        print("--distributed: no launcher around this process, so it trains alone "
              "(start it with mpiexec -n 2 ... to use two)")
    elif distributed.is_main():
        print(f"distributed: {distributed.world_size()} processes ({distributed.engine().name}); "
              f"--batch-size {getattr(args, 'batch_size', '?')} is the global batch")
    if not distributed.is_main():
        args.out = tempfile.mkdtemp(prefix=f"minienc-rank{distributed.rank()}-")
        atexit.register(shutil.rmtree, args.out, True)
        sys.stdout = open(os.devnull, "w")
