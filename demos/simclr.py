"""SimCLR on digits: two augmented views of every image, NT-Xent on the projection head's output,
LARS with warmup + cosine; the probe reads the encoder's output (before the head).

    python demos/simclr.py                      # 1,500 steps, ~45 s of one CPU core
    python demos/simclr.py --eval-every 100     # k-NN / 5-shot / RankMe while training
    python demos/simclr.py --device cuda --steps 20000
    mpiexec -n 2 python demos/simclr.py --distributed   # the same run on two processes

The encoder, augmentations and optimizer are demos/common/recipes.py's two-view recipe, which
demos/moco.py and demos/triplet.py use too, so the three objectives compare on equal terms;
the objective, the optimizer and the Trainer are built here, in view.
Writes to runs/simclr/: views.png, loss.png, embeddings.png, metrics.jsonl, results.json.
"""
import copy

from common import (add_recipe_flags, finish, fit, image_parser, mlp_encoder, recipe_lars,
                    recipe_options, setup, two_view_augment, two_view_batches)

from minienc.objectives import SimCLR, projection_head
from minienc.train import Trainer


def main():
    parser = add_recipe_flags(image_parser(__doc__, steps=1500, latent_dim=64, batch_size=256,
                                           lr=1.0), temperature=0.5)
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)   # the same weights, never trained: the baseline
    objective = SimCLR(encoder, projection_head(args.latent_dim, args.hidden, 64),
                       two_view_augment(args, data), temperature=args.temperature,
                       distributed=args.distributed)   # negatives: every process's views
    loader, steps = two_view_batches(args, data, "SimCLR", objective)   # views.png first
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    finish(args, data, "SimCLR", encoder, random_encoder)


if __name__ == "__main__":
    main()
