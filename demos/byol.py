"""BYOL on digits: an online network predicts an EMA target network's projection of the other
view, no negatives (minienc/objectives/byol.py). SimCLR's encoder, augmentations, optimizer and
budget (demos/common/recipes.py's two-view recipe), so the rows compare.

    python demos/byol.py                        # ~1.5 CPU minutes
    python demos/byol.py --ema 0.996            # the paper's tau_base (sized for 1,000 epochs)

The target's momentum rises from --ema to 1 along BYOL's cosine. Departure from the paper:
tau_base 0.99, not 0.996. BYOL's own configs lower it for shorter runs (0.99 at 100-300 epochs,
0.97 at 40), and minienc's I-JEPA study chose 0.99 at this scale for the same reason: over a
run of K steps the target keeps about exp(-(1 - tau_base) K / 2) of its random initialisation,
exp(-3) = 5% at 0.996 over these 1,500 steps (exp(-7.5) at 0.99), and averages the online
network over the last ~1 / (1 - tau) steps, 250 at 0.996, a sixth of the run.

Writes to runs/byol/: views.png, curves.png (the loss), gauges.png (RankMe and embedding std of
the online encoder and projection over training), embeddings.png, results.json, metrics.jsonl.
"""
import copy

from common import (collapse_gauges, finish, fit, joint_embedding_parser, mlp_encoder, recipe_lars,
                    recipe_options, save_gauges, setup, two_view_augment, two_view_batches)

from minienc.objectives import BYOL, byol_mlp
from minienc.train import Trainer


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--projection", type=int, default=64, help="projector / predictor output width")
    parser.add_argument("--ema", type=float, default=0.99, help="tau_base: the target's starting momentum")
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    # the target follows the online network in after_step, tau rising from --ema to 1
    objective = BYOL(encoder, byol_mlp(args.latent_dim, args.hidden, args.projection),
                     byol_mlp(args.projection, args.hidden, args.projection),
                     two_view_augment(args, data), momentum=args.ema)
    gauges = collapse_gauges(args, data, encoder=encoder, projection=objective.online_network)
    loader, steps = two_view_batches(args, data, "BYOL", objective)   # views.png first
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, callbacks=[gauges],
                      **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    save_gauges(args, "BYOL", gauges)
    finish(args, data, "BYOL", encoder, random_encoder)


if __name__ == "__main__":
    main()
