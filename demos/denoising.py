"""Train a denoising autoencoder (Vincent et al. 2008, 2010) on the built-in digits and evaluate
its codes as embeddings.

Each step corrupts the batch on the device (--noise gaussian: add N(0, level^2) noise; mask: set
exactly round(level * D) pixels of each image to 0; salt_and_pepper: set them to 0 or 1) and asks
the autoencoder to rebuild the CLEAN images. Saves under --out: loss.png, denoising.png (clean /
corrupted / reconstructed), embeddings.png (PCA of the clean test images' codes), results.json.

    python demos/denoising.py                         # Gaussian noise, std 0.3, 4,400 steps
    python demos/denoising.py --noise mask --level 0.25 --arch conv
    python demos/denoising.py --data mnist:~/mnist --device cuda
"""
import minienc
from common import (add_reconstruction_flags, build_reconstruction, display_batch, finish, fit,
                    image_parser, reconstruction_batches, reconstruction_options, save_grid, say_loss,
                    setup)
from minienc.objectives.reconstruction import CORRUPTIONS
from minienc.optim import Adam
from minienc.train import Trainer


def main():
    p = add_reconstruction_flags(image_parser(__doc__, steps=4400, latent_dim=16, lr=2e-3))
    p.add_argument("--noise", choices=CORRUPTIONS, default="gaussian")
    p.add_argument("--level", type=float, default=0.3,
                   help="the noise std (gaussian) or the fraction of pixels corrupted (mask, salt_and_pepper)")
    args = p.parse_args()
    data = setup(args)
    # the objective corrupts each batch itself (on the device) and rebuilds the clean one
    objective, initial = build_reconstruction(args, data, "denoising", noise=args.noise,
                                              level=args.level)
    loader, steps = reconstruction_batches(args, data)
    optimizer = Adam(objective.param_groups(), lr=args.lr)
    trainer = Trainer(objective, optimizer, **reconstruction_options(args, data, objective, loader, steps))
    say_loss(args, fit(args, trainer, loader, steps))
    x, _ = display_batch(data, 12, args.device)
    with minienc.no_grad():
        corrupted = objective.corrupt(x)
        # Gaussian noise leaves [0, 1]: clip for display only, so every row shares one grey scale
        save_grid(args, [x, corrupted.clip(0.0, 1.0), objective.reconstruct(corrupted)],
                  ["clean", "corrupted", "reconstructed"],
                  "denoising.png", f"denoising autoencoder ({args.noise} {args.level}): test images")
    finish(args, data, f"DAE-{args.arch} {args.noise} {args.level}", objective.embed, initial.embed)


if __name__ == "__main__":
    main()
