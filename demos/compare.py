"""Train every objective on the same data and compare their embeddings in one table.

Each objective runs as its own demo script with that demo's defaults (its best setting found,
a few minutes of CPU at most) and is evaluated the same way, by demos/common/runs.py's report: a linear
probe, a 5-shot probe, weighted k-NN and RankMe on frozen test-split embeddings, with the
training seconds and parameter count. Beside them: raw pixels, PCA to each encoder's dimension,
and each encoder at its random initialisation. Writes <out>/compare.md, compare.json and
compare.png (a bar chart), and each demo's own figures under <out>/<demo>/. Like every demo, it
refuses a folder that holds a comparison unless --resume (each demo continues its own run) or
--overwrite (each starts again) says what to do.

    python demos/compare.py                           # every objective on digits, CPU
    python demos/compare.py --only ae,simclr,jepa     # a subset
    python demos/compare.py --device cuda             # the same on the GPU
"""
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from minienc.progress import progress_bar  # noqa: E402

from common import RUN_FILES, DemoParser  # noqa: E402

# name -> (label, script, extra flags, flags for --quick)
OBJECTIVES = {
    "ae": ("autoencoder", "autoencoder.py", [], ["--steps", "10"]),
    "dae": ("denoising AE", "denoising.py", [], ["--steps", "10"]),
    "vae": ("VAE", "vae.py", [], ["--steps", "10"]),
    "triplet": ("triplet", "triplet.py", [], ["--steps", "10"]),
    "simclr": ("SimCLR", "simclr.py", [], ["--steps", "10"]),
    "moco": ("MoCo v2", "moco.py", [], ["--steps", "10", "--queue", "256"]),
    "mae": ("MAE", "mae.py", [], ["--steps", "10", "--dim", "16", "--depth", "1",
                                  "--decoder-depth", "1"]),
    "jepa": ("JEPA", "jepa.py", ["--no-mae"], ["--steps", "10", "--eval-every", "5",
                                                 "--dim", "16", "--depth", "1"]),
    "lejepa": ("LeJEPA", "lejepa.py", [], ["--steps", "10", "--eval-every", "5",
                                           "--dim", "16", "--depth", "1", "--num-views", "2"]),
}
# the joint-embedding methods without negatives (SimCLR's encoder, augmentations and budget)
OBJECTIVES.update({
    "byol": ("BYOL", "byol.py", [], ["--steps", "10", "--monitor-every", "5"]),
    "simsiam": ("SimSiam", "simsiam.py", [], ["--steps", "10", "--monitor-every", "5"]),
    "vicreg": ("VICReg", "vicreg.py", [], ["--steps", "10", "--monitor-every", "5"]),
    "barlow": ("Barlow Twins", "barlow.py", [], ["--steps", "10", "--monitor-every", "5"]),
    "dino": ("DINO", "dino.py", [], ["--steps", "10", "--monitor-every", "5"]),
})
# and with --quick every demo trains on a few hundred images (a smoke run: most of its time is
# then the imports, the figures and the evaluation, whatever it trains)
QUICK_DATA = ["--max-train", "300", "--max-test", "100"]
COLUMNS = ("linear", "fewshot", "knn")


def run_objective(name, args, say=print):
    """Run one demo in a subprocess (its own process: no state leaks between objectives) in
    <out>/<name>, continuing (--resume) or starting again over (--overwrite) an earlier run
    there; its output goes to <out>/<name>/log.txt, one line to `say`."""
    label, script, extra, quick = OBJECTIVES[name]
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    command = [sys.executable, os.path.join(HERE, script), "--data", args.data, "--seed", str(args.seed),
               "--out", out, "--draws", str(args.draws),
               "--resume" if args.resume else "--overwrite", *extra,
               *(quick + QUICK_DATA if args.quick else [])]
    for flag, value in (("--device", args.device), ("--threads", args.threads)):
        if value is not None:
            command += [flag, str(value)]
    start = time.perf_counter()
    with open(os.path.join(out, "log.txt"), "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        say(f"{label:<14} python demos/{script}: FAILED (exit {code}; see {out}/log.txt)")
        return None
    with open(os.path.join(out, "results.json")) as f:
        records = json.load(f)
    say(f"{label:<14} python demos/{script}: done in {seconds:.0f} s, 5-shot {records[0]['fewshot']:.1%}")
    return label, records


def collect(results):
    """One row per objective, then the baselines: raw pixels and each PCA size once, and each
    objective's random-init encoder -- one row for encoders whose random init scores the same
    (the autoencoders share an architecture, and so do the contrastive encoders)."""
    rows = [dict(records[0], method=label) for label, records in results]
    baselines = {}
    for label, records in results:
        for record in records[1:]:
            if not record.get("baseline"):   # a demo's extra rows (JEPA's context encoder)
                continue
            scores = tuple(round(record[k], 6) for k in ("linear", "fewshot", "knn", "rankme"))
            key = ("random", scores) if record["method"] == "random init" else (record["method"],)
            if key not in baselines:
                name = f"random {label}" if key[0] == "random" else record["method"]
                baselines[key] = dict(record, method=name, baseline=True)
            elif key[0] == "random":
                baselines[key]["method"] += f", {label}"
    return rows + list(baselines.values())


def markdown(rows, header):
    lines = [header, "",
             "| method | dim | linear | 5-shot | k-NN | RankMe | align | unif | train s | params |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        seconds = f"{r['train_s']:.0f}" if r.get("train_s") is not None else ""
        params = f"{r['params']:,}" if r.get("params") else ""
        name = f"*{r['method']}*" if r.get("baseline") else f"**{r['method']}**"
        align_unif = " | ".join("" if r.get(k) is None else f"{r[k]:.2f}" for k in ("align", "unif"))
        lines.append(f"| {name} | {r['dim']} | {r['linear']:.1%} | {r['fewshot']:.1%} ± "
                     f"{r['fewshot_std']:.1%} | {r['knn']:.1%} | {r['rankme']:.1f} | {align_unif} | "
                     f"{seconds} | {params} |")
    return "\n".join(lines) + "\n"


QUICK_NOTE = "QUICK smoke run (10 steps each, 300 images): not a result"


def held_comparison(out):
    """What in `out` says it holds a comparison: its compare.* files and the demo folders that
    hold a run."""
    held = [name for name in ("compare.json", "compare.md", "compare.png")
            if os.path.exists(os.path.join(out, name))]
    return held + [f"{name}/" for name in OBJECTIVES
                   if any(os.path.exists(os.path.join(out, name, f)) for f in RUN_FILES)]


def bar_chart(rows, path, title, quick=False):
    """Horizontal grouped bars, one group per row (baselines hatched), so that long baseline
    names ("random triplet, SimCLR, ...") stay readable. The bars start at 0% (lengths compare);
    a --quick run says so across the figure."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    height = 0.27
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.42 * len(rows)))
    names = {"linear": "linear probe", "fewshot": "5-shot probe", "knn": "k-NN"}
    for i, column in enumerate(COLUMNS):
        ys = [j + (i - 1) * height for j in range(len(rows))]
        bars = ax.barh(ys, [r[column] * 100 for r in rows], height, label=names[column])
        for bar, r in zip(bars, rows):
            if r.get("baseline"):
                bar.set_hatch("//")
                bar.set_alpha(0.55)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([textwrap.fill(r["method"], 34) for r in rows], fontsize=8)
    ax.invert_yaxis()    # the table's order, top to bottom
    ax.set_xlabel("test accuracy (%)")
    ax.set_xlim(0, 100)
    if quick:
        title = f"{title}\n{QUICK_NOTE}"
        ax.text(0.5, 0.5, "QUICK: not a result", transform=ax.transAxes, rotation=25, fontsize=40,
                color="red", alpha=0.25, ha="center", va="center")
    ax.set_title(title, fontsize=10, pad=22)
    ax.legend(fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = DemoParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(OBJECTIVES), help=f"from {','.join(OBJECTIVES)}")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="each demo's --threads (default: its own start-up probe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--out", default=os.path.join("runs", "compare"))
    parser.add_argument("--quick", action="store_true", help="10 steps each on 300 train and 100 test images, small ViTs "
                        "(a smoke run, not a result)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the comparison in --out: each demo continues its own run "
                             "(a finished one is evaluated again, with the same numbers)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the comparison in --out again (each demo over its own run)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        parser.error(f"unknown objectives {unknown}; choose from {list(OBJECTIVES)}")
    if args.resume and args.overwrite:
        parser.error("--resume continues the comparison in --out, --overwrite starts it again: choose one")
    held = held_comparison(args.out)
    if held and not (args.resume or args.overwrite):
        sys.exit(f"compare: {args.out} already holds a comparison ({', '.join(held)}). Add --resume "
                 f"to continue it (each demo continues its own run), --overwrite to start it "
                 f"again, or choose another --out.")
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    bar = progress_bar(len(names), unit="objective")   # each demo's own bar is in its log.txt
    results = []
    for name in names:
        bar.set_postfix_str(name)
        if (result := run_objective(name, args, say=bar.write)):
            results.append(result)
        bar.update(1)
    bar.close()
    if not results:
        sys.exit("compare: every objective failed")
    rows = collect(results)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    header = (f"Embeddings on {args.data} (test split), {datetime.date.today()}, device "
              f"{args.device or 'default'}, {machine}, total {time.perf_counter() - start:.0f} s"
              f"{f' ({QUICK_NOTE})' if args.quick else ''}")
    table = markdown(rows, header)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(rows, f, indent=1)
    bar_chart(rows, os.path.join(args.out, "compare.png"), f"every objective on {args.data}",
              quick=args.quick)
    print("\n" + table)
    print(f"wrote {args.out}/compare.md, compare.json, compare.png")
    return rows


if __name__ == "__main__":
    main()
