"""Barlow Twins on digits: two views, no negatives; the cross-correlation of their projections
is pulled to the identity (minienc/objectives/barlow.py). SimCLR's encoder, augmentations,
optimizer and budget (demos/common/recipes.py's two-view recipe), so the rows compare.

    python demos/barlow.py                      # ~1 CPU minute
    python demos/barlow.py --lambd 0            # only the diagonal: redundant features are free

Writes to runs/barlow/: views.png, curves.png (the loss and both terms), gauges.png (RankMe and
embedding std of the encoder and of the projection over training), embeddings.png, results.json,
metrics.jsonl.
"""
import copy

from common import (collapse_gauges, finish, fit, joint_embedding_parser, mlp_encoder, recipe_lars,
                    recipe_options, save_gauges, setup, two_view_augment, two_view_batches)

from minienc.nn import Sequential
from minienc.objectives import BarlowTwins, barlow_projector
from minienc.train import Trainer


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--projector", type=int, default=256, help="projector output width")
    parser.add_argument("--lambd", type=float, default=5e-3, help="weight of the off-diagonal term")
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    objective = BarlowTwins(encoder, barlow_projector(args.latent_dim, args.hidden, args.projector),
                            two_view_augment(args, data), lambd=args.lambd,
                            distributed=args.distributed)   # C of the global batch
    gauges = collapse_gauges(args, data, encoder=encoder,
                             projection=Sequential(encoder, objective.projector))
    loader, steps = two_view_batches(args, data, "Barlow Twins", objective)   # views.png first
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, callbacks=[gauges],
                      **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    save_gauges(args, "Barlow Twins", gauges, terms=("on_diagonal", "off_diagonal"))
    finish(args, data, "Barlow Twins", encoder, random_encoder)


if __name__ == "__main__":
    main()
