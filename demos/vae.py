"""Train a variational autoencoder (Kingma & Welling 2014) on the built-in digits: evaluate its
posterior means as embeddings, draw new digits from the prior and walk between digits.

loss = reconstruction (Bernoulli: BCE on logits, summed over pixels) + beta * KL(q(z|x) || N(0, I))
(summed over latent dimensions), both averaged over the batch; beta ramps up from 0 over the
first --kl-warmup fraction of the steps (KL warm-up). Saves under --out: loss.png, terms.png
(-ELBO, reconstruction, KL and beta per epoch), reconstructions.png, samples.png (decoded
z ~ N(0, I)), interpolation.png (decoded points between two test digits' means), embeddings.png
(PCA of mu), results.json.

    python demos/vae.py                                       # 4,400 steps
    python demos/vae.py --beta 4 --latent-dim 8 --arch conv   # beta-VAE: less informative codes
    python demos/vae.py --data mnist:~/mnist --device cuda    # 45x the images, same steps
"""
import minienc
from common import (add_reconstruction_flags, build_reconstruction, display_batch, finish, fit,
                    image_parser, reconstruction_batches, reconstruction_options, save_grid, say_loss,
                    setup)
from minienc.eval import plot_curves
from minienc.objectives.reconstruction import kl_weight_schedule
from minienc.optim import Adam
from minienc.train import Trainer


def main():
    p = add_reconstruction_flags(image_parser(__doc__, steps=4400, latent_dim=16, lr=2e-3))
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (1: the ELBO)")
    p.add_argument("--kl-warmup", type=float, default=0.25,
                   help="fraction of the training steps over which beta ramps up from 0 (0: none)")
    args = p.parse_args()
    data = setup(args)
    objective, initial = build_reconstruction(args, data, "vae", beta=args.beta)
    loader, steps = reconstruction_batches(args, data)
    optimizer = Adam(objective.param_groups(), lr=args.lr)
    beta = kl_weight_schedule(args.beta, int(args.kl_warmup * steps))   # sets objective.beta
    trainer = Trainer(objective, optimizer,
                      **reconstruction_options(args, data, objective, loader, steps, beta=beta))
    logged = say_loss(args, fit(args, trainer, loader, steps))
    epochs = [r["epoch"] for r in logged]
    terms = {"-ELBO (recon + KL)": [r["recon"] + r["kl"] for r in logged],
             "reconstruction": [r["recon"] for r in logged],
             "KL": [r["kl"] for r in logged], "beta": [r["beta"] for r in logged]}
    path = plot_curves({k: (epochs, v) for k, v in terms.items()}, f"{args.out}/terms.png",
                       title="VAE terms, nats per image (mean over each epoch)", xlabel="epoch")
    last = logged[-1]
    print(f"last epoch: reconstruction {last['recon']:.2f} + KL {last['kl']:.2f} = -ELBO "
          f"{last['recon'] + last['kl']:.2f} nats per image; saved {path}")

    x, labels = display_batch(data, 12, args.device)
    rows = 6
    with minienc.no_grad():
        save_grid(args, [x, objective.reconstruct(x)], ["input", "reconstruction (mu)"], "reconstructions.png",
                  f"VAE ({args.arch}): test images and the decoding of their posterior means")
        samples = objective.sample(rows * 12)
        save_grid(args, [samples[i * 12:(i + 1) * 12] for i in range(rows)], None, "samples.png",
                  "VAE: decoder means at z ~ N(0, I)")
        # pairs of different digits: 0->1, 2->3, ... (test_images starts with one of each class)
        walk = objective.interpolate(x[0:10:2], x[1:10:2], steps=10)
        save_grid(args, list(walk), [f"{a} -> {b}" for a, b in zip(labels[0:10:2], labels[1:10:2])],
                  "interpolation.png", "VAE: decoding the line between two test digits' posterior means")
    finish(args, data, f"VAE-{args.arch} beta {args.beta:g}", objective.embed, initial.embed)


if __name__ == "__main__":
    main()
