"""VICReg on digits: two views, no negatives; a variance hinge and a covariance penalty on the
expander's output keep the embeddings from collapsing (minienc/objectives/vicreg.py). SimCLR's
encoder, augmentations, optimizer and budget (demos/common/recipes.py's two-view recipe), so the rows compare.

    python demos/vicreg.py                      # ~1 CPU minute
    python demos/vicreg.py --variance-weight 0  # watch it collapse: invariance alone is met by a constant

Writes to runs/vicreg/: views.png, curves.png (the loss and each term), gauges.png (RankMe and
embedding std of the encoder and of the expander's output over training), embeddings.png,
results.json, metrics.jsonl.
"""
import copy

from common import (collapse_gauges, finish, fit, joint_embedding_parser, mlp_encoder, recipe_lars,
                    recipe_options, save_gauges, setup, two_view_augment, two_view_batches)

from minienc.nn import Sequential
from minienc.objectives import VICReg, vicreg_expander
from minienc.train import Trainer


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--expander", type=int, default=256, help="expander output width")
    parser.add_argument("--invariance-weight", type=float, default=25.0)
    parser.add_argument("--variance-weight", type=float, default=25.0)
    parser.add_argument("--covariance-weight", type=float, default=1.0)
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    objective = VICReg(encoder, vicreg_expander(args.latent_dim, args.hidden, args.expander),
                       two_view_augment(args, data), args.invariance_weight, args.variance_weight,
                       args.covariance_weight,   # variance, covariance over the global batch:
                       distributed=args.distributed)
    gauges = collapse_gauges(args, data, encoder=encoder,
                             embedding=Sequential(encoder, objective.expander))
    loader, steps = two_view_batches(args, data, "VICReg", objective)   # views.png first
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, callbacks=[gauges],
                      **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    save_gauges(args, "VICReg", gauges, terms=("invariance", "variance", "covariance"))
    finish(args, data, "VICReg", encoder, random_encoder)


if __name__ == "__main__":
    main()
