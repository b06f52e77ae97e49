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
it beside raw pixels, PCA and the same ViT at random init. Writes to runs/lejepa/: views.png
(every view a step uses), curves.png (the loss terms), loss.png, evaluation.png (the held-out
curves), embeddings.png, metrics.jsonl, results.json.
"""
import copy
import time

from common import finish, fit, image_parser, run_options, setup
from common import jepa_figures as figures

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, contrastive_augment
from minienc.eval import plot_image_grid
from minienc.objectives.lejepa import LeJEPA
from minienc.objectives.masked_image import random_masking
from minienc.optim import AdamW, WarmupCosine
from minienc.train import Trainer


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
    parser.set_defaults(eval_every=100)   # held-out curves (common/flags.py's --eval-every)
    return parser.parse_args()


def views_picture(args, path, sample, global_aug, local_aug, grid):
    """Every view one training step uses, of 10 test digits: --num-views global views and
    --local-views local ones (drawn from a generator of their own: the run's stream untouched)."""
    np, rng = backend.numpy, backend.numpy.random.default_rng(args.seed)
    rows, titles = [sample], ["image"]
    if args.views == "mask":
        def masked(keep):
            ids = random_masking(len(sample), grid[0] * grid[1], 1 - keep, device="cpu", rng=rng)[0]
            seen = np.zeros((len(sample), grid[0] * grid[1]), bool)
            seen[np.arange(len(sample))[:, None], ids] = True
            mask = seen.reshape(-1, 1, *grid).repeat(args.patch_size, 2).repeat(args.patch_size, 3)
            return sample * np.where(mask, 1.0, 0.15).astype(sample.dtype)
        views = [masked(args.mask_keep) for _ in range(args.num_views)]
        local = [masked(args.local_keep) for _ in range(args.local_views)]
    else:
        views = [backend.to_host(global_aug(sample, rng=rng)) for _ in range(args.num_views)]
        local = [backend.to_host(local_aug(sample, rng=rng)) for _ in range(args.local_views)]
    rows += views + local
    titles += [f"view {i + 1}" for i in range(len(views))] + [f"local {i + 1}" for i in range(len(local))]
    kind = "masked (dimmed = hidden)" if args.views == "mask" else "augmented"
    return plot_image_grid(rows, path, row_titles=titles,
                           title=f"LeJEPA: the {len(views)} global + {len(local)} local {kind} views "
                                 f"of each digit that one step uses (all pulled to one centre)")


def main():
    args = parse_args()
    data = setup(args)
    c, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, in_channels=c,
                               dim=args.dim, depth=args.depth, num_heads=args.heads,
                               weight_init="xavier")
    random_vit = copy.deepcopy(vit)   # the same ViT at the same random initialisation
    standardize = data.standardizer()
    # the views' pixel augmentations (digits: no flips): global views crop 40-100% of the image,
    # local ones 10-40%, resized back to the full size
    global_aug = contrastive_augment(crop_scale=(0.4, 1.0))
    local_aug = contrastive_augment(crop_scale=(0.1, 0.4))
    masked = args.views == "mask"
    model = LeJEPA(vit, proj_dim=args.proj_dim, hidden=args.hidden, lam=args.lam,
                   distributed=args.distributed,   # SIGReg over the global batch
                   augment=standardize if masked else (lambda x: standardize(global_aug(x))),
                   num_views=args.num_views, num_local_views=args.local_views,
                   local_augment=None if masked else (lambda x: standardize(local_aug(x))),
                   mask_keep=args.mask_keep if masked else None, local_keep=args.local_keep)
    if args.distributed:
        nn.SyncBatchNorm.convert(model)              # the projector's batch norm too
    print(f"LeJEPA: {args.num_views} global + {args.local_views} local {args.views}ed views, lambda "
          f"{args.lam}, projector {args.hidden} -> {args.proj_dim}; ViT {args.dim}d x {args.depth} "
          f"on a {vit.grid_size} grid")
    views_picture(args, f"{args.out}/views.png", data.x_test[:10], global_aug, local_aug, vit.grid_size)

    opt = AdamW(model.param_groups(args.weight_decay), lr=args.lr)
    schedule = WarmupCosine(args.lr, args.steps, int(args.warmup * args.steps), final=args.lr / 1000,
                            start=args.lr / 100)

    def embed(images):
        return model.embed(standardize(images))

    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    start = time.process_time()
    # with --eval-every N (100 here), held-out curves on a fixed subset (1,000 / 500 images)
    trainer = Trainer(model, opt, **run_options(args, data, embed, schedules={"lr": schedule},
                                                log_every=10))
    fit(args, trainer, loader, args.steps)
    print(f"LeJEPA: {args.steps} steps in {time.process_time() - start:.0f} s CPU, of which "
          f"{trainer.eval_s:.0f} s wall for {len(trainer.evaluations)} held-out evaluations")
    figures.titled_loss(trainer, f"{args.out}/loss.png", "LeJEPA")
    figures.loss_terms(f"{args.out}/curves.png", f"{args.out}/metrics.jsonl", "LeJEPA",
                       trainer.evaluations, note=None,
                       names={"prediction": "prediction (views -> their centre)"})
    start = time.perf_counter()
    finish(args, data, "LeJEPA", embed, random_encoder=lambda x: random_vit(standardize(x)).mean(axis=1),
           params=model.num_parameters())
    print(f"final evaluation: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    minienc.manual_seed(0)
    main()
