"""SimSiam on digits: one network, a predictor, and a stop-gradient on the target branch; no
negatives, no moving average (minienc/objectives/simsiam.py). SimCLR's encoder, augmentations,
optimizer and budget (demos/common/recipes.py's two-view recipe), so the rows compare.

    python demos/simsiam.py                     # ~1 CPU minute
    python demos/simsiam.py --no-stop-gradient  # watch it collapse (the paper's figure 2)

Writes to runs/simsiam/: views.png, curves.png (the loss), gauges.png (RankMe and embedding std
of the encoder and of the projection over training), embeddings.png, results.json,
metrics.jsonl. Without the stop-gradient the loss falls to about -1 within 100 steps and the
projection collapses (RankMe 1.2 in eval mode; the output batch norm keeps its batch statistics
spread in training) while the encoder loses dimensions (RankMe 29 -> 22, the 5-shot probe falls
below the random init's: seed 0, docs/ssl_methods.md).
"""
import copy

from common import (collapse_gauges, finish, fit, joint_embedding_parser, mlp_encoder, recipe_lars,
                    recipe_options, save_gauges, setup, two_view_augment, two_view_batches)

from minienc.nn import Sequential
from minienc.objectives import SimSiam, simsiam_predictor, simsiam_projector
from minienc.train import Trainer


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--projection", type=int, default=256, help="projector output width")
    parser.add_argument("--bottleneck", type=int, default=64, help="predictor hidden width")
    parser.add_argument("--no-stop-gradient", action="store_true",
                        help="let the gradient through the target branch too (collapses)")
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    objective = SimSiam(encoder, simsiam_projector(args.latent_dim, args.hidden, args.projection),
                        simsiam_predictor(args.projection, args.bottleneck),
                        two_view_augment(args, data), stop_gradient=not args.no_stop_gradient)
    name = "SimSiam" + (" (no stop-gradient)" if args.no_stop_gradient else "")
    gauges = collapse_gauges(args, data, encoder=encoder,
                             projection=Sequential(encoder, objective.projector))
    loader, steps = two_view_batches(args, data, name, objective)   # views.png first
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, callbacks=[gauges],
                      **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    save_gauges(args, name, gauges, log_scale=())
    finish(args, data, name, encoder, random_encoder)


if __name__ == "__main__":
    main()
