"""JEPA: a ViT learns by predicting the EMBEDDINGS of hidden patches from visible ones.

    python demos/jepa.py                  # 8x8 digits, 2x2 patches, 1,200 steps (~2 CPU min,
                                          # then ~4 for the MAE runs beside it)
    python demos/jepa.py --no-mae         # without the MAE runs
    python demos/jepa_study.py --preset paper    # I-JEPA as released, and every study knob

Trains MaskedViewsJEPA (minienc/objectives/jepa.py): two augmented views of each digit, each
masked to a random half of its patches; a predictor fills in the target view's embeddings from
the context view's, LeJEPA's SIGReg keeps the embeddings from collapsing (docs/jepa_study.md
says how it was chosen). Beside it MAE (pixels of hidden patches) from the same initial ViT,
for the same steps and for the same training CPU time, with the probe of both over training.
Writes to runs/jepa/: masks.png, curves.png, jepa_vs_mae.png, loss.png, evaluation.png,
embeddings.png, metrics.jsonl, results.json (MAE's runs in mae/ and mae_same_time/).
"""
import copy
import time

import jepa_figures as figures
from common import finish, fit, image_parser, make_trainer, setup

import minienc
from minienc import nn
from minienc.data import BatchIterator, contrastive_augment
from minienc.eval import Evaluator, evaluate
from minienc.objectives.jepa import MaskedViewsJEPA
from minienc.objectives.masked_image import MAE, random_masking
from minienc.optim import AdamW, Cosine, WarmupCosine, param_groups_without_decay

WARMUP = 40 / 300   # I-JEPA's warmup share (40 of 300 epochs); weight decay 0.04 -> 0.4 (cosine)


def parse_args():
    parser = image_parser(__doc__, steps=1200, batch_size=128, lr=2e-3)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64, help="ViT width (the predictor: half)")
    parser.add_argument("--depth", type=int, default=4, help="ViT depth (and the predictor's)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-mae", action="store_true", help="skip the side-by-side MAE runs")
    parser.set_defaults(eval_every=100)
    return parser.parse_args()


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


def train(args, data, name, model, loss, opt, schedules, embed, out, steps, eval_every, after_step=None):
    """Trainer.fit of `loss` (a batch -> its loss terms), then after_step(step / steps) after
    each step (an EMA target's schedule); returns the trainer and its CPUTimed evaluator."""
    evaluator = CPUTimed(Evaluator(embed, data, seed=args.seed)) if eval_every else None
    if evaluator:   # a FIXED subset: an evaluation costs the same on digits and on 60,000 images
        print(f"{name}: held-out curves every {eval_every} steps: {evaluator.evaluator!r}")
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    callbacks = [lambda t: after_step((t.step - 1) / steps)] if after_step else []
    trainer = make_trainer(args, data, loss, opt, models={name: model}, out_dir=out,
                           schedules=schedules, log_every=10, callbacks=callbacks,
                           **(dict(evaluator=evaluator, eval_every=eval_every) if evaluator else {}))
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
    trainer, evaluator = train(args, data, "MAE", mae, lambda images: mae(standardize(images))[0], opt,
                               {"lr": lr}, embed, out, steps, every)
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
        if cpu is not None and n <= steps:
            break
        embed, cpu, runs[f"MAE ({label})"] = train_mae(args, data, copy.deepcopy(random_vit),
                                                      standardize, n, f"{args.out}/{out}")
        rows.append(evaluate(embed, data, name=f"MAE ({label})", **options))
        budgets.append(f"MAE, {label}: {n} steps in {cpu:.0f} s CPU")
    return rows, budgets


def main():
    args = parse_args()
    data = setup(args)
    steps = args.epochs * (len(data.x_train) // args.batch_size) if args.epochs else args.steps
    c, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, in_channels=c,
                               dim=args.dim, depth=args.depth, num_heads=args.heads, weight_init="xavier")
    random_vit = copy.deepcopy(vit)     # the same ViT at the same random initialisation
    standardize = data.standardizer()   # the train pixels' mean and std (I-JEPA's Normalize)
    augment = contrastive_augment()

    def view(images):
        return standardize(augment(images))

    # the objective, its optimizer and its fit
    jepa = MaskedViewsJEPA(vit, predictor_dim=args.dim // 2, predictor_depth=args.depth,
                           augment=view, distributed=args.distributed)
    if args.distributed:
        nn.SyncBatchNorm.convert(jepa)  # the projector's batch norm over the global batch
    opt = AdamW(jepa.param_groups(weight_decay=0.04), lr=args.lr)
    schedules = {"lr": WarmupCosine(args.lr, steps, int(WARMUP * steps), final=1e-6, start=args.lr / 5),
                 "weight_decay": Cosine(0.04, 0.4, steps)}
    shown = data.x_train[:8]
    masks = [random_masking(8, vit.num_patches, 1 - jepa.keep, device="cpu")[0] for _ in range(2)]
    pictured = [augment(shown, rng=args.seed + i) for i in range(2)]   # (rng: the run's stream untouched)
    figures.views_picture(f"{args.out}/masks.png", shown, pictured, masks, vit.grid_size,
                          args.patch_size, "MaskedViewsJEPA")

    def embed(images):
        return jepa.embed(standardize(images))
    start = time.process_time()
    trainer, evaluator = train(args, data, "JEPA", jepa, jepa.loss, opt, schedules, embed, args.out,
                               steps, args.eval_every)
    eval_cpu = evaluator.seconds if evaluator else 0.0
    jepa_cpu = time.process_time() - start - eval_cpu   # training alone
    budgets = [f"JEPA: {steps} steps in {jepa_cpu:.0f} s CPU (+ {eval_cpu:.0f} s for "
               f"{len(trainer.evaluations)} held-out evaluations)"]
    figures.loss_terms(f"{args.out}/curves.png", f"{args.out}/metrics.jsonl", "MaskedViewsJEPA",
                       trainer.evaluations)
    rows, runs = [], {"JEPA": curve(trainer, evaluator)} if evaluator else {}
    if not args.no_mae:
        rows, budgets = mae_rows(args, data, random_vit, standardize, steps, jepa_cpu, runs, budgets)
    if evaluator and len(runs) > 1:
        figures.jepa_vs_mae(f"{args.out}/jepa_vs_mae.png", runs, data.name)
    start = time.perf_counter()
    finish(args, data, "JEPA (pooled)", embed, extra_records=rows,
           random_encoder=lambda x: random_vit(standardize(x)).mean(axis=1),
           params=sum(p.size for g in jepa.param_groups(0.0) for p in g["params"]))
    print(f"final evaluation: {time.perf_counter() - start:.0f} s wall")
    print("budgets:\n  " + "\n  ".join(budgets))


if __name__ == "__main__":
    minienc.manual_seed(0)
    main()
