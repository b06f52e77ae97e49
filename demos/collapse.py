"""The collapse lab: why doesn't a JEPA collapse? Each guard against collapse removed in turn.

    python demos/collapse.py                       # every variant, 400 steps each (~10 CPU min)
    python demos/collapse.py --only default,no-sg  # a few of them
    python demos/collapse.py --steps 1200          # longer runs

A joint-embedding objective can always be minimised by mapping every image to the same vector
(the predictor then predicts it for free). What stops that is never the prediction loss itself,
but a guard: an EMA target encoder that trails the trained one, a stop-gradient on the targets,
a predictor between the two branches, a term that spreads the embeddings (SIGReg, VICReg's
variance term), and what the views are (masks of one image, or augmentations). This lab trains
the same ViT on 8x8 digits with each variant below (minienc/objectives/jepa.py's switches and
minienc/objectives/lejepa.py), and draws RankMe (the embeddings' effective rank: 1 = collapsed),
the embedding std (0 = collapsed) and a 5-shot probe of the pooled encoder on a fixed subset,
every variant on one figure, then prints a table. Writes runs/collapse/collapse.png,
collapse.md and collapse.json.
"""
import argparse
import json
import os

from common import add_threads_flag, start_process

import minienc
from minienc import nn
from minienc.data import BatchIterator, contrastive_augment, load_dataset
from minienc.eval import Evaluator
from minienc.objectives.jepa import IJEPA, LEJEPA_VIEWS
from minienc.objectives.lejepa import LeJEPA
from minienc.objectives.masked_image import random_masking
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.optim import AdamW, Cosine, LinearSchedule, WarmupCosine
from minienc.train import Trainer

# The JEPA family on one ViT; every variant is the DEFAULT below (demos/jepa.py's default, the
# predictor study's best: docs/jepa_study.md) with the named change.
DEFAULT = dict(LEJEPA_VIEWS, masks="halves", views="augment")
# I-JEPA's own guards (EMA target, stop-gradient, predictor) on its multi-block masks
RELEASED = dict(target_encoder="ema", stop_gradient=True, sigreg_weight=0.0, target_sees="image",
                masks="multiblock", views="mask")
VARIANTS = {
    # name: (label, family, options)
    "default": ("JEPA default: predictor + LeJEPA views", "jepa", {}),
    "no-lejepa": ("default - LeJEPA terms", "jepa", dict(sigreg_weight=0.0)),
    "no-predictor": ("default - predictor", "jepa", dict(predictor_depth=0)),
    "no-sg": ("default - stop-gradient", "jepa", dict(stop_gradient=False)),
    "masks": ("default, masks only (no augmentation)", "jepa", dict(views="mask")),
    "ijepa": ("I-JEPA: EMA + stop-grad + predictor", "jepa", RELEASED),
    "ijepa-no-ema": ("I-JEPA - EMA", "jepa", dict(RELEASED, target_encoder="shared")),
    "ijepa-no-sg": ("I-JEPA - EMA - stop-grad", "jepa", dict(RELEASED, target_encoder="shared",
                                                             stop_gradient=False)),
    "ijepa-no-predictor": ("I-JEPA - predictor", "jepa", dict(RELEASED, predictor_depth=0)),
    "ijepa-vicreg": ("I-JEPA + VICReg var/cov", "jepa", dict(RELEASED, variance_weight=0.01,
                                                              covariance_weight=0.01)),
    "lejepa": ("LeJEPA, masked views", "lejepa", dict(lam=0.02)),
    "lejepa-no-sigreg": ("LeJEPA - SIGReg", "lejepa", dict(lam=0.0)),
}
# The shared setting: demos/jepa.py's small preset (8x8 digits, 2x2 patches, ViT 64d x 4,
# predictor 32d x 4, two target blocks on a full-grid context, AdamW with I-JEPA's schedules).
SAMPLER = dict(num_targets=2, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
               context_scale=(1.0, 1.0), min_context=4, cut="random")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"from {','.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50, help="steps between the curves' points")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=os.path.join("runs", "collapse"))
    add_threads_flag(parser)
    args = parser.parse_args()
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return args


def build(args, family, options, vit, standardize):
    """(model, optimizer, step_fn, embed, schedules, after_step) of one variant."""
    augment = contrastive_augment()
    if family == "lejepa":
        model = LeJEPA(vit, proj_dim=32, hidden=256, **options)
        opt = AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)

        def step_fn(images):
            masks = [random_masking(images.shape[0], vit.num_patches, 0.5)[0] for _ in range(2)]
            return model.terms(standardize(images), masks=masks)
        return model, opt, step_fn, lambda x: model.embed(standardize(x)), {}, lambda trainer: None
    options = dict(DEFAULT, **options)
    views, masks = options.pop("views"), options.pop("masks")
    model = IJEPA(vit, predictor_dim=args.dim // 2, predictor_depth=options.pop("predictor_depth", args.depth),
                  **options)
    opt = AdamW(model.param_groups(0.04), lr=args.lr)
    sampler = MultiBlockMaskSampler(vit.grid_size, **SAMPLER)

    def sample(batch):   # I-JEPA's blocks, or two random halves (context view, target view)
        if masks == "multiblock":
            return sampler(batch)
        halves = [random_masking(batch, vit.num_patches, 0.5, device="cpu")[0] for _ in range(2)]
        return halves[0], halves[1][:, None, :]

    def step_fn(images):
        target_images = None
        if views == "augment":
            images, target_images = augment(images), standardize(augment(images))
        context, targets = sample(images.shape[0])
        return model.terms(standardize(images), context, targets, target_images)
    schedules = {"weight_decay": Cosine(0.04, 0.4, args.steps),
                 "ema_momentum": LinearSchedule(0.99, 1.0, args.steps)}
    return (model, opt, step_fn, lambda x: model.embed(standardize(x)), schedules,
            lambda trainer: model.update_target(trainer.values["ema_momentum"]))


def run_variant(args, name, data):
    label, family, options = VARIANTS[name]
    minienc.manual_seed(args.seed)   # every variant starts from the same ViT
    _, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, dim=args.dim,
                               depth=args.depth, num_heads=4, weight_init="xavier")
    model, opt, step_fn, embed, schedules, update = build(args, family, options, vit,
                                                          data.standardizer())
    schedules["lr"] = WarmupCosine(args.lr, args.steps, args.steps // 8, final=1e-6, start=args.lr / 5)
    # the curves: k-NN, 5-shot, RankMe and std on the Evaluator's fixed subset (1,000 train /
    # 500 test images), every `every` steps, none skipped (eval_budget=None)
    evaluator = Evaluator(embed, data, seed=args.seed, draws=20)
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    trainer = Trainer(step_fn, opt, models={name: model}, schedules=schedules, callbacks=[update],
                      log_every=args.steps, progress=False, evaluator=evaluator,
                      eval_every=args.every, eval_budget=None)
    trainer.fit(loader, steps=args.steps)
    curves = {key: [e[key] for e in trainer.evaluations] for key in ("step", "rankme", "std", "fewshot", "knn")}
    curves["train_s"] = trainer.elapsed_s - trainer.eval_s   # wall seconds, evaluations left out
    print(f"{label:<38} RankMe {curves['rankme'][0]:5.1f} -> {curves['rankme'][-1]:5.1f}   std "
          f"{curves['std'][-1]:.3f}   5-shot {curves['fewshot'][0]:.1%} -> {curves['fewshot'][-1]:.1%}"
          f"   ({curves['train_s']:.0f} s)", flush=True)
    return dict(curves, name=name, label=label)


def figure(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("rankme", "RankMe (effective rank)", True), ("std", "embedding std", True),
              ("fewshot", "5-shot probe (subset)", False)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cmap = plt.get_cmap("tab20")
    for i, r in enumerate(results):
        style = "-" if not r["name"].startswith(("ijepa", "lejepa")) else ("--" if "ijepa" in r["name"] else ":")
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot(r["step"], r[key], style, color=cmap(i % 20), label=r["label"], linewidth=1.6)
    for ax, (_, name, log) in zip(axes, panels):
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[2].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results, header):
    lines = [header, "", "| variant | RankMe at init -> end | embedding std | 5-shot at init -> end | train s |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['rankme'][0]:.1f} -> **{r['rankme'][-1]:.1f}** | "
                     f"{r['std'][-1]:.3f} | {r['fewshot'][0]:.1%} -> **{r['fewshot'][-1]:.1%}** | "
                     f"{r['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    start_process(args)
    os.makedirs(args.out, exist_ok=True)
    data = load_dataset(args.data, seed=args.seed)
    print(f"data: {data}; {len(args.only)} variants x {args.steps} steps")
    results = [run_variant(args, name, data) for name in args.only]
    header = (f"The collapse lab on {data.name}: ViT {args.dim}d x {args.depth}, {args.steps} steps "
              f"each, seed {args.seed}; curves on a fixed subset of (at most) 1,000 train / 500 "
              f"test images")
    with open(os.path.join(args.out, "collapse.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = table(results, header)
    with open(os.path.join(args.out, "collapse.md"), "w") as f:
        f.write(md)
    figure(results, os.path.join(args.out, "collapse.png"),
           f"The collapse lab: each guard removed in turn ({data.name}, {args.steps} steps)")
    print("\n" + md)
    print(f"wrote {args.out}/collapse.png, collapse.md, collapse.json")


if __name__ == "__main__":
    main()
