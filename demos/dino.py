"""DINO on digits: a student matches its EMA teacher's centred, sharpened distribution over
prototypes (minienc/objectives/dino.py). SimCLR's encoder, optimizer, budget and augmentations
(demos/common/recipes.py's two-view recipe), its crop drawn by minienc.data.MultiCrop.

    python demos/dino.py                        # ~1 CPU minute: two global crops
    python demos/dino.py --no-center            # watch it collapse: sharpening alone lets one
                                                # prototype win (teacher entropy -> 0, KL -> 0)
    python demos/dino.py --local-crops 4        # multi-crop: 2 global + 4 local crops (~3 CPU min)

Departures from the paper, each measured on digits (docs/ssl_methods.md):
- no local crops by default: on 8x8 digits every multi-crop setting tried probed worse than two
  global crops (seed 0, 5-shot: 4 local crops of 20-50% 87.3%, two global crops 93.0%);
  --local-crops N adds them (20-50% of the image, resized to 8x8: an MLP takes one input size;
  the paper's are 5-40% at 96 pixels against 224);
- batch norm in the head's hidden layers (DINO's --use_bn_in_head, off in the paper): with the
  head's trunc_normal(0.02) init, sized for 2,048-wide layers, a 256-wide head's bottleneck
  varies by ~0.001 between images, its bias outgrows that within a few steps, and the teacher
  goes (nearly) uniform: entropy 6.93 of log K = 6.93 with LARS, 6.91 with SGD (lr 0.03,
  120 steps), 6.76 with AdamW (lr 5e-4, 1,500 steps);
- global crops of 50-100% (SimCLR's crop here; the paper 40-100%); K = 1024 prototypes behind
  a 64-wide bottleneck (65,536 and 256); teacher momentum 0.99 -> 1 (0.996 -> 1: see
  demos/byol.py); LARS as SimCLR (the paper trains ViTs with AdamW: --optimizer adamw
  --lr 5e-4 --weight-decay 0.04 --weight-decay-end 0.4; ResNets with SGD or LARS); no gradient
  clipping; the last layer is not frozen during the first epoch (here 5 steps).
Writes to runs/dino/: crops.png (the multi-crop views DINO trains on; views.png: SimCLR's pairs,
which are DINO's two global crops), curves.png (loss, teacher entropy, KL(teacher ||
student), centre norm), gauges.png (RankMe and embedding std of the teacher's encoder, of the
student's, and of the teacher's logits), embeddings.png, results.json, metrics.jsonl.
"""
import copy

from common import (collapse_gauges, finish, fit, joint_embedding_parser, mlp_encoder, recipe_lr,
                    recipe_options, save_gauges, save_grid, setup, two_view_augment,
                    two_view_batches)

from minienc.data import Compose, MultiCrop, RandomResizedCrop
from minienc.objectives import DINO, dino_head
from minienc.optim import LARS, AdamW, Cosine, LinearSchedule
from minienc.train import Trainer


def pair(text):
    low, high = (float(v) for v in text.split(","))
    return low, high


def multicrop_views(args, data, name):
    """MultiCrop: 2 global and --local-crops local crops, each with the two-view recipe's
    augmentations after its crop (rotation, jitter, noise, erasing); saves crops.png."""
    recipe = two_view_augment(args, data).augmentations
    if not isinstance(recipe[0], RandomResizedCrop):
        raise RuntimeError(f"dino demo: the two-view recipe should start with its crop, got "
                           f"{recipe[0]}")
    multicrop = MultiCrop(2, args.local_crops, args.global_scale, args.local_scale,
                          transform=Compose(recipe[1:]))
    save_grid(args, [data.x_test[:10], *multicrop(data.x_test[:10], rng=args.seed)],
              ["original", "global 1", "global 2"] + [f"local {i + 1}" for i in range(args.local_crops)],
              "crops.png", f"{name}: multi-crop views")
    return multicrop


def main():
    parser = joint_embedding_parser(__doc__)
    parser.add_argument("--prototypes", type=int, default=1024, help="K, the head's output size")
    parser.add_argument("--bottleneck", type=int, default=64, help="the head's bottleneck width")
    parser.add_argument("--local-crops", type=int, default=0)
    parser.add_argument("--global-scale", type=pair, default=(0.5, 1.0))
    parser.add_argument("--local-scale", type=pair, default=(0.2, 0.5))
    parser.add_argument("--student-temp", type=float, default=0.1)
    parser.add_argument("--teacher-temp", type=float, default=0.07, help="after the warm-up")
    parser.add_argument("--warmup-teacher-temp", type=float, default=0.04)
    parser.add_argument("--warmup-teacher-steps", type=int, default=150,
                        help="steps of the teacher temperature's warm-up (the paper: 30 of 300 epochs)")
    parser.add_argument("--center-momentum", type=float, default=0.9)
    parser.add_argument("--ema", type=float, default=0.99, help="the teacher's starting momentum")
    parser.add_argument("--no-center", action="store_true", help="no centring (collapses)")
    parser.add_argument("--optimizer", choices=["lars", "adamw"], default="lars",
                        help="lars: SimCLR's recipe; adamw: DINO's ViT recipe (then --lr 5e-4 "
                             "--weight-decay 0.04 --weight-decay-end 0.4)")
    parser.add_argument("--weight-decay-end", type=float, default=None,
                        help="weight decay rises from --weight-decay to this (cosine; default: constant)")
    parser.add_argument("--head-bn", type=int, choices=[0, 1], default=1,
                        help="batch norm in the head's hidden layers (DINO's --use_bn_in_head)")
    args = parser.parse_args()
    data = setup(args)
    name = "DINO" + (" (no centring)" if args.no_center else "")
    encoder = mlp_encoder(data, args.latent_dim)
    random_encoder = copy.deepcopy(encoder)
    # the teacher follows the student in after_step, its momentum rising from --ema to 1
    objective = DINO(encoder, dino_head(args.latent_dim, args.prototypes, args.hidden,
                                        args.bottleneck, batch_norm=bool(args.head_bn)),
                     multicrop_views(args, data, name), student_temperature=args.student_temp,
                     center_momentum=args.center_momentum, momentum=args.ema,
                     centering=not args.no_center,
                     distributed=args.distributed)   # the centre over the global batch
    gauges = collapse_gauges(args, data, encoder=objective, student=encoder,
                             logits=objective.teacher)   # the head: where DINO's collapse shows
    loader, steps = two_view_batches(args, data, name, objective,   # views.png: the global crops
                                     augment=two_view_augment(args, data))
    # the teacher temperature's warm-up sets objective.teacher_temperature before each step
    warmup = LinearSchedule(args.warmup_teacher_temp, args.teacher_temp,
                            max(1, min(args.warmup_teacher_steps, steps)))
    schedules = {"teacher_temperature": warmup}
    if args.weight_decay_end is not None:
        schedules["weight_decay"] = Cosine(args.weight_decay, args.weight_decay_end, steps)
    groups = objective.param_groups(args.weight_decay)
    optimizer = AdamW(groups, lr=args.lr) if args.optimizer == "adamw" else \
        LARS(groups, lr=recipe_lr(args), weight_decay=args.weight_decay)
    trainer = Trainer(objective, optimizer, callbacks=[gauges],
                      **recipe_options(args, data, objective, loader, steps, **schedules))
    fit(args, trainer, loader, steps)
    save_gauges(args, name, gauges, terms=("teacher_entropy", "kl", "center_norm"))
    finish(args, data, name, objective, random_encoder)   # the teacher's encoder, as DINO evaluates


if __name__ == "__main__":
    main()
