"""Barlow Twins on digits: two views, no negatives; the cross-correlation of their projections
is pulled to the identity (minienc/objectives/barlow.py). SimCLR's encoder, augmentations,
optimizer and budget (demos/common.py's two-view recipe), so the rows compare.

    python demos/barlow.py                      # ~1 CPU minute
    python demos/barlow.py --lambd 0            # only the diagonal: redundant features are free

Writes to runs/barlow/: views.png, curves.png (the loss and both terms), gauges.png (RankMe and
embedding std of the encoder and of the projection over training), embeddings.png, results.json,
metrics.jsonl.
"""
import copy

from common import finish, joint_embedding_parser, mlp_encoder, setup, train_joint_embedding

from minienc.nn import Sequential
from minienc.objectives.barlow import BarlowTwins, barlow_projector


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--projector", type=int, default=256, help="projector output width")
    parser.add_argument("--lambd", type=float, default=5e-3, help="weight of the off-diagonal term")
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    model = BarlowTwins(encoder, barlow_projector(args.latent_dim, args.hidden, args.projector),
                        args.lambd, distributed=args.distributed)   # C of the global batch
    train_joint_embedding(args, data, "Barlow Twins", model.terms, model, model, encoder,
                          dict(encoder=encoder, projection=Sequential(encoder, model.projector)),
                          terms=("on_diagonal", "off_diagonal"))
    finish(args, data, "Barlow Twins", encoder, random_encoder)


if __name__ == "__main__":
    main()
