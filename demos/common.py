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
    add_threads_flag(parser)
    return parser


def add_threads_flag(parser):
    parser.add_argument("--threads", type=int, default=None,
                        help="host threads for BLAS and minienc's elementwise work (default: "
                             "chosen at start-up by a quick probe, see minienc.tuning)")


def tune_process(threads=None):
    """The process-wide CPU settings every demo starts with (see minienc.tuning): freed
    temporaries are reused across steps, and `threads` host threads (None: the probe's choice,
    printed with its timings)."""
    tuning.tune_host_allocator()
    advice = tuning.openblas_kernel_advice()
    if advice:
        print(f"note: {advice}")
    if threads is None:
        threads, timings = tuning.choose_threads()
        probe = ", ".join(f"{n}: {t * 1e3:.1f} ms" for n, t in timings.items())
        print(f"threads: {threads} (probe step with {probe})")
    tuning.set_threads(threads)


def setup(args):
    """Seed, default device and output folder from the flags; returns the dataset."""
    minienc.manual_seed(args.seed)
    tune_process(args.threads)
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
