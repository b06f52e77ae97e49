"""Train a denoising autoencoder (Vincent et al. 2008, 2010) on the built-in digits and evaluate
its codes as embeddings.

Each step corrupts the batch on the device (--noise gaussian: add N(0, level^2) noise; mask: set
exactly round(level * D) pixels of each image to 0; salt_and_pepper: set them to 0 or 1) and asks
the autoencoder to rebuild the CLEAN images. Saves under --out: loss.png, denoising.png (clean /
corrupted / reconstructed), embeddings.png (PCA of the clean test images' codes), results.json.

    python demos/denoising.py                         # Gaussian noise, std 0.3
    python demos/denoising.py --noise mask --level 0.25 --arch conv
    python demos/denoising.py --data mnist:~/mnist --epochs 20 --device cuda
"""
import minienc
from common import setup
from autoencoder import (build_pair, evaluate_and_plot, fit, make_trainer, parser, save_grid,
                         display_batch)
from minienc.objectives.reconstruction import CORRUPTIONS


def main():
    p = parser(__doc__)
    p.add_argument("--noise", choices=CORRUPTIONS, default="gaussian")
    p.add_argument("--level", type=float, default=0.3,
                   help="the noise std (gaussian) or the fraction of pixels corrupted (mask, salt_and_pepper)")
    args = p.parse_args()
    data = setup(args)
    model, initial = build_pair(args, data, "denoising", noise=args.noise, level=args.level)
    fit(args, *make_trainer(args, data, model, model.loss))
    x, _ = display_batch(args, data, 12)
    with minienc.no_grad():
        corrupted = model.corrupt(x)
        # Gaussian noise leaves [0, 1]: clip for display only, so every row shares one grey scale
        save_grid(args, [x, corrupted.clip(0.0, 1.0), model.reconstruct(corrupted)],
                  ["clean", "corrupted", "reconstructed"],
                  "denoising.png", f"denoising autoencoder ({args.noise} {args.level}): test images")
    evaluate_and_plot(args, data, f"DAE-{args.arch} {args.noise} {args.level}", model, initial)


if __name__ == "__main__":
    main()
