"""A demo's run, from its set-up to its report: the seed, device, dataset and output folder
(set-up, config.json), the Trainer's options and fit (--resume, --overwrite), the evaluation
report (results.json), the pictures every demo draws, and the set-up of several processes
(--distributed).
"""
import datetime
import json
import os
import platform
import subprocess
import sys

import minienc
from minienc import backend
from minienc import data as D
from minienc import tuning
from minienc.eval import (Evaluator, baseline_records, encode, evaluate, plot_embeddings,
                          plot_image_grid, print_table)
from minienc.progress import MetricsFile

RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "results.json")   # a folder with one holds a run
# flags that may change between a run and its --resume without changing its numbers
RESUME_MAY_CHANGE = {"resume", "overwrite", "device", "threads", "eval_every", "out"}


def start_process(args, seed_offset=0):
    """The process-wide set-up every demo starts with: the seed (--seed + seed_offset), the CPU
    settings of minienc.tuning (freed temporaries reused across steps; --threads host threads,
    without it the probe's choice, printed with its timings) and the default device (--device,
    then set to the one in use)."""
    minienc.manual_seed(args.seed + seed_offset)
    tuning.tune_host_allocator()
    advice = tuning.openblas_kernel_advice()
    if advice:
        print(f"note: {advice}")
    threads = args.threads
    if threads is None:
        threads, timings = tuning.choose_threads()
        probe = ", ".join(f"{n}: {t * 1e3:.1f} ms" for n, t in timings.items())
        print(f"threads: {threads} (probe step with {probe})")
    tuning.set_threads(threads)
    if args.device:
        minienc.set_device(args.device)
    args.device = minienc.get_device()


# ----- set-up: seed, device, folder, data, config.json ---------------------------------------------

def demo_name():
    return os.path.splitext(os.path.basename(sys.argv[0]))[0]


def start_run(args):
    """Seed, host threads, default device and output folder from the flags. Refuses (exits with
    the reason) a folder that already holds a run unless --resume or --overwrite says what to
    do; --overwrite removes the old run's files first (old_run_files). With
    --distributed, setup_distributed first (and each rank's random stream seeded apart)."""
    setup_distributed(args)
    start_process(args, seed_offset=_rank())
    if args.out is None:
        args.out = os.path.join("runs", demo_name())
    if args.resume and args.overwrite:
        sys.exit(f"{demo_name()}: --resume continues the run in {args.out}, --overwrite starts it "
                 f"again: choose one")
    # rank 0's folder decides, and every rank refuses with it: one rank leaving alone would
    # leave the others waiting for it
    from minienc import distributed
    refusal = _open_out(args) if distributed.is_main() else None
    refusal = distributed.engine().bcast_object(refusal)
    if refusal:
        sys.exit(refusal if distributed.is_main() else 1)


def _open_out(args):
    """Claim --out for this process and apply --overwrite; the reason to refuse it, or None."""
    from minienc.run_folder import claim_folder
    try:
        claim_folder(args.out, demo_name())
    except OSError as error:   # another process runs there, or --out is a file
        return str(error)
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(args.out, name))]
    if found and args.overwrite:
        old = old_run_files(args.out)
        for name in old:
            os.remove(os.path.join(args.out, name))
        print(f"--overwrite: removed the old run's {', '.join(old)} from {args.out}")
    elif found and not args.resume:
        finished = "results.json" in found
        return (f"{demo_name()}: {args.out} already holds a {'finished' if finished else 'stopped'} "
                f"run ({', '.join(found)}). Add --resume to continue it"
                f"{' (it evaluates the trained model again)' if finished else ''}, --overwrite "
                f"to start it again, or choose another --out.")
    return None


def old_run_files(out):
    """What a run left in `out`, which --overwrite removes so that no old picture stays beside the
    new run's: RUN_FILES, config.json, gauges.json and every picture (*.png, *.dot). Other files
    stay (compare.py's log.txt, anything of the user's)."""
    return sorted(name for name in os.listdir(out)
                  if name in RUN_FILES + ("config.json", "gauges.json") or name.endswith((".png", ".dot")))


def setup(args):
    """start_run, then the dataset (--data, cut to --max-train / --max-test) and config.json.
    Returns the dataset."""
    start_run(args)
    try:
        data = D.load_dataset(args.data, seed=args.seed, max_train=args.max_train,
                              max_test=args.max_test, image_size=getattr(args, "image_size", None))
    except (OSError, ValueError) as error:   # a folder without the files, a corrupt file: one line
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)   # as argparse's
        sys.exit(2)
    write_config(args, data=dict(name=data.name, train=len(data.x_train), test=len(data.x_test),
                                 image_shape=list(data.image_shape), classes=data.num_classes))
    print(f"data: {data}   device: {args.device}   output: {args.out}")
    return data


def versions():
    """What produced a run: Python, NumPy, minienc (and its git commit), CuPy, the machine."""
    found = {"python": platform.python_version(), "numpy": backend.numpy.__version__,
             "minienc": minienc.__version__, "platform": platform.platform(),
             "cpus": os.cpu_count()}
    try:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")   # the checkout
        commit = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            found["git"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    if backend.cuda_available():
        cupy = backend.cupy()
        found["cupy"] = cupy.__version__
        found["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return found


def write_config(args, **facts):
    """<out>/config.json: the flags, seed, device, versions and command of the run (and `facts`,
    such as the data's size). On --resume the first run's file is kept; the resume is appended
    to its "resumed" list, and flags that changed are named (they may change the numbers); that
    record is written by fit() once the checkpoint has loaded, so a resume that fails leaves the
    file as it was. A config.json that cannot be read stops the demo, naming it."""
    path = os.path.join(args.out, "config.json")
    flags = json.loads(json.dumps(vars(args), default=str))
    now = datetime.datetime.now().isoformat(timespec="seconds")
    command = " ".join(["python", *sys.argv])
    if args.resume and os.path.exists(path):
        try:
            with open(path) as f:
                config = json.load(f)
            before = config["flags"]
        except (ValueError, KeyError, TypeError) as error:
            sys.exit(f"{demo_name()}: {path} is damaged ({type(error).__name__}: {error}); the "
                     f"checkpoint does not need it: move it aside and --resume again (a new one "
                     f"is written), or restore it")
        changed = {k: [before.get(k), v] for k, v in flags.items()
                   if before.get(k) != v and k not in RESUME_MAY_CHANGE}
        if changed:
            print(f"--resume with flags that differ from {path} (the numbers may differ from an "
                  f"uninterrupted run): " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        config.setdefault("resumed", []).append({"at": now, "command": command, "changed": changed})
        _RESUME_RECORDS[path] = config   # written by fit() once the checkpoint has loaded
        return path
    else:
        config = {"demo": demo_name(), "command": command, "started": now, "flags": flags,
                  "seed": args.seed, "device": args.device, "versions": versions(), **facts}
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


_RESUME_RECORDS = {}   # config.json path -> its content with this --resume recorded


def _write_resume_records(trainer=None):
    """Write the config.json that write_config prepared for a --resume (a Trainer callback:
    the first step after the checkpoint loaded, or the end of a run already finished)."""
    while _RESUME_RECORDS:
        path, config = _RESUME_RECORDS.popitem()
        with open(path, "w") as f:
            json.dump(config, f, indent=1)


def _quiet_interrupt(kind, value, traceback):
    """Ctrl-C ends a demo with one line, not a traceback (the Trainer has saved and said so)."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"{demo_name()}: stopped; the same command with --resume continues it",
              file=sys.stderr)
        return
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = _quiet_interrupt


# ----- training ------------------------------------------------------------------------------------

def total_steps(args, loader):
    """The run's optimizer steps: --epochs passes over `loader` when given, else --steps."""
    return args.epochs * len(loader) if getattr(args, "epochs", None) else args.steps


def run_options(args, data=None, embed=None, **options):
    """A demo's Trainer options: `options` (schedules, log_every, callbacks, ...), the run's
    folder (--out) and, with --eval-every N, an evaluation of `embed` on a held-out subset of
    `data` every N steps."""
    options.setdefault("out_dir", args.out)
    if getattr(args, "eval_every", 0) and embed is not None:
        options.update(evaluator=Evaluator(embed, data, seed=args.seed), eval_every=args.eval_every)
    return options


def fit(args, trainer, loader, steps):
    """trainer.fit for `steps` steps, continuing the run with --resume, restarting it with
    --overwrite (config.json records the resume once the checkpoint has loaded). Returns the
    Trainer."""
    trainer.callbacks.insert(0, _write_resume_records)
    trainer.fit(loader, steps=steps, resume=args.resume, overwrite=args.overwrite)
    _write_resume_records()
    return trainer


# ----- the report ----------------------------------------------------------------------------------

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


def finish(args, data, name, encoder, random_encoder=None, **report_options):
    """The end of every image demo: the figure of the test embeddings (embeddings.png: PCA and
    t-SNE side by side), then `report`'s table and results.json. Returns the records."""
    if _rank():
        return []   # rank 0 alone draws and evaluates
    path = plot_embeddings(encode(encoder, data.x_test), data.y_test,
                           os.path.join(args.out, "embeddings.png"),
                           title=f"{name}: test embeddings", tsne=True, seed=args.seed)
    print("saved", path)
    return report(args, data, name, encoder, random_encoder, **report_options)


def _parameter_count(encoder):
    """Parameters of the trained model behind `encoder` (a Module, or a bound method of one)."""
    owner = getattr(encoder, "__self__", encoder)
    count = getattr(owner, "num_parameters", None)
    return int(count()) if callable(count) else None


def _training_seconds(out):
    """Wall-clock seconds of the run's training loop (its held-out evaluations left out), as
    the Trainer logged them."""
    try:
        last = MetricsFile(os.path.join(out, "metrics.jsonl")).read()[-1]
        return round(last["elapsed_s"] - last.get("eval_s", 0.0), 1)
    except (OSError, IndexError, KeyError, ValueError):
        return None


# ----- pictures ------------------------------------------------------------------------------------

def display_batch(data, n, device=None):
    """n test images, the first of each class in label order first, as a tensor on `device`,
    and their labels."""
    first = {}
    for i, label in enumerate(data.y_test.tolist()):
        first.setdefault(label, i)
    picked = [first[label] for label in sorted(first)][:n]
    picked += [i for i in range(len(data.y_test)) if i not in first.values()][:n - len(picked)]
    return minienc.tensor(data.x_test[picked], device=device), data.y_test[picked].tolist()


def save_grid(args, rows, titles, name, title):
    path = plot_image_grid(rows, os.path.join(args.out, name), row_titles=titles, title=title)
    print(f"saved {path}")
    return path


# ----- several processes (minienc.distributed) --------------------------------------------------

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
