"""Triplet loss on digits. Without labels (the default) the positive of a view is the other view
of the same digit and the miner picks negatives among the other digits' views; with --labels the
positives are other digits of the same class (FaceNet's supervised form, so its row is NOT a
self-supervised result). Encoder, augmentations and optimizer are SimCLR's (demos/common.py's
two-view recipe).

    python demos/triplet.py                     # 1,000 steps, ~80 s of one CPU core
    python demos/triplet.py --miner semi_hard --margin 0.5
    python demos/triplet.py --labels --miner batch_all
"""
import copy

from common import (add_recipe_flags, finish, image_parser, mlp_encoder, setup,
                    train_contrastive)

from minienc import ops
from minienc.objectives.contrastive import MINERS, batch_triplet_loss, view_triplet_loss


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
    options = dict(miner=args.miner, margin=args.margin, squared=args.squared,
                   reduction=args.reduction)

    def loss(view1, view2, labels=None):
        # one batch through the encoder, so batch norm sees both views
        z = encoder(ops.concatenate([view1, view2]))
        n = view1.shape[0]
        if labels is None:
            return view_triplet_loss(z[:n], z[n:], **options)
        return batch_triplet_loss(z, ops.concatenate([labels, labels]).data, **options)

    name = f"triplet {args.miner}" + (" +labels" if args.labels else "")
    train_contrastive(args, data, name, loss, models=encoder, params=encoder, encoder=encoder,
                      labels=args.labels)
    finish(args, data, name, encoder, random_encoder)


if __name__ == "__main__":
    main()
