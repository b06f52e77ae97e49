"""JEPA: a ViT learns by predicting the EMBEDDINGS of hidden patches from a visible context.

    python demos/jepa.py                      # the predictor study's best (docs/jepa_study.md):
                                              # 8x8 digits, 2x2 patches, 1,200 steps, guarded by
                                              # SIGReg (~2 CPU min, then ~4 for the MAE rows)
    python demos/jepa.py --preset vicreg      # the previous default: VICReg's variance terms
    python demos/jepa.py --preset paper       # the released I-JEPA settings, scaled down, on the
                                              # 32x32 digit canvas (4x4 patches)
    python demos/jepa.py --data digits-canvas:32 --patch-size 4   # the default on the canvas
    python demos/jepa.py --no-mae             # skip the side-by-side MAE runs

Trains the context encoder and predictor (minienc/objectives/jepa.py; every guard against
collapse is a flag, see --help), with held-out RankMe, embedding std and 5-shot curves on a fixed
subset while training, then evaluates the (target) encoder, average-pooled, beside the baselines
(raw pixels, PCA, the SAME ViT at its random initialisation) and beside MAE trained from the same
ViT for the same number of steps and for the same training CPU time (both budgets printed).
Writes to runs/jepa/: masks.png (sampled context and target patches), curves.png (the loss
terms and the held-out curves), embeddings.png, results.json, metrics.jsonl.
"""
import copy
import time

from common import finish, fit, image_parser, make_trainer, setup

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, RandomResizedCrop, contrastive_augment
from minienc.eval import Evaluator, evaluate, plot_curves, plot_image_grid
from minienc.objectives.jepa import IJEPA, LEJEPA_VIEWS
from minienc.objectives.masked_image import MAE, random_masking
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.optim import AdamW, Cosine, LinearSchedule, WarmupCosine, param_groups_without_decay
from minienc.progress import MetricsFile

# The released I-JEPA settings (configs/in1k_vith14_ep300.yaml, src/helper.py), on a small ViT.
PAPER = dict(targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
             context_scale=(0.85, 1.0), min_context=10, cut="raster", loss="smooth_l1",
             target_norm="layer", ema=(0.996, 1.0), weight_decay=(0.04, 0.4), lr=1e-3,
             warmup=40 / 300, crop=(0.3, 1.0), pred_dim=None, pred_depth=None,
             init="trunc_normal", standardize=1, var_weight=0.0, cov_weight=0.0,
             target_encoder="ema", stop_gradient=1, sigreg_weight=0.0, sigreg_on="context",
             target_sees="image", views="mask", sigreg_proj_dim=0, prediction_level="tokens",
             masks="multiblock", mask_keep=0.5,
             # the scaled-down run: a 64-d, 4-block ViT on 4x4-pixel patches of the 32x32 canvas
             data="digits-canvas:32", patch_size=4, batch_size=64, steps=400)
# The previous default (docs/jepa_study.md, study 1, run 1.D5): I-JEPA with
# VICReg's variance/covariance terms. Departures from PAPER, each measured there:
VICREG = dict(
    PAPER,
    data="digits", patch_size=2,  # the 8x8 digits on a 4x4 grid: on the 32x32 canvas no setting
                                  # lifted the probe more than 3 points over random init
    batch_size=128, lr=2e-3,      # as demos/mae.py
    steps=1200,                   # with the variance/covariance terms the probe still rises
                                  # at 1,200 steps (without them it peaks near 600, then falls)
    min_context=4,                # a 4x4 grid cannot keep 10 context patches besides the targets
    context_scale=(1.0, 1.0),     # the context block is the whole grid (minus the targets): on a
    cut="random",                 # small grid the paper's 85-100% block, cut to the batch minimum
                                  # in raster order, leaves a few patches from the top rows
    init="xavier",                # trunc_normal(0.02) suits 768-value patches; on 4-16-value patches
                                  # the content is ~1/10 of the position embedding at init
    crop=(1.0, 1.0),              # no random-resized crop (an 8x8 digit has nothing to spare)
    targets=2,                    # two target blocks leave more context on a small grid
    var_weight=0.01,              # VICReg's variance and covariance terms on the pooled context
    cov_weight=0.01,              # embeddings (from C-JEPA; not in I-JEPA): without them the
                                  # embeddings collapse onto position (RankMe 2.8 -> 1.2)
    ema=(0.99, 1.0),              # 0.996 suits 100,000s of steps; in 1,200 the target encoder
                                  # would keep 1/11 of its random init (prod m = exp(-2.4); at
                                  # 0.99: exp(-6)) and lag the context encoder by ~250 steps
)
# The default: the predictor study's best (docs/jepa_study.md, run 2.G8), VICREG's optimiser,
# grid and init with the collapse guarded by LeJEPA instead of VICReg's terms:
SMALL = dict(
    VICREG,
    var_weight=0.0, cov_weight=0.0,   # no VICReg terms
    **LEJEPA_VIEWS,                   # a shared encoder, stop-gradient targets, LeJEPA between
                                      # the views (minienc/objectives/jepa.py says why each)
    masks="halves", mask_keep=0.5,    # the context view keeps a random half of the patches, the
                                      # target view another half: the predictor fills in the
                                      # target view's embeddings from the context view's
    views="augment",                  # and each view is its own augmentation of the digit
)
PRESETS = {"paper": PAPER, "small": SMALL, "vicreg": VICREG}


def pair(text):
    low, high = (float(v) for v in text.split(","))
    return low, high


def parse_args():
    parser = image_parser(__doc__, epochs=None, batch_size=None, lr=None, data=None)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--steps", type=int, help="optimizer steps (--epochs N: N passes instead)")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    study = parser.add_argument_group("study knobs (default: the preset's value)")
    study.add_argument("--pred-dim", type=int, help="predictor width (preset: dim / 2)")
    study.add_argument("--pred-depth", type=int, help="predictor depth (preset: the encoder's; "
                       "0 = no predictor: the pooled context predicts the pooled targets)")
    study.add_argument("--targets", type=int, help="target blocks per image")
    study.add_argument("--target-scale", type=pair, help="e.g. 0.15,0.2")
    study.add_argument("--target-aspect", type=pair, help="e.g. 0.75,1.5")
    study.add_argument("--context-scale", type=pair, help="e.g. 0.85,1.0 (1,1 = whole grid)")
    study.add_argument("--min-context", type=int)
    study.add_argument("--cut", choices=["raster", "random"])
    study.add_argument("--loss", choices=["smooth_l1", "l2"])
    study.add_argument("--target-norm", choices=["layer", "layer+batch", "none"])
    study.add_argument("--ema", type=pair, help="EMA momentum start,end (linear)")
    study.add_argument("--weight-decay", type=pair, help="start,end (cosine)")
    study.add_argument("--warmup", type=float, help="warmup as a fraction of the steps")
    study.add_argument("--crop", type=pair, help="RandomResizedCrop scale range; 1,1 = no crop")
    study.add_argument("--init", choices=["trunc_normal", "xavier"], help="ViT weight init")
    study.add_argument("--standardize", type=int, choices=[0, 1],
                       help="standardise pixels with the train mean/std (I-JEPA's Normalize)")
    study.add_argument("--var-weight", type=float, help="VICReg variance term on the pooled context "
                       "embeddings (not in I-JEPA; 0 = off)")
    study.add_argument("--cov-weight", type=float, help="VICReg covariance term (0 = off)")
    study.add_argument("--target-encoder", choices=["ema", "shared"],
                       help="the target pass: an EMA copy (I-JEPA) or the context encoder itself")
    study.add_argument("--stop-gradient", type=int, choices=[0, 1],
                       help="with a shared encoder: targets as constants (1) or with a gradient (0)")
    study.add_argument("--sigreg-weight", type=float, help="SIGReg's weight (0 = off)")
    study.add_argument("--sigreg-on", choices=["context", "target", "tokens", "projection", "views"],
                       help="SIGReg on the pooled context, the pooled target pass, every context token, or "
                       "projection: prediction and SIGReg both in the projector's space, or views: "
                       "LeJEPA's loss between the pooled context and target views, beside the predictor's")
    study.add_argument("--sigreg-proj-dim", type=int,
                       help="a BatchNorm-MLP projector to this width before SIGReg (0 = none)")
    study.add_argument("--prediction-level", choices=["tokens", "image"],
                       help="predict each target patch, or each image's target patches pooled")
    study.add_argument("--target-sees", choices=["image", "targets"],
                       help="the target pass sees the whole image or only the target patches")
    study.add_argument("--masks", choices=["multiblock", "halves", "whole"],
                       help="I-JEPA's blocks; halves: two independent random subsets of the patches "
                            "(context and target view, each keeping --mask-keep of them); whole: a "
                            "random --mask-keep of the patches as context, every patch as the target")
    study.add_argument("--mask-keep", type=float, help="with --masks halves")
    study.add_argument("--views", choices=["mask", "augment"],
                       help="mask: context and targets from one image; augment: the target pass "
                            "sees a second augmentation of it")
    parser.set_defaults(eval_every=100)
    parser.add_argument("--no-mae", action="store_true", help="skip the side-by-side MAE runs")
    parser.add_argument("--mae-budget", choices=["steps", "both"], default="both",
                        help="MAE at the same steps, or also at the same training CPU time")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.pred_dim = args.pred_dim or args.dim // 2
    args.pred_depth = args.depth if args.pred_depth is None else args.pred_depth
    return args


def make_vit(args, data):
    _, size, _ = data.image_shape
    return nn.VisionTransformer(image_size=size, patch_size=args.patch_size,
                                in_channels=data.image_shape[0], dim=args.dim,
                                depth=args.depth, num_heads=args.heads, weight_init=args.init)


def mask_picture(images, context, targets, patch_size, path, title):
    """Rows: the images; the context the encoder sees (the rest dimmed); the target blocks, one
    colour per block, over the dimmed image."""
    np = backend.numpy
    pixels = backend.to_host(images)
    grey = pixels.mean(axis=1)                 # the targets' tint is drawn over the luminance
    n, size, _ = grey.shape
    grid = size // patch_size

    def upscale(mask):  # (n, N) per patch -> (n, size, size) per pixel
        return mask.reshape(n, grid, grid).repeat(patch_size, 1).repeat(patch_size, 2)

    seen = np.zeros((n, grid * grid), bool)
    seen[np.arange(n)[:, None], context] = True
    rgb = pixels if pixels.shape[1] == 3 else np.repeat(grey[:, None], 3, axis=1)
    context_row = rgb * np.where(upscale(seen), 1.0, 0.2)[:, None]
    colours = np.array([[1, 0.2, 0.2], [0.2, 1, 0.2], [0.3, 0.5, 1], [1, 0.9, 0.2], [1, 0.3, 1]])
    target_row = rgb * 0.35
    for i in range(targets.shape[1]):
        block = np.zeros((n, grid * grid), bool)
        block[np.arange(n)[:, None], targets[:, i]] = True
        tint = 0.35 + 0.65 * grey[:, None] * colours[i % len(colours)][None, :, None, None]
        target_row = np.where(upscale(block)[:, None], tint, target_row)
    plot_image_grid([pixels, context_row.astype(np.float32), target_row.astype(np.float32)], path,
                    row_titles=["image", "context", "targets"],
                    title=f"{title}: {context.shape[1]} context patches, "
                          f"{targets.shape[1]} x {targets.shape[2]} target patches")


def train_jepa(args, data, vit, standardize):
    grid = vit.grid_size
    sampler = MultiBlockMaskSampler(grid, args.targets, args.target_scale, args.target_aspect,
                                    args.context_scale, min_context=args.min_context, cut=args.cut)
    print(sampler if args.masks == "multiblock" else f"two random views of {args.mask_keep:.0%} of the patches")

    def masks(batch):
        if args.masks == "multiblock":
            return sampler(batch)
        n = vit.num_patches
        context = random_masking(batch, n, 1 - args.mask_keep, device="cpu")[0]
        if args.masks == "whole":   # one target block: the whole grid
            return context, backend.numpy.broadcast_to(backend.numpy.arange(n), (batch, 1, n))
        return context, random_masking(batch, n, 1 - args.mask_keep, device="cpu")[0][:, None, :]
    jepa = IJEPA(vit, predictor_dim=args.pred_dim, predictor_depth=args.pred_depth,
                 loss=args.loss, target_norm=None if args.target_norm == "none" else args.target_norm,
                 variance_weight=args.var_weight, covariance_weight=args.cov_weight,
                 target_encoder=args.target_encoder, stop_gradient=bool(args.stop_gradient),
                 sigreg_weight=args.sigreg_weight, sigreg_on=args.sigreg_on,
                 target_sees=args.target_sees, sigreg_proj_dim=args.sigreg_proj_dim,
                 prediction_level=args.prediction_level, distributed=args.distributed)
    if args.distributed:
        nn.SyncBatchNorm.convert(jepa)   # SIGReg's projector normalises the global batch
    opt = AdamW(jepa.param_groups(args.weight_decay[0]), lr=args.lr)
    steps = args.steps
    schedules = {
        # I-JEPA warms up from lr / 5 (start_lr 2e-4 for lr 1e-3) and ends at 1e-6
        "lr": WarmupCosine(args.lr, steps, int(args.warmup * steps), final=1e-6, start=args.lr / 5),
        "weight_decay": Cosine(*args.weight_decay, steps),
        "ema_momentum": LinearSchedule(*args.ema, steps),
    }
    crop = None if args.crop == (1.0, 1.0) else RandomResizedCrop(scale=args.crop)
    augment = contrastive_augment()
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    def embed(images):
        return jepa.embed(standardize(images))

    def step_fn(images):
        target_images = None
        if args.views == "augment":   # a second augmented view for the target pass
            target_images = standardize(augment(images))
            images = augment(images)
        elif crop is not None:
            images = crop(images)
        context, targets = masks(images.shape[0])
        # each term goes to metrics.jsonl
        return jepa.terms(standardize(images), context, targets, target_images)

    def after_step(trainer):
        jepa.update_target(trainer.values["ema_momentum"])

    context, targets = masks(8)
    title = {"multiblock": "I-JEPA's multi-block masks", "halves": "two random halves",
             "whole": "a random context, the whole grid as target"}
    mask_picture(data.x_train[:8], context, targets, args.patch_size, f"{args.out}/masks.png",
                 title[args.masks])
    # held-out curves (k-NN, 5-shot, RankMe, std) on a FIXED subset of 1,000 train / 500 test
    # images, so an evaluation costs the same on digits and on 60,000 images
    evaluator = CPUTimed(Evaluator(embed, data, seed=args.seed)) if args.eval_every else None
    if evaluator:
        print(f"held-out curves every {args.eval_every} steps: {evaluator.evaluator!r}")
    trainer = make_trainer(args, data, step_fn, opt, models={"jepa": jepa}, schedules=schedules,
                           callbacks=[after_step], log_every=10,
                           **(dict(evaluator=evaluator, eval_every=args.eval_every) if evaluator else {}))
    fit(args, trainer, loader, steps)
    return embed, trainer, evaluator


class CPUTimed:
    """An evaluator that counts the CPU seconds it takes, so the budgets can leave them out."""

    def __init__(self, evaluator):
        self.evaluator, self.seconds = evaluator, 0.0

    def __call__(self):
        start = time.process_time()
        try:
            return self.evaluator()
        finally:
            self.seconds += time.process_time() - start


def logged_terms(metrics_path):
    """Each loss term the Trainer logged (prediction, invariance, SIGReg, variance), as curves."""
    names = {"prediction": "prediction loss", "invariance": "invariance term",
             "sigreg": "SIGReg term", "variance": "variance term"}
    return {names[key]: curve for key, curve in MetricsFile(metrics_path).curves(names).items()}


def train_mae(args, data, vit, standardize, steps, out):
    """MAE with the same ViT, batch and lr schedule for `steps`: pixel-space reconstruction.
    Returns its embedding function and its training CPU seconds."""
    start = time.process_time()
    mae = MAE(encoder=vit, decoder_dim=args.pred_dim, decoder_depth=max(args.pred_depth, 1))
    opt = AdamW(param_groups_without_decay(mae, 0.05), lr=args.lr)
    schedules = {"lr": WarmupCosine(args.lr, steps, int(args.warmup * steps), final=1e-6,
                                    start=args.lr / 5)}
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    trainer = make_trainer(args, data, lambda images: mae(standardize(images))[0], opt,
                           models={"mae": mae}, schedules=schedules, log_every=10,
                           out_dir=f"{args.out}/{out}")
    fit(args, trainer, loader, steps)
    return (lambda images: mae.embed(standardize(images))), time.process_time() - start


def mae_rows(args, data, random_vit, standardize, jepa_cpu):
    """MAE from the same initial ViT, at the same number of steps and (with --mae-budget both)
    at the same training CPU time: an MAE step is cheaper (its encoder sees a quarter of the
    patches), so it gets the steps that fill JEPA's time. Returns the records and budget lines."""
    options = dict(draws=args.draws, seed=args.seed, verbose=False)
    embed, cpu = train_mae(args, data, copy.deepcopy(random_vit), standardize, args.steps, "mae")
    rows = [evaluate(embed, data, name="MAE (same steps)", **options)]
    budgets = [f"MAE, same steps: {args.steps} steps in {cpu:.0f} s CPU"]
    if args.mae_budget == "both":
        steps = int(round(args.steps * jepa_cpu / cpu))
        if steps > args.steps:
            embed, cpu = train_mae(args, data, copy.deepcopy(random_vit), standardize, steps, "mae_same_time")
            rows.append(evaluate(embed, data, name="MAE (same CPU time)", **options))
            budgets.append(f"MAE, same CPU time: {steps} steps in {cpu:.0f} s CPU")
    return rows, budgets


def main():
    args = parse_args()
    data = setup(args)
    if args.epochs:
        args.steps = args.epochs * (len(data.x_train) // args.batch_size)
    vit = make_vit(args, data)
    random_vit = copy.deepcopy(vit)   # the same encoder at the same random initialisation
    print(f"ViT {args.dim}d x {args.depth} on a {vit.grid_size} grid, predictor "
          f"{args.pred_dim}d x {args.pred_depth}; preset {args.preset}")
    start = time.process_time()
    # I-JEPA's Normalize (the train pixels' mean and std); the identity with --standardize 0
    standardize = data.standardizer() if args.standardize else (lambda images: images)
    jepa_embed, trainer, evaluator = train_jepa(args, data, vit, standardize)
    eval_cpu = evaluator.seconds if evaluator else 0.0
    jepa_cpu = time.process_time() - start - eval_cpu   # training alone
    name = "JEPA (pooled)" if args.target_encoder == "shared" else "I-JEPA (target, pooled)"
    budgets = [f"{name.split()[0]}: {args.steps} steps in {jepa_cpu:.0f} s CPU (+ {eval_cpu:.0f} s for "
               f"{len(trainer.evaluations)} held-out evaluations)"]
    print(budgets[0])
    curves = logged_terms(f"{args.out}/metrics.jsonl")
    steps = [e["step"] for e in trainer.evaluations]
    for key, label in (("rankme", "RankMe"), ("std", "embedding std"), ("fewshot", "5-shot (subset)")):
        if trainer.evaluations:
            curves[label] = (steps, [e[key] for e in trainer.evaluations])
    plot_curves(curves, f"{args.out}/curves.png", title=f"{name} training",
                log_scale=("prediction loss", "SIGReg term"))
    # the context encoder (the ViT the optimizer trained), on whole images: how far the EMA
    # target encoder, which the row above evaluates, trails it
    extra = [] if args.target_encoder == "shared" else [evaluate(
        lambda images: vit(standardize(images)).mean(axis=1), data, name="I-JEPA context encoder",
        draws=args.draws, seed=args.seed, verbose=False)]
    if not args.no_mae:
        rows, lines = mae_rows(args, data, random_vit, standardize, jepa_cpu)
        extra += rows
        budgets += lines
    start = time.perf_counter()
    finish(args, data, name, jepa_embed,
           random_encoder=lambda x: random_vit(standardize(x)).mean(axis=1), extra_records=extra,
           params=sum(p.size for group in trainer.models["jepa"].param_groups(0.0)
                      for p in group["params"]))  # trained: context encoder + predictor
    print(f"final evaluation: {time.perf_counter() - start:.0f} s wall")
    print("budgets:\n  " + "\n  ".join(budgets))


if __name__ == "__main__":
    minienc.manual_seed(0)
    main()
