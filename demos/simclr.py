"""SimCLR on digits: two augmented views of every image, NT-Xent on the projection head's output,
LARS with warmup + cosine; the probe reads the encoder's output (before the head).

    python demos/simclr.py                      # 1,500 steps, ~45 s of one CPU core
    python demos/simclr.py --eval-every 100     # k-NN / 5-shot / RankMe while training
    python demos/simclr.py --device cuda --steps 20000
    mpiexec -n 2 python demos/simclr.py --distributed   # the same run on two processes

The encoder, augmentations and optimizer are demos/common.py's two-view recipe, which
demos/moco.py and demos/triplet.py use too, so the three objectives compare on equal terms.
Writes to runs/simclr/: views.png, loss.png, embeddings.png, metrics.jsonl, results.json.
"""
import copy

from common import (add_recipe_flags, finish, image_parser, mlp_encoder, setup,
                    train_contrastive)

from minienc.objectives.contrastive import SimCLR, projection_head


def main():
    parser = add_recipe_flags(image_parser(__doc__, steps=1500, latent_dim=64, batch_size=256,
                                           lr=1.0), temperature=0.5)
    args = parser.parse_args()
    data = setup(args)
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)   # the same weights, never trained: the baseline
    model = SimCLR(encoder, projection_head(args.latent_dim, args.hidden, 64), args.temperature,
                   distributed=args.distributed)   # negatives: every process's views
    train_contrastive(args, data, "SimCLR", model.loss, model, model, encoder)
    finish(args, data, "SimCLR", encoder, random_encoder)


if __name__ == "__main__":
    main()
