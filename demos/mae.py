"""Masked autoencoder (MAE) on digits: hide 75% of each image's patches, encode the rest with a
ViT, and let a light decoder paint the hidden patches back; the ViT's average-pooled patch
tokens are then evaluated frozen beside raw pixels, PCA and the same ViT at random init.

    python demos/mae.py                           # 8x8 digits, 2x2 patches (a 4x4 grid), 3,000 steps
    python demos/mae.py --patch-size 1            # one pixel per patch (an 8x8 grid)
    python demos/mae.py --no-norm-pix-loss        # raw pixel targets (norm-pix is the default)

Writes <out>/reconstructions.png (original / masked / reconstruction / visible + predicted),
<out>/embeddings.png, loss.png, metrics.jsonl and results.json.
"""
import argparse
import os

from common import display_batch, finish, fit, image_parser, run_options, setup, total_steps

import minienc
from minienc import distributed
from minienc.data import BatchIterator
from minienc.eval import plot_image_grid
from minienc.objectives import MAE
from minienc.optim import AdamW, WarmupCosine
from minienc.train import Trainer


def main():
    parser = image_parser(__doc__, steps=3000, batch_size=128, lr=2e-3)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64, help="encoder width")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks")
    parser.add_argument("--decoder-dim", type=int, default=32)
    parser.add_argument("--decoder-depth", type=int, default=2)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction, default=True,
                        help="targets: each patch standardised by its own mean and std (MAE's best)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    args = parser.parse_args()
    data = setup(args)
    c, h, _ = data.image_shape
    if args.norm_pix_loss and args.patch_size ** 2 * c < 2:
        print("a 1-value patch has no spread to normalise by: using raw pixel targets")
        args.norm_pix_loss = False
    config = dict(image_size=h, patch_size=args.patch_size, in_channels=c, dim=args.dim,
                  depth=args.depth, num_heads=4, decoder_dim=args.decoder_dim,
                  decoder_depth=args.decoder_depth, decoder_num_heads=4,
                  mask_ratio=args.mask_ratio, norm_pix_loss=args.norm_pix_loss)
    random_mae = MAE(**config)              # the same ViT at its random initialisation
    minienc.manual_seed(args.seed + distributed.rank())   # (each rank then masks its own way)
    mae = MAE(**config)                     # same seed: starts from exactly those weights
    print(f"MAE: {mae.num_patches} patches of {args.patch_size}x{args.patch_size}, "
          f"{int(mae.num_patches * (1 - args.mask_ratio))} visible; "
          f"{mae.encoder.num_parameters():,} encoder + {mae.num_parameters() - mae.encoder.num_parameters():,} "
          f"decoder parameters")

    loader = BatchIterator(data.x_train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                           seed=args.seed)
    steps = total_steps(args, loader)
    optimizer = AdamW(mae.param_groups(args.weight_decay), lr=args.lr, betas=(0.9, 0.95))
    lr = WarmupCosine(args.lr, steps, warmup_steps=steps // 20)
    trainer = Trainer(mae, optimizer, **run_options(args, data, mae.embed, schedules={"lr": lr},
                                                    log_every=20))
    fit(args, trainer, loader, steps)   # each step masks --mask-ratio of every image's patches

    images, _ = display_batch(data, data.num_classes or 10, mae.device)   # one of each class
    out = mae.reconstruct(images)
    ratio = f"{args.mask_ratio:.0%}"
    # norm-pix predictions are per-patch shapes: they are drawn with each patch's TRUE mean and std
    note = "\nnorm-pix: predicted patches drawn with their true mean/std" if args.norm_pix_loss else ""
    # predictions of pixels in [0, 1] can overshoot a little: clip so every row shares one scale
    path = plot_image_grid([images, out["masked"], out["reconstruction"].clip(0, 1), out["pasted"].clip(0, 1)],
                           os.path.join(args.out, "reconstructions.png"),
                           row_titles=["original", f"masked {ratio}", "reconstruction", "visible+pred."],
                           title=f"MAE on {data.name} ({args.patch_size}x{args.patch_size} patches, "
                                 f"held-out digits; grey = removed)" + note)
    print("saved", path)
    name = f"MAE (p={args.patch_size}{', norm-pix' if args.norm_pix_loss else ''})"
    finish(args, data, name, mae.embed, random_mae.embed)


if __name__ == "__main__":
    main()
