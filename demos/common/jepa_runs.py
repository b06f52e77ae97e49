"""demos/jepa.py's side-by-side runs: training with CPU-timed held-out curves, and MAE from the
same initial ViT for the same steps and for the same training CPU time (demos/jepa_study.py
uses them too). The JEPA-vs-MAE figure draws what `curve` returns (common/jepa_figures.py)."""
import copy
import time

from minienc.data import BatchIterator
from minienc.eval import Evaluator, evaluate
from minienc.objectives.masked_image import MAE
from minienc.optim import AdamW, WarmupCosine, param_groups_without_decay
from minienc.train import Trainer

from . import jepa_figures as figures
from .runs import fit

WARMUP = 40 / 300   # I-JEPA's warmup share (40 of 300 epochs), for JEPA and MAE alike


class CPUTimed:
    """An evaluator that counts its own CPU seconds (the budgets leave them out) and notes the
    training CPU seconds at which each evaluation happened (jepa_vs_mae.png's x axis)."""

    def __init__(self, evaluator):
        self.evaluator, self.seconds, self.at = evaluator, 0.0, []
        self.start = time.process_time()

    def __call__(self):
        begin = time.process_time()
        self.at.append(begin - self.start - self.seconds)
        try:
            return self.evaluator()
        finally:
            self.seconds += time.process_time() - begin


def held_out_curves(args, data, name, embed, every):
    """A CPUTimed Evaluator of `embed` on a FIXED subset (an evaluation costs the same on digits
    and on 60,000 images), or None when every is 0."""
    if not every:
        return None
    evaluator = CPUTimed(Evaluator(embed, data, seed=args.seed))
    print(f"{name}: held-out curves every {every} steps: {evaluator.evaluator!r}")
    return evaluator


def train(args, data, name, objective, opt, schedules, embed, out, steps, eval_every, models=None):
    """Trainer(objective, opt).fit as demos/jepa.py's (an Objective, or a step function with the
    `models` it trains); returns the trainer and its CPUTimed evaluator (or None)."""
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    evaluator = held_out_curves(args, data, name, embed, eval_every)
    trainer = Trainer(objective, opt, models=models, out_dir=out, schedules=schedules, log_every=10,
                      evaluator=evaluator, eval_every=eval_every or None)
    fit(args, trainer, loader, steps)
    figures.titled_loss(trainer, f"{out}/loss.png", name)
    return trainer, evaluator


def curve(trainer, evaluator):
    """The probe over training: {"step", "cpu_s", "fewshot", "knn"} of each evaluation."""
    done = trainer.evaluations
    return {"step": [e["step"] for e in done], "cpu_s": evaluator.at[-len(done):],
            **{k: [e[k] for e in done] for k in ("fewshot", "knn")}}


def train_mae(args, data, vit, standardize, steps, out):
    """MAE from `vit` with JEPA's batch and lr schedule: its embed, training CPU s and trainer."""
    start = time.process_time()
    # its decoder as wide and deep as the predictor (demos/jepa_study.py may set them)
    width, depth = getattr(args, "pred_dim", args.dim // 2), getattr(args, "pred_depth", args.depth)
    mae = MAE(encoder=vit, decoder_dim=width, decoder_depth=max(depth, 1))
    opt = AdamW(param_groups_without_decay(mae, 0.05), lr=args.lr)
    lr = WarmupCosine(args.lr, steps, int(WARMUP * steps), final=1e-6, start=args.lr / 5)
    embed = (lambda images: mae.embed(standardize(images)))
    every = args.eval_every and max(args.eval_every, steps // 12)
    trainer, evaluator = train(args, data, "MAE", lambda images: mae.loss(standardize(images)), opt,
                               {"lr": lr}, embed, out, steps, every, models={"mae": mae})
    cpu = time.process_time() - start - (evaluator.seconds if evaluator else 0.0)
    return embed, cpu, (curve(trainer, evaluator) if evaluator else None)


def mae_rows(args, data, random_vit, standardize, steps, jepa_cpu, runs, budgets):
    """MAE from the same initial ViT for the same steps and for the same training CPU time (an
    MAE step is cheaper: it gets the steps that fill JEPA's time): their records, their probe
    curves (into `runs`) and budget lines."""
    options = dict(draws=args.draws, seed=args.seed, verbose=False)
    rows, cpu = [], None
    for label, out in (("same steps", "mae"), ("same CPU time", "mae_same_time")):
        n = steps if cpu is None else int(round(steps * jepa_cpu / cpu))
        if cpu is not None and n <= steps:   # (tiny models on a busy machine: timing noise)
            budgets.append(f"MAE, {label}: not run, an MAE step cost no less CPU than a JEPA "
                           f"step here ({n} <= {steps} steps)")
            break
        embed, cpu, runs[f"MAE ({label})"] = train_mae(args, data, copy.deepcopy(random_vit),
                                                      standardize, n, f"{args.out}/{out}")
        rows.append(evaluate(embed, data, name=f"MAE ({label})", **options))
        budgets.append(f"MAE, {label}: {n} steps in {cpu:.0f} s CPU")
    return rows, budgets
