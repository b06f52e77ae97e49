"""The JEPA study: every knob of docs/jepa_study.md's runs, and the presets it compared.

    python demos/jepa_study.py --preset paper     # I-JEPA as released, scaled down, on the
                                                  # 32x32 digit canvas (4x4 patches)
    python demos/jepa_study.py --preset vicreg    # study 1's best: + VICReg's variance terms
    python demos/jepa_study.py                    # --preset small: demos/jepa.py's default
    python demos/jepa_study.py --preset vicreg --no-mae --var-weight 0 --cov-weight 0 \\
        --sigreg-weight 0.02 --sigreg-on context  # a row of the predictor study (2.S1)

Trains minienc.objectives.jepa_study.StudyJEPA, assembled from the flags (its masks, its views,
its target pass and its guards against collapse), with held-out curves while training, then
evaluates it beside the baselines and beside MAE (same steps, same CPU time) as demos/jepa.py
does. Writes to runs/jepa_study/ what demos/jepa.py writes (masks.png draws this run's masks).
"""
import copy
import time

from common import finish, image_parser, setup
from common import jepa_figures as figures
from common.jepa_runs import WARMUP, curve, mae_rows, train

import minienc
from minienc import nn
from minienc.data import RandomResizedCrop, contrastive_augment
from minienc.eval import evaluate
from minienc.objectives.jepa_study import (DEFAULT_SETTINGS, StudyJEPA, augmented_views, halves,
                                           image_views, whole)
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.optim import AdamW, Cosine, WarmupCosine

# The released I-JEPA settings (configs/in1k_vith14_ep300.yaml, src/helper.py), on a small ViT.
PAPER = dict(targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
             context_scale=(0.85, 1.0), min_context=10, cut="raster", loss="smooth_l1",
             target_norm="layer", ema=(0.996, 1.0), weight_decay=(0.04, 0.4), lr=1e-3,
             warmup=WARMUP, crop=(0.3, 1.0), pred_dim=None, pred_depth=None,
             init="trunc_normal", standardize=1, var_weight=0.0, cov_weight=0.0,
             target_encoder="ema", stop_gradient=1, sigreg_weight=0.0, sigreg_on="context",
             target_sees="image", views="mask", sigreg_proj_dim=0, prediction_level="tokens",
             masks="multiblock", mask_keep=0.5,
             # the scaled-down run: a 64-d, 4-block ViT on 4x4-pixel patches of the 32x32 canvas
             data="digits-canvas:32", patch_size=4, batch_size=64, steps=400)
# Study 1's best (run 1.D5; the default until 2026-12-01): I-JEPA with VICReg's
# variance/covariance terms. Departures from PAPER, each measured in docs/jepa_study.md:
VICREG = dict(
    PAPER,
    data="digits", patch_size=2,  # the 8x8 digits on a 4x4 grid: on the 32x32 canvas no setting
                                  # lifted the probe more than 3 points over random init
    batch_size=128, lr=2e-3,      # as demos/mae.py
    steps=1200,                   # with the variance/covariance terms the probe still rises
    min_context=4,                # a 4x4 grid cannot keep 10 context patches besides the targets
    context_scale=(1.0, 1.0),     # the context block is the whole grid (minus the targets),
    cut="random",                 # cut to the batch minimum at random, not in raster order
    init="xavier",                # trunc_normal(0.02) suits 768-value patches, not 4-16-value ones
    crop=(1.0, 1.0),              # no random-resized crop (an 8x8 digit has nothing to spare)
    targets=2,                    # two target blocks leave more context on a small grid
    var_weight=0.01,              # VICReg's variance and covariance terms on the pooled context
    cov_weight=0.01,              # embeddings (from C-JEPA; not in I-JEPA)
    ema=(0.99, 1.0),              # 0.996 suits 100,000s of steps, not 1,200
)
# demos/jepa.py's default (run 2.G8): VICREG's optimiser, grid and init, guarded by LeJEPA
SMALL = dict(VICREG, var_weight=0.0, cov_weight=0.0, **DEFAULT_SETTINGS, masks="halves",
             mask_keep=0.5, views="augment")
PRESETS = {"paper": PAPER, "small": SMALL, "vicreg": VICREG}


def pair(text):
    low, high = (float(v) for v in text.split(","))
    return low, high


def parse_args():
    parser = image_parser(__doc__, epochs=None, batch_size=None, lr=None, data=None, steps=None)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    for flag, kind, text in (
            ("--patch-size", int, None), ("--pred-dim", int, "predictor width (default: dim / 2)"),
            ("--pred-depth", int, "predictor depth (default: the encoder's; 0 = no predictor)"),
            ("--targets", int, "target blocks per image"), ("--target-scale", pair, "e.g. 0.15,0.2"),
            ("--target-aspect", pair, "e.g. 0.75,1.5"), ("--context-scale", pair, "1,1 = whole grid"),
            ("--min-context", int, None), ("--ema", pair, "EMA momentum start,end (linear)"),
            ("--weight-decay", pair, "start,end (cosine)"), ("--warmup", float, "a share of the steps"),
            ("--crop", pair, "RandomResizedCrop scale range; 1,1 = no crop"),
            ("--var-weight", float, "VICReg's variance term on the pooled context (0 = off)"),
            ("--cov-weight", float, "VICReg's covariance term (0 = off)"),
            ("--sigreg-weight", float, "SIGReg's weight (0 = off)"),
            ("--sigreg-proj-dim", int, "a BatchNorm-MLP projector to this width before SIGReg"),
            ("--mask-keep", float, "with --masks halves or whole: the share of patches kept")):
        parser.add_argument(flag, type=kind, help=text)
    for flag, choices, text in (
            ("--cut", ["raster", "random"], None), ("--loss", ["smooth_l1", "l2"], None),
            ("--target-norm", ["layer", "layer+batch", "none"], None),
            ("--init", ["trunc_normal", "xavier"], "ViT weight init"),
            ("--standardize", [0, 1], "standardise pixels (I-JEPA's Normalize)"),
            ("--target-encoder", ["ema", "shared"], "an EMA copy, or the context encoder itself"),
            ("--stop-gradient", [0, 1], "with a shared encoder: targets as constants (1) or not"),
            ("--sigreg-on", ["context", "target", "tokens", "projection", "views"],
             "what SIGReg tests (minienc/objectives/jepa_study.py)"),
            ("--prediction-level", ["tokens", "image"], "each target patch, or pooled per image"),
            ("--target-sees", ["image", "targets"], "the whole image or the target patches only"),
            ("--masks", ["multiblock", "halves", "whole"], "I-JEPA's blocks; two random halves; "
             "a random half as context and the whole grid as target"),
            ("--views", ["mask", "augment"], "one image, or two augmentations of it")):
        parser.add_argument(flag, choices=choices, type=int if choices == [0, 1] else str, help=text)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-mae", action="store_true", help="skip the side-by-side MAE runs")
    parser.set_defaults(eval_every=100)
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.pred_dim = args.pred_dim or args.dim // 2
    args.pred_depth = args.depth if args.pred_depth is None else args.pred_depth
    return args


def build(args, vit, standardize):
    """StudyJEPA from the flags: its masks, its views, its target pass and its guards."""
    n = vit.num_patches
    masks = {"multiblock": lambda: MultiBlockMaskSampler(
                 vit.grid_size, args.targets, args.target_scale, args.target_aspect,
                 args.context_scale, min_context=args.min_context, cut=args.cut),
             "halves": lambda: halves(n, args.mask_keep), "whole": lambda: whole(n, args.mask_keep)}
    crop = None if args.crop == (1.0, 1.0) else RandomResizedCrop(scale=args.crop)
    views = augmented_views(contrastive_augment(), standardize) if args.views == "augment" \
        else image_views(standardize, crop)
    return StudyJEPA(vit, predictor_dim=args.pred_dim, predictor_depth=args.pred_depth,
                     masks=masks[args.masks](), views=views, loss=args.loss,
                     target_norm=None if args.target_norm == "none" else args.target_norm,
                     variance_weight=args.var_weight, covariance_weight=args.cov_weight,
                     target_encoder=args.target_encoder, stop_gradient=bool(args.stop_gradient),
                     sigreg_weight=args.sigreg_weight, sigreg_on=args.sigreg_on,
                     target_sees=args.target_sees, sigreg_proj_dim=args.sigreg_proj_dim,
                     prediction_level=args.prediction_level, momentum=args.ema,
                     distributed=args.distributed)


def main():
    args = parse_args()
    data = setup(args)
    steps = args.epochs * (len(data.x_train) // args.batch_size) if args.epochs else args.steps
    args.steps = steps
    c, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, in_channels=c,
                               dim=args.dim, depth=args.depth, num_heads=args.heads,
                               weight_init=args.init)
    random_vit = copy.deepcopy(vit)
    standardize = data.standardizer() if args.standardize else (lambda images: images)
    print(f"ViT {args.dim}d x {args.depth} on a {vit.grid_size} grid, predictor {args.pred_dim}d "
          f"x {args.pred_depth}; preset {args.preset}")
    jepa = build(args, vit, standardize)
    print(jepa.masks if args.masks == "multiblock" else f"masks: {args.masks}, keep {args.mask_keep:.0%}")
    if args.distributed:
        nn.SyncBatchNorm.convert(jepa)   # SIGReg's projector normalises the global batch
    opt = AdamW(jepa.param_groups(args.weight_decay[0]), lr=args.lr)
    schedules = {"lr": WarmupCosine(args.lr, steps, int(args.warmup * steps), final=1e-6, start=args.lr / 5),
                 "weight_decay": Cosine(*args.weight_decay, steps)}
    context, targets = jepa.masks(8)   # (from the run's stream, as the study's runs drew them)
    figures.blocks_picture(f"{args.out}/masks.png", data.x_train[:8], context, targets,
                           args.patch_size, f"StudyJEPA ({args.preset}, {args.masks} masks)")

    def embed(images):
        return jepa.embed(standardize(images))
    start = time.process_time()
    trainer, evaluator = train(args, data, "JEPA", jepa, opt, schedules, embed, args.out, steps,
                               args.eval_every)   # (the Trainer calls jepa.after_step: the EMA)
    eval_cpu = evaluator.seconds if evaluator else 0.0
    jepa_cpu = time.process_time() - start - eval_cpu
    name = "JEPA (pooled)" if args.target_encoder == "shared" else "I-JEPA (target, pooled)"
    budgets = [f"{name.split()[0]}: {steps} steps in {jepa_cpu:.0f} s CPU (+ {eval_cpu:.0f} s for "
               f"{len(trainer.evaluations)} held-out evaluations)"]
    figures.loss_terms(f"{args.out}/curves.png", f"{args.out}/metrics.jsonl", f"StudyJEPA ({args.preset})",
                       trainer.evaluations, note=figures.RISE if args.sigreg_on == "views" else None)
    # the context encoder (the ViT the optimizer trained) on whole images: how far the EMA
    # target encoder, which the first row evaluates, trails it
    rows = [] if args.target_encoder == "shared" else [evaluate(
        lambda images: vit(standardize(images)).mean(axis=1), data, name="I-JEPA context encoder",
        draws=args.draws, seed=args.seed, verbose=False)]
    runs = {"JEPA": curve(trainer, evaluator)} if evaluator else {}
    if not args.no_mae:
        mae, budgets = mae_rows(args, data, random_vit, standardize, steps, jepa_cpu, runs, budgets)
        rows += mae
    if evaluator and len(runs) > 1:
        figures.jepa_vs_mae(f"{args.out}/jepa_vs_mae.png", runs, data.name)
    finish(args, data, name, embed, extra_records=rows,
           random_encoder=lambda x: random_vit(standardize(x)).mean(axis=1),
           params=sum(p.size for g in jepa.param_groups(0.0) for p in g["params"]))
    print("budgets:\n  " + "\n  ".join(budgets))


if __name__ == "__main__":
    minienc.manual_seed(0)
    main()
