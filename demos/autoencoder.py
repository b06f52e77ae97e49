"""Train an autoencoder on the built-in digits and evaluate its codes as embeddings.

The encoder squeezes each image into --latent-dim numbers and the decoder rebuilds the image from
them (Bernoulli likelihood: binary cross-entropy on logits, summed over pixels, averaged over the
batch). Saves under --out: loss.png, reconstructions.png (inputs above reconstructions),
embeddings.png (PCA of the test codes), results.json; prints the evaluation table.

    python demos/autoencoder.py                      # MLP, 4,400 steps, ~12 s of CPU
    python demos/autoencoder.py --arch conv          # convolutional encoder and decoder
    python demos/autoencoder.py --data mnist:~/mnist --device cuda   # 45x the images, same steps
"""
import minienc
from common import (add_reconstruction_flags, build_reconstruction, display_batch, finish, fit,
                    image_parser, reconstruction_batches, reconstruction_options, save_grid, say_loss,
                    setup)
from minienc.optim import Adam
from minienc.train import Trainer


def main():
    args = add_reconstruction_flags(image_parser(__doc__, steps=4400, latent_dim=16, lr=2e-3)).parse_args()
    data = setup(args)
    objective, initial = build_reconstruction(args, data, "autoencoder")
    loader, steps = reconstruction_batches(args, data)
    optimizer = Adam(objective.param_groups(), lr=args.lr)
    trainer = Trainer(objective, optimizer, **reconstruction_options(args, data, objective, loader, steps))
    say_loss(args, fit(args, trainer, loader, steps))
    x, _ = display_batch(data, 12, args.device)
    with minienc.no_grad():
        save_grid(args, [x, objective.reconstruct(x)], ["input", "reconstruction"], "reconstructions.png",
                  f"autoencoder ({args.arch}): test images and their reconstructions")
    finish(args, data, f"AE-{args.arch}", objective.embed, initial.embed)


if __name__ == "__main__":
    main()
