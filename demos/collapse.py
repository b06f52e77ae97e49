"""The collapse lab: why doesn't a JEPA collapse? Each guard against collapse removed in turn.

    python demos/collapse.py                       # every variant, 400 steps each (~10 CPU min)
    python demos/collapse.py --only default,no-sg  # a few of them
    python demos/collapse.py --steps 1200          # longer runs

A joint-embedding objective can always be minimised by mapping every image to the same vector
(the predictor then predicts it for free). What stops that is never the prediction loss itself,
but a guard: an EMA target encoder that trails the trained one, a stop-gradient on the targets,
a predictor between the two branches, a term that spreads the embeddings (SIGReg, VICReg's
variance term), and what the views are (masks of one image, or augmentations). This lab trains
the same ViT on 8x8 digits with each variant (built by composition in
minienc/objectives/jepa_study.py: VARIANTS), and draws RankMe (the embeddings' effective rank:
1 = collapsed), the embedding std (0 = collapsed) and a 5-shot probe of the pooled encoder on a
fixed subset, every variant on one figure, then prints a table. Writes runs/collapse/:
collapse.png, collapse.md, collapse.json (= results.json), and each variant's Trainer run in a
folder of its own. A folder holding a lab is refused: --resume continues it (finished variants
are read back), --overwrite starts it again.
"""
import argparse
import json
import os

from common import add_threads_flag, start_run

import minienc
from minienc import nn
from minienc.data import BatchIterator, contrastive_augment, load_dataset
from minienc.eval import Evaluator
from minienc.objectives.jepa_study import VARIANTS, collapse_variant
from minienc.optim import AdamW, Cosine, WarmupCosine
from minienc.progress import MetricsFile
from minienc.train import Trainer


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
    parser.add_argument("--out", default=None, help="output folder (default: runs/collapse)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the lab in --out (finished variants are read back)")
    parser.add_argument("--overwrite", action="store_true", help="start the lab in --out again")
    add_threads_flag(parser)
    args = parser.parse_args()
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return args


def run_variant(args, name, data):
    """Train variant `name` into <out>/<name> (a Trainer run: --resume continues it)."""
    label = VARIANTS[name][0]
    minienc.manual_seed(args.seed)   # every variant starts from the same ViT
    _, size, _ = data.image_shape
    vit = nn.VisionTransformer(image_size=size, patch_size=args.patch_size, dim=args.dim,
                               depth=args.depth, num_heads=4, weight_init="xavier")
    standardize = data.standardizer()
    # the objective, built by composition in minienc/objectives/jepa_study.py
    model, groups, decay = collapse_variant(name, vit, standardize, contrastive_augment(), args.depth)
    opt = AdamW(groups, lr=args.lr)
    schedules = {"lr": WarmupCosine(args.lr, args.steps, args.steps // 8, final=1e-6, start=args.lr / 5)}
    if decay:
        schedules["weight_decay"] = Cosine(*decay, args.steps)
    # the curves: k-NN, 5-shot, RankMe and std on the Evaluator's fixed subset (1,000 train /
    # 500 test images), every `every` steps, none skipped (eval_budget=None)
    evaluator = Evaluator(lambda x: model.embed(standardize(x)), data, seed=args.seed, draws=20)
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    trainer = Trainer(model, opt, schedules=schedules,   # (and model.after_step: an EMA target)
                      log_every=args.steps, progress=False, evaluator=evaluator,
                      eval_every=args.every, eval_budget=None, out_dir=os.path.join(args.out, name))
    trainer.fit(loader, steps=args.steps, resume=args.resume, overwrite=args.overwrite)
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
    start_run(args)   # seed, threads, device, and a folder holding a lab refused unless asked
    data = load_dataset(args.data, seed=args.seed)
    print(f"data: {data}; {len(args.only)} variants x {args.steps} steps")
    progress = MetricsFile(os.path.join(args.out, "metrics.jsonl"))   # one line per variant done
    results = []
    for name in args.only:
        results.append(run_variant(args, name, data))
        if name not in {line.get("variant") for line in progress.read()}:
            progress.append({"variant": name, "step": args.steps, "rankme": results[-1]["rankme"][-1],
                             "fewshot": results[-1]["fewshot"][-1]})
    header = (f"The collapse lab on {data.name}: ViT {args.dim}d x {args.depth}, {args.steps} steps "
              f"each, seed {args.seed}; curves on a fixed subset of (at most) 1,000 train / 500 "
              f"test images")
    for name in ("collapse.json", "results.json"):   # results.json: the run is finished
        with open(os.path.join(args.out, name), "w") as f:
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
