"""SimCLR on digits: two augmented views of every image, NT-Xent on the projection head's output,
LARS with warmup + cosine; the probe reads the encoder's output (before the head).

    python demos/simclr.py                      # ~45 s of one CPU core
    python demos/simclr.py --device cuda --epochs 400

The recipe also serves demos/moco.py and demos/triplet.py (encoder, augmentations, optimizer,
the grid of view pairs), so the three objectives are compared on equal terms.
"""
import copy
import os

from common import image_parser, report, setup

from minienc import data as D
from minienc.eval import encode, plot_embeddings, plot_image_grid
from minienc.nn import Flatten, MLPEncoder, Sequential
from minienc.objectives.contrastive import SimCLR, projection_head
from minienc.optim import LARS, WarmupCosine, param_groups_without_decay
from minienc.train import Trainer


def digits_encoder(latent_dim, hidden=(512, 512)):
    """The encoder every contrastive demo trains: flatten, then an MLP with batch norm."""
    return Sequential(Flatten(), MLPEncoder(64, hidden, latent_dim, batch_norm=True))


def digits_augment(crop=0.5, degrees=15.0, noise=0.05):
    """Two-view augmentations for 8x8 digits: a resized crop, a small rotation and shear,
    brightness/contrast jitter, noise and an erased patch. No flips (a mirrored 2 is not a 2)."""
    return D.Compose([
        D.RandomResizedCrop(scale=(crop, 1.0), ratio=(3 / 4, 4 / 3)),
        D.RandomAffine(degrees=degrees, translate=0.0, scale=(1.0, 1.0), shear=10.0),
        D.BrightnessContrast(0.4, 0.4, p=0.8),
        D.GaussianNoise(noise, clip=(0.0, 1.0)),
        D.RandomErasing(p=0.3, scale=(0.02, 0.15)),
    ])


def save_view_pairs(images, augment, path, title):
    """Originals over two augmented views of each: what the objective calls a positive pair."""
    rows = [images, augment(images), augment(images)]
    return plot_image_grid(rows, path, row_titles=["original", "view 1", "view 2"], title=title)


def add_recipe_flags(parser, temperature=None):
    parser.add_argument("--hidden", type=int, default=256, help="projection head width")
    parser.add_argument("--crop", type=float, default=0.5, help="smallest crop area")
    parser.add_argument("--noise", type=float, default=0.05, help="Gaussian noise std")
    parser.add_argument("--weight-decay", type=float, default=1e-6)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    if temperature is not None:
        parser.add_argument("--temperature", type=float, default=temperature)
    return parser


def train_contrastive(args, data, name, loss_fn, models, params, callbacks=(), labels=False,
                      views=None, schedules=None, optimizer=None):
    """LARS (lr scaled as SimCLR: base * batch / 256) with warmup + cosine over the run, on
    batches of the train images; each step is loss_fn(view1, view2), or loss_fn(view1, view2,
    labels) with `labels`. `views`: a function images -> list of views to use instead of two
    augmented ones (DINO's multi-crop); `schedules`: more Trainer schedules (an EMA momentum);
    `optimizer`: a function param_groups -> optimizer instead of LARS (the schedule still sets
    its lr). Saves the view pairs first. Returns the Trainer."""
    augment = digits_augment(crop=args.crop, noise=args.noise)
    images = data.x_test[:12]
    print("saved", save_view_pairs(images, augment, os.path.join(args.out, "views.png"),
                                   f"{name}: positive pairs (two random views of each digit)"))
    arrays = (data.x_train, data.y_train) if labels else (data.x_train,)
    loader = D.BatchIterator(*arrays, batch_size=args.batch_size, drop_last=True, seed=args.seed,
                             device=args.device)
    steps = args.epochs * len(loader)
    lr = args.lr * args.batch_size / 256
    groups = param_groups_without_decay(params, args.weight_decay)
    optimizer = optimizer(groups) if optimizer else LARS(groups, lr=lr, weight_decay=args.weight_decay)
    schedule = WarmupCosine(lr, steps, warmup_steps=min(args.warmup_epochs * len(loader), steps))

    def step(batch):
        x, *y = batch if labels else (batch,)
        return loss_fn(*(views(x) if views else (augment(x), augment(x))), *y)

    trainer = Trainer(step, optimizer, models=models,
                      schedules={"lr": schedule, **(schedules or {})}, callbacks=callbacks,
                      out_dir=args.out, log_every=len(loader))
    trainer.fit(loader, steps=steps)
    return trainer


def finish(args, data, name, encoder, random_encoder):
    """The shared evaluation row and a PCA plot of the test embeddings."""
    records = report(args, data, name, encoder, random_encoder)
    path = plot_embeddings(encode(encoder, data.x_test), data.y_test,
                           os.path.join(args.out, "embeddings.png"), title=f"{name}: test embeddings (PCA)")
    print("saved", path)
    return records


def main():
    parser = add_recipe_flags(image_parser(__doc__, epochs=300, latent_dim=64, batch_size=256,
                                           lr=1.0), temperature=0.5)
    args = parser.parse_args()
    data = setup(args)
    encoder = digits_encoder(args.latent_dim)
    random_encoder = copy.deepcopy(encoder)   # the same weights, never trained: the baseline
    model = SimCLR(encoder, projection_head(args.latent_dim, args.hidden, 64), args.temperature)
    train_contrastive(args, data, "SimCLR", model.loss, model, model)
    finish(args, data, "SimCLR", encoder, random_encoder)


if __name__ == "__main__":
    main()
