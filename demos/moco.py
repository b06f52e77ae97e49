"""MoCo v2 on digits: a query encoder trained on InfoNCE against a momentum key encoder's keys and
a FIFO queue of older keys (temperature 0.2, MLP head), with SimCLR's encoder, augmentations and
optimizer (demos/common/recipes.py's two-view recipe) so the two compare on equal terms.

    python demos/moco.py                        # 1,500 steps, ~45 s of one CPU core
    python demos/moco.py --queue 512 --momentum 0.999 --bn-groups 1
    mpiexec -n 2 python demos/moco.py --distributed   # keys shuffled across the two processes
"""
import copy

from common import (add_recipe_flags, finish, fit, image_parser, mlp_encoder, recipe_lars,
                    recipe_options, setup, two_view_augment, two_view_batches)

from minienc.objectives import MoCo, projection_head
from minienc.train import Trainer


def main():
    parser = add_recipe_flags(image_parser(__doc__, steps=1500, latent_dim=64, batch_size=256,
                                           lr=1.0), temperature=0.2)
    parser.add_argument("--queue", type=int, default=1024,
                        help="negatives kept (a multiple of the batch, below the train set size)")
    parser.add_argument("--momentum", type=float, default=0.99, help="key encoder EMA momentum")
    parser.add_argument("--bn-groups", type=int, default=4,
                        help="batch-norm sub-batches (shuffled for the keys): MoCo's shuffle-BN; "
                             "with --distributed, in all (split between the processes)")
    args = parser.parse_args()
    data = setup(args)
    bn_groups = args.bn_groups
    if args.distributed:   # each process normalises its share in bn_groups / W sub-batches
        from minienc import distributed
        bn_groups = max(1, args.bn_groups // distributed.world_size())
    if args.queue % args.batch_size or args.queue >= len(data.x_train):
        parser.error(f"--queue {args.queue} must be a multiple of --batch-size {args.batch_size} "
                     f"and smaller than the {len(data.x_train)} train images")
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    head = projection_head(args.latent_dim, args.hidden, 64, batch_norm=False)
    # only the query encoder is trained; the key encoder follows it in after_step
    objective = MoCo(encoder, head, two_view_augment(args, data), queue_size=args.queue,
                     momentum=args.momentum, temperature=args.temperature, bn_groups=bn_groups,
                     distributed=args.distributed)
    loader, steps = two_view_batches(args, data, "MoCo v2", objective,
                                     sync_batch_norm=False)   # each process's own BN (shuffle-BN)
    optimizer = recipe_lars(args, objective)
    trainer = Trainer(objective, optimizer, **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)
    finish(args, data, "MoCo v2", encoder, random_encoder)


if __name__ == "__main__":
    main()
