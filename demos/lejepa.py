"""LeJEPA: views of a digit predict their common centre, and SIGReg keeps the embeddings an
isotropic Gaussian -- no EMA teacher, no stop-gradient, no predictor, one knob (lambda).

    python demos/lejepa.py                        # 4 augmented views, lambda 0.02, 1,200 steps
    python demos/lejepa.py --num-views 2          # half the time
    python demos/lejepa.py --views mask           # views are masks (each keeps half the patches;
                                                  # no pixel augmentation at all, as I-JEPA intends)
    python demos/lejepa.py --num-views 2 --local-views 4    # 2 global + 4 local crops

Trains a ViT (the same 64-d x 4 ViT on 2x2 patches as demos/mae.py and demos/jepa.py) with
minienc/objectives/lejepa.py, logs the prediction and SIGReg terms and, on a fixed subset, RankMe,
the embedding std and a 5-shot probe of the pooled encoder output while training, then evaluates
it beside raw pixels, PCA and the same ViT at random init. Writes to runs/lejepa/: views.png,
curves.png, evaluation.png, metrics.jsonl, results.json.
"""
import copy
import time

from common import finish, fit, image_parser, make_trainer, setup

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, contrastive_augment
from minienc.eval import plot_curves, plot_image_grid
from minienc.objectives.lejepa import LeJEPA
from minienc.objectives.masked_image import random_masking
from minienc.optim import AdamW, WarmupCosine, param_groups_without_decay
from minienc.progress import MetricsFile


def parse_args():
    parser = image_parser(__doc__, epochs=None, batch_size=128, lr=2e-3)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lam", type=float, default=0.02, help="SIGReg's weight lambda")
    parser.add_argument("--views", choices=["augment", "mask"], default="augment")
    parser.add_argument("--num-views", type=int, default=4, help="global views per image")
    parser.add_argument("--local-views", type=int, default=0,
                        help="local views per image (small crops, or fewer visible patches)")
    parser.add_argument("--mask-keep", type=float, default=0.5, help="patches a masked view keeps")
    parser.add_argument("--local-keep", type=float, default=0.25, help="... a local masked view")
    parser.add_argument("--proj-dim", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256, help="projector width")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=0.05, help="warmup, a fraction of the steps")
    parser.set_defaults(eval_every=100)   # held-out curves (common.py's --eval-every)
    return parser.parse_args()


def make_views(args, images, num_patches, global_aug, local_aug):
    """The step's views: (global, local, global masks, local masks) for LeJEPA.terms."""
    b = images.shape[0]
    if args.views == "mask":
        masks = [random_masking(b, num_patches, 1 - args.mask_keep)[0] for _ in range(args.num_views)]
        local_masks = [random_masking(b, num_patches, 1 - args.local_keep)[0]
                       for _ in range(args.local_views)] or None
        return images, None, masks, local_masks
    views = [global_aug(images) for _ in range(args.num_views)]
    local = [local_aug(images) for _ in range(args.local_views)] or None
    return views, local, None, None


def main():
    args = parse_args()
    data = setup(args)
    c, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, in_channels=c,
                               dim=args.dim, depth=args.depth, num_heads=args.heads,
                               weight_init="xavier")
    random_vit = copy.deepcopy(vit)   # the same ViT at the same random initialisation
    model = LeJEPA(vit, proj_dim=args.proj_dim, hidden=args.hidden, lam=args.lam,
                   distributed=args.distributed)   # SIGReg over the global batch
    if args.distributed:
        nn.SyncBatchNorm.convert(model)              # the projector's batch norm too
    standardize = data.standardizer()
    # the views' pixel augmentations (digits: no flips): global views crop 40-100% of the image,
    # local ones 10-40%, resized back to the full size
    global_aug = contrastive_augment(crop_scale=(0.4, 1.0))
    local_aug = contrastive_augment(crop_scale=(0.1, 0.4))
    views = "masked" if args.views == "mask" else "augmented"
    print(f"LeJEPA: {args.num_views} global + {args.local_views} local {views} views, lambda "
          f"{args.lam}, projector {args.hidden} -> {args.proj_dim}; ViT {args.dim}d x {args.depth} "
          f"on a {vit.grid_size} grid")

    sample = data.x_test[:10]
    rows, titles = [sample], ["image"]
    if args.views == "mask":
        for i in range(min(args.num_views, 3)):
            keep = backend.to_host(random_masking(10, vit.num_patches, 1 - args.mask_keep)[0])
            seen = backend.numpy.zeros((10, vit.num_patches), bool)
            seen[backend.numpy.arange(10)[:, None], keep] = True
            g = vit.grid_size
            mask = seen.reshape(10, 1, *g).repeat(args.patch_size, 2).repeat(args.patch_size, 3)
            rows.append(sample * backend.numpy.where(mask, 1.0, 0.15).astype(sample.dtype))
            titles.append(f"view {i + 1}")
    else:
        for i in range(min(args.num_views, 3)):
            rows.append(backend.to_host(global_aug(sample)))
            titles.append(f"view {i + 1}")
        if args.local_views:
            rows.append(backend.to_host(local_aug(sample)))
            titles.append("local view")
    plot_image_grid(rows, f"{args.out}/views.png", row_titles=titles,
                    title=f"LeJEPA: {views} views of each digit (all pulled to one centre)")

    opt = AdamW(param_groups_without_decay(model, args.weight_decay), lr=args.lr)
    schedule = WarmupCosine(args.lr, args.steps, int(args.warmup * args.steps), final=args.lr / 1000,
                            start=args.lr / 100)

    def step_fn(images):
        views_, local, masks, local_masks = make_views(args, images, vit.num_patches, global_aug, local_aug)
        views_ = [standardize(v) for v in views_] if isinstance(views_, list) else standardize(views_)
        local = [standardize(v) for v in local] if local else None
        return model.terms(views_, local, masks, local_masks)   # each term goes to metrics.jsonl

    def embed(images):
        return model.embed(standardize(images))

    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    start = time.process_time()
    # with --eval-every N (100 here), held-out curves on a fixed subset (1,000 / 500 images)
    trainer = make_trainer(args, data, step_fn, opt, embed, models={"lejepa": model},
                           schedules={"lr": schedule}, log_every=10)
    fit(args, trainer, loader, args.steps)
    print(f"LeJEPA: {args.steps} steps in {time.process_time() - start:.0f} s CPU, of which "
          f"{trainer.eval_s:.0f} s wall for {len(trainer.evaluations)} held-out evaluations")
    curves = MetricsFile(f"{args.out}/metrics.jsonl").curves(["prediction", "sigreg"])
    for key, name in (("rankme", "RankMe"), ("std", "embedding std"), ("fewshot", "5-shot (subset)")):
        if trainer.evaluations:
            curves[name] = ([e["step"] for e in trainer.evaluations], [e[key] for e in trainer.evaluations])
    plot_curves(curves, f"{args.out}/curves.png", title="LeJEPA training (pooled encoder output)",
                log_scale=("prediction", "sigreg"))
    start = time.perf_counter()
    finish(args, data, "LeJEPA", embed, random_encoder=lambda x: random_vit(standardize(x)).mean(axis=1),
           params=model.num_parameters())
    print(f"final evaluation: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    minienc.manual_seed(0)
    main()
