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

from common import finish, fit, image_parser, setup
from common import jepa_figures as figures
from common.jepa_runs import WARMUP, curve, held_out_curves, mae_rows

import minienc
from minienc import nn
from minienc.data import BatchIterator, contrastive_augment
from minienc.objectives.jepa import MaskedViewsJEPA
from minienc.objectives.masked_image import random_masking
from minienc.optim import AdamW, Cosine, WarmupCosine
from minienc.train import Trainer


def parse_args():
    parser = image_parser(__doc__, steps=1200, batch_size=128, lr=2e-3)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64, help="ViT width (the predictor: half)")
    parser.add_argument("--depth", type=int, default=4, help="ViT depth (and the predictor's)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-mae", action="store_true", help="skip the side-by-side MAE runs")
    parser.set_defaults(eval_every=100)
    return parser.parse_args()


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
    # masks.png: the masks drawn from the run's stream (as the study's runs drew them), the
    # views from generators of their own
    shown = data.x_train[:8]
    masks = [random_masking(8, vit.num_patches, 1 - jepa.keep, device="cpu")[0] for _ in range(2)]
    pictured = [augment(shown, rng=args.seed + i) for i in range(2)]
    figures.views_picture(f"{args.out}/masks.png", shown, pictured, masks, vit.grid_size,
                          args.patch_size, "MaskedViewsJEPA")

    def embed(images):
        return jepa.embed(standardize(images))
    start = time.process_time()
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    evaluator = held_out_curves(args, data, "JEPA", embed, args.eval_every)
    trainer = Trainer(jepa, opt, out_dir=args.out, schedules=schedules, log_every=10,
                      evaluator=evaluator, eval_every=args.eval_every or None)
    fit(args, trainer, loader, steps)   # --resume continues the run, --overwrite restarts it
    figures.titled_loss(trainer, f"{args.out}/loss.png", "MaskedViewsJEPA")
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
