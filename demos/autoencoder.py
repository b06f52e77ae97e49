"""Train an autoencoder on the built-in digits and evaluate its codes as embeddings.

The encoder squeezes each image into --latent-dim numbers and the decoder rebuilds the image from
them (Bernoulli likelihood: binary cross-entropy on logits, summed over pixels, averaged over the
batch). Saves under --out: loss.png, reconstructions.png (inputs above reconstructions),
embeddings.png (PCA of the test codes), results.json; prints the evaluation table.

    python demos/autoencoder.py                      # MLP, ~12 s of CPU
    python demos/autoencoder.py --arch conv          # convolutional encoder and decoder
    python demos/autoencoder.py --data mnist:~/mnist --epochs 20 --device cuda   # 45x the images

The helpers below (flags, training loop, figures and report) are shared by denoising.py and vae.py.
"""
import minienc
from common import image_parser, report, setup
from minienc.data import BatchIterator
from minienc.eval import encode, plot_embeddings, plot_image_grid
from minienc.objectives.reconstruction import LIKELIHOODS, build_model
from minienc.optim import Adam, WarmupCosine
from minienc.train import Trainer


def parser(description, epochs=400, latent_dim=16, lr=2e-3):
    """common.image_parser plus the model flags every reconstruction demo takes."""
    p = image_parser(description, epochs=epochs, latent_dim=latent_dim, lr=lr)
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli",
                   help="decoder: bernoulli (BCE on logits) or gaussian (squared error / 2 sigma^2)")
    p.add_argument("--sigma", type=float, default=1.0, help="the gaussian decoder's fixed std")
    return p


def build_pair(args, data, kind, **options):
    """The model to train and a copy of its initial weights (the random-encoder baseline)."""
    def build():
        return build_model(kind, data.image_shape, args.latent_dim, args.arch, args.likelihood,
                           args.sigma, **options).to(args.device)
    model, initial = build(), build()
    initial.load_state_dict(model.state_dict())
    print(f"{kind} ({args.arch}, latent {args.latent_dim}): {model.num_parameters():,} parameters")
    return model, initial


def make_trainer(args, data, model, step_fn, schedules=None):
    """Adam with a warm-up + cosine learning rate over --epochs of the train images; returns the
    Trainer (a step may read its scheduled values, trainer.values) and the batches."""
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, seed=args.seed, device=args.device)
    total = args.epochs * len(loader)
    schedules = {"lr": WarmupCosine(args.lr, total, warmup_steps=total // 20), **(schedules or {})}
    trainer = Trainer(step_fn, Adam(model.parameters(), lr=args.lr), models=model,
                      schedules=schedules, log_every=len(loader), out_dir=args.out)
    return trainer, loader


def fit(args, trainer, loader):
    trainer.fit(loader, epochs=args.epochs)
    print(f"loss: {trainer.records[0]['loss']:.2f} in the first epoch -> "
          f"{trainer.records[-1]['loss']:.2f} in the last (nats per image; curve in {args.out}/loss.png)")
    return trainer


def display_batch(args, data, n):
    """n test images, the first of each class in label order first, as a tensor on the device,
    and their labels."""
    first = {}
    for i, label in enumerate(data.y_test.tolist()):
        first.setdefault(label, i)
    picked = [first[label] for label in sorted(first)][:n]
    picked += [i for i in range(len(data.y_test)) if i not in first.values()][:n - len(picked)]
    return minienc.tensor(data.x_test[picked], device=args.device), data.y_test[picked].tolist()


def save_grid(args, rows, titles, name, title):
    path = plot_image_grid(rows, f"{args.out}/{name}", row_titles=titles, title=title)
    print(f"saved {path}")


def evaluate_and_plot(args, data, name, model, initial):
    """PCA scatter of the test embeddings and the evaluation table beside the baselines."""
    path = plot_embeddings(encode(model.encode, data.x_test), data.y_test, f"{args.out}/embeddings.png",
                           title=f"{name}: test embeddings (PCA)")
    print(f"saved {path}")
    return report(args, data, name, model.encode, initial.encode)


def main():
    args = parser(__doc__).parse_args()
    data = setup(args)
    model, initial = build_pair(args, data, "autoencoder")
    fit(args, *make_trainer(args, data, model, model.loss))
    x, _ = display_batch(args, data, 12)
    with minienc.no_grad():
        save_grid(args, [x, model.reconstruct(x)], ["input", "reconstruction"], "reconstructions.png",
                  f"autoencoder ({args.arch}): test images and their reconstructions")
    evaluate_and_plot(args, data, f"AE-{args.arch}", model, initial)


if __name__ == "__main__":
    main()
