"""Triplet loss on digits. Without labels (the default) the positive of a view is the other view
of the same digit and the miner picks negatives among the other digits' views; with --labels the
positives are other digits of the same class (FaceNet's supervised form, so its row is NOT a
self-supervised result). Encoder, augmentations and optimizer are SimCLR's (demos/common/recipes.py's
two-view recipe).

    python demos/triplet.py                     # 1,000 steps, ~80 s of one CPU core
    python demos/triplet.py --miner semi_hard --margin 0.5
    python demos/triplet.py --labels --miner batch_all
"""
import copy

from common import (add_recipe_flags, finish, fit, image_parser, mlp_encoder, recipe_lars,
                    recipe_options, setup, two_view_augment, two_view_batches)

from minienc.objectives import Triplet
from minienc.objectives.triplet import MINERS
from minienc.train import Trainer


def main():
    parser = add_recipe_flags(image_parser(__doc__, steps=1000, latent_dim=64, batch_size=256,
                                           lr=1.0))
    parser.add_argument("--miner", default="semi_hard", choices=sorted(MINERS))
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--squared", action="store_true", help="squared Euclidean distance")
    parser.add_argument("--reduction", default="mean", choices=["mean", "mean_nonzero"])
    parser.add_argument("--labels", action="store_true", help="mine positives by class label")
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    objective = Triplet(encoder, two_view_augment(args, data), labels=args.labels,
                        miner=args.miner, margin=args.margin, squared=args.squared,
                        reduction=args.reduction)   # with labels, batches are (images, labels)
    name = f"triplet {args.miner}" + (" +labels" if args.labels else "")
    loader, steps = two_view_batches(args, data, name, objective, labels=args.labels)
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    finish(args, data, name, encoder, random_encoder)


if __name__ == "__main__":
    main()
