"""The textbook's claims, each a measured experiment: does what the chapter says hold here?

    python demos/claims.py                          # all six on the built-in digits (~20 CPU min)
    python demos/claims.py --claim vae              # one claim (half a minute to 8 minutes)
    python demos/claims.py --data digits-canvas:32  # the same lab on other data (--data as every demo)
    python demos/claims.py --quick                  # fewer sizes, one seed, 5% of the steps

Each claim is one controlled comparison (demos/common/claims_lab.py): the same data, the same encoder
size and the same optimizer and steps within it, three seeds (--seeds) where a difference is
small. A difference COUNTS when its mean over seeds exceeds twice its standard error (the std
of the paired differences over seeds / sqrt(seeds)); with one seed nothing counts. A claim
HOLDS when every comparison it makes counts, HOLDS ONLY PARTLY when some do, and DOES NOT HOLD
when none does. The settings are the demos' defaults, fixed before any result was seen.

Writes to --out (runs/claims): claims.md (the table: claim, experiment, numbers, verdict),
results.json (every number), claim_<name>.png (one figure per claim), config.json.
"""
import json
import os
import time

import numpy as np

from common import DemoParser, add_run_flags, setup
from common import claims_lab as lab_runs

from minienc import data as D
from minienc.eval import plot_curves

STATEMENTS = {
    "autoencoder": "Autoencoders compress the input into a lower-dimensional latent space that "
                   "preserves its essential properties, trained only by reconstruction.",
    "denoising": "Denoising autoencoders (Gaussian noise, masking) learn more robust features "
                 "than a plain autoencoder.",
    "vae": "VAEs regularise the latent space with a KL divergence to a prior, which makes them "
           "useful for anomaly detection.",
    "negatives": "InfoNCE improves over the triplet loss by using larger batches and many negatives.",
    "masking": "Masked modeling (tokens, patches) makes the encoder capture context: richer embeddings.",
    "jepa": "JEPA: predicting in embedding space beats predicting pixels (semantic content, not "
            "low-level detail), and the predictor helps.",
}


# ----- the rule -------------------------------------------------------------------------------

def counts(a, b):
    """Whether a beats b: the mean of the paired differences a - b over seeds exceeds twice its
    standard error (b may be one number, for a deterministic baseline). Returns (counts, mean
    difference, standard error)."""
    diff = np.asarray(a, np.float64) - np.broadcast_to(np.asarray(b, np.float64), np.shape(a))
    if len(diff) < 2:
        return False, float(diff.mean()), float("nan")
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return bool(diff.mean() > 2 * se and diff.mean() > 0), float(diff.mean()), se


def verdict(flags):
    flags = list(flags)
    return "holds" if all(flags) else "holds only partly" if any(flags) else "does not hold"


def mean(values):
    return float(np.mean(values))


def pct(value):
    return f"{100 * value:.1f}%"


def column(runs, key):
    """[run[key] for each seed's run]"""
    return [run[key] for run in runs]


# ----- one judge per claim: the numbers, the verdict and the figure ------------------------------

def judge_autoencoder(result, figure):
    sizes = [row["size"] for row in result["sizes"]]
    won = []
    for row in result["sizes"]:
        recon = counts([-r for r in column(row["ae"], "recon")], -row["pca"]["recon"])[0]
        probe = counts(column(row["ae"], "fewshot"), row["pca"]["fewshot"])[0]
        won.append(recon and probe)
    numbers = "; ".join(
        f"{row['size']}: error {mean(column(row['ae'], 'recon')):.2f} vs {row['pca']['recon']:.2f}, "
        f"5-shot {pct(mean(column(row['ae'], 'fewshot')))} vs {pct(row['pca']['fewshot'])}"
        for row in result["sizes"])
    where = [s for s, w in zip(sizes, won) if w]
    plot_curves({name: [(sizes, [mean(column(r["ae"], key)) for r in result["sizes"]], "AE"),
                        (sizes, [r["pca"][key] for r in result["sizes"]], "PCA")]
                 for name, key in (("test squared error per image", "recon"),
                                   ("5-shot probe", "fewshot"), ("linear probe", "linear"))},
                figure, title="Claim 1: an autoencoder against PCA at the same latent size",
                xlabel="latent size")
    return {"experiment": f"MLP autoencoder (Bernoulli decoder, {result['steps']} steps) against "
                          f"PCA at latent sizes {sizes}: test squared error, 5-shot probe",
            "numbers": f"latent size: AE vs PCA -- {numbers}",
            "verdict": verdict(won),
            "detail": (f"AE beats PCA on both at sizes {where}" if where else
                       "AE beats PCA on both at no size")}


def judge_denoising(result, figure):
    curves, strengths = result["curves"], result["strengths"]
    summary = {name: {kind: [mean(run[kind][1:]) for run in runs] for kind in strengths}
               for name, runs in curves.items()}   # mean accuracy over the corrupted strengths
    flags, said = [], []
    for name in ("DAE-noise", "DAE-mask"):
        for kind in strengths:
            ok, diff, se = counts(summary[name][kind], summary["AE"][kind])
            flags.append(ok)
            said.append(f"{name} - AE under {kind}: {100 * diff:+.1f} +- {100 * se:.1f} points")
    plot_curves({f"probe accuracy under {kind}": [
        (list(strengths[kind]), [mean([run[kind][i] for run in runs]) for i in range(len(strengths[kind]))], name)
        for name, runs in curves.items()] for kind in strengths}, figure,
        title="Claim 2: probe (fit on clean images) on corrupted test images", xlabel="strength")
    numbers = "; ".join(f"{name}: noise {pct(mean(s['noise']))}, mask {pct(mean(s['mask']))}"
                        for name, s in summary.items())
    return {"experiment": f"AE, DAE (Gaussian 0.3), DAE (masking 0.25), latent 16, {result['steps']} "
                          f"steps: linear probe fit on clean images, mean accuracy over corrupted "
                          f"test images (noise std {strengths['noise'][1:]}, masked {strengths['mask'][1:]})",
            "numbers": numbers, "verdict": verdict(flags), "detail": "; ".join(said)}


def judge_vae(result, figure):
    held, ood, latent = result["held_out"], result["ood"], result["latent"]
    digits = sorted(held)
    names = list(held[digits[0]])
    per_score = {name: [held[d][name] for d in digits] for name in names}
    chance = counts(per_score["-ELBO (VAE)"], 0.5)[0]
    every_ood = all(ood[task]["-ELBO (VAE)"] > 0.5 for task in ood)
    kl_helps, diff, se = counts(per_score["-ELBO (VAE)"], per_score["reconstruction (VAE)"])
    best = max(names, key=lambda n: mean(per_score[n]))
    plot_curves({"AUROC, held-out digit": [(digits, per_score[n], n) for n in names],
                 "AUROC, changed test images": [(list(ood), [ood[t][n] for t in ood], n) for n in names],
                 "aggregate posterior vs prior": [(latent["centres"], latent["aggregate"], "q(z), pooled"),
                                                  (latent["centres"], latent["prior"], "N(0, 1)")],
                 "KL per latent dimension (sorted)": (list(range(len(latent["kl_per_dim"]))),
                                                      latent["kl_per_dim"])},
                figure, title="Claim 3: anomaly scores (higher = more anomalous) and their AUROC",
                xlabel="")
    numbers = ("held-out digit, mean AUROC over " + f"{len(digits)} digits: " +
               ", ".join(f"{n} {mean(per_score[n]):.3f}" for n in names) + "; changed images (" +
               ", ".join(ood) + "): " +
               ", ".join(f"{n} " + "/".join(f"{ood[t][n]:.2f}" for t in ood) for n in names))
    return {"experiment": f"VAE and AE (latent 16, {result['steps']} steps) trained on every digit "
                          f"but one, scoring the test digits; and on every digit, scoring changed "
                          f"test images; beside PCA and 5-NN in pixels",
            "numbers": numbers,
            "verdict": verdict([chance and every_ood, kl_helps]),
            "detail": f"-ELBO beats chance on held-out digits: {chance}; on every changed-image "
                      f"task: {every_ood}; the KL term adds to the reconstruction term: {kl_helps} "
                      f"({diff:+.3f} +- {se:.3f}); best score here: {best}"}


def judge_negatives(result, figure):
    by_batch, by_queue = result["by_batch"], result["by_queue"]
    batches, queues = sorted(by_batch["InfoNCE"]), sorted(by_queue)
    shots = {m: {b: column(runs, "fewshot") for b, runs in by_batch[m].items()} for m in by_batch}
    moco = {q: column(runs, "fewshot") for q, runs in by_queue.items()}
    beats = [counts(shots["InfoNCE"][b], shots["triplet"][b])[0] for b in batches]
    grows = counts(shots["InfoNCE"][batches[-1]], shots["InfoNCE"][batches[0]])[0]
    queue_grows = counts(moco[queues[-1]], moco[queues[0]])[0]
    plot_curves({"5-shot probe against batch size": [
        (batches, [mean(shots[m][b]) for b in batches], m) for m in ("triplet", "InfoNCE")],
        f"MoCo (batch {result['moco_batch']}): 5-shot against queue": (queues, [mean(moco[q]) for q in queues])},
        figure, title=f"Claim 4: negatives, {result['steps']} steps each", xlabel="")
    numbers = ("5-shot, triplet vs InfoNCE: " + ", ".join(
        f"batch {b}: {pct(mean(shots['triplet'][b]))} vs {pct(mean(shots['InfoNCE'][b]))}" for b in batches)
        + "; MoCo by queue: " + ", ".join(f"{q}: {pct(mean(moco[q]))}" for q in queues))
    return {"experiment": f"triplet (batch-hard) and InfoNCE (SimCLR) on the same encoder, "
                          f"augmentations and LARS, {result['steps']} steps at batch sizes "
                          f"{batches}; MoCo v2 at batch {result['moco_batch']} with queues {queues}",
            "numbers": numbers, "verdict": verdict([*beats, grows, queue_grows]),
            "detail": f"InfoNCE beats triplet at batch {[b for b, w in zip(batches, beats) if w] or 'none'}; "
                      f"InfoNCE gains from batch {batches[0]} to {batches[-1]}: {grows}; MoCo gains "
                      f"from queue {queues[0]} to {queues[-1]}: {queue_grows}"}


def judge_masking(result, figure):
    images, text = result["images"], result["text"]
    ratios = sorted(images)
    shots = {r: column(images[r], "fewshot") for r in ratios}
    standard = 0.75 if 0.75 in shots else ratios[-1]
    mae_wins, diff, se = counts(shots[standard], shots[0.0])
    mlm = next(name for name in text if name.startswith("MLM, "))
    text_linear = {name: column(runs, "linear") for name, runs in text.items()}
    text_wins, tdiff, tse = counts(text_linear[mlm], text_linear["bag of words"])
    plot_curves({"ViT: 5-shot probe against mask ratio (0 = autoencoder)": (ratios, [mean(shots[r]) for r in ratios]),
                 f"text: linear probe, which of {len(result['modules'])} modules":
                     (list(text_linear), [mean(v) for v in text_linear.values()])},
                figure, title="Claim 5: masked modeling", xlabel="")
    numbers = ("ViT 5-shot by mask ratio: " + ", ".join(f"{r:g}: {pct(mean(shots[r]))}" for r in ratios)
               + "; text, linear probe of the source module: " +
               ", ".join(f"{n} {pct(mean(v))}" for n, v in text_linear.items()))
    return {"experiment": f"MAE on one ViT at mask ratios {ratios[1:]} against the same ViT as a "
                          f"plain autoencoder (ratio 0), {result['steps']} steps; MLM "
                          f"({result['text_steps']} steps) against bag-of-words on "
                          f"{result['text_sizes'][0]}/{result['text_sizes'][1]} labelled docstring sentences",
            "numbers": numbers, "verdict": verdict([mae_wins, text_wins]),
            "detail": f"MAE {standard:g} - AE: {100 * diff:+.1f} +- {100 * se:.1f} points (counts: "
                      f"{mae_wins}); {mlm} - bag of words: {100 * tdiff:+.1f} +- {100 * tse:.1f} "
                      f"(counts: {text_wins})"}


def judge_jepa(result, figure):
    runs, seeds_low = result["runs"], result["low_level"]
    shots = {name: column(r, "fewshot") for name, r in runs.items()}
    beats_mae, diff, se = counts(shots["JEPA"], shots["MAE"])
    predictor, pdiff, pse = counts(shots["JEPA"], shots["JEPA without predictor"])
    encoders = list(seeds_low[0])
    kinds = [k for k in seeds_low[0]["JEPA"] if k != "clean"]
    shift = {e: {k: [s[e][k]["shift"] for s in seeds_low] for k in kinds} for e in encoders}
    accuracy = {e: {k: [s[e][k]["accuracy"] for s in seeds_low] for k in kinds} for e in encoders}
    # JEPA steadier under a change: MAE's and the AE's embeddings both move more than JEPA's
    steadier = [counts(shift["MAE"][k], shift["JEPA"][k])[0] and counts(shift["AE"][k], shift["JEPA"][k])[0]
                for k in kinds]
    short = {"JEPA without predictor": "no pred.", "stroke +1": "thicker", "stroke -1": "thinner"}
    ticks = [short.get(k, k.split()[0]) for k in kinds]
    plot_curves({"5-shot probe": ([short.get(n, n) for n in shots], [mean(v) for v in shots.values()]),
                 "embedding movement (relative)": [(ticks, [mean(shift[e][k]) for k in kinds], e) for e in encoders],
                 "probe accuracy, perturbed": [(ticks, [mean(accuracy[e][k]) for k in kinds], e) for e in encoders]},
                figure, title="Claim 6: JEPA against pixel prediction", xlabel="")
    numbers = ("5-shot: " + ", ".join(f"{n} {pct(mean(v))}" for n, v in shots.items()) +
               "; movement under low-level changes (mean over " + ", ".join(kinds) + "): " +
               ", ".join(f"{e} {mean([mean(shift[e][k]) for k in kinds]):.2f}" for e in encoders) +
               "; probe on changed images: " +
               ", ".join(f"{e} {pct(mean([mean(accuracy[e][k]) for k in kinds]))}" for e in encoders))
    return {"experiment": f"MaskedViewsJEPA, the same without its prediction term, MAE and the ViT as "
                          f"a plain autoencoder, one ViT, {result['steps']} steps; embedding movement "
                          f"and probe under noise, shifts, contrast, stroke width",
            "numbers": numbers,
            "verdict": verdict([beats_mae, all(steadier), predictor]),
            "detail": f"JEPA - MAE 5-shot {100 * diff:+.1f} +- {100 * se:.1f} (counts: {beats_mae}); "
                      f"JEPA moves less than MAE and AE under {[k for k, s in zip(kinds, steadier) if s] or 'none'}"
                      f" of {kinds}; predictor: {100 * pdiff:+.1f} +- {100 * pse:.1f} (counts: {predictor})"}


CLAIMS = {"autoencoder": (lab_runs.autoencoder, judge_autoencoder),
          "denoising": (lab_runs.denoising, judge_denoising),
          "vae": (lab_runs.vae, judge_vae),
          "negatives": (lab_runs.negatives, judge_negatives),
          "masking": (lab_runs.masking, judge_masking),
          "jepa": (lab_runs.jepa, judge_jepa)}


# ----- the lab --------------------------------------------------------------------------------

class Lab:
    """What every experiment shares: the data, the seeds, the probe draws and the budget."""

    def __init__(self, data, seeds, draws, steps=None, quick=False):
        self.data, self.seeds, self.draws = data, seeds, draws
        self.override, self.quick = steps, quick

    def steps(self, default):
        """An experiment's steps: its default, --steps if given, 5% of the default with --quick."""
        if self.override:
            return self.override
        return max(10, default // 20) if self.quick else default

    def pick(self, values):
        """The points of a sweep: all of them, or the first and last with --quick."""
        values = tuple(values)
        return values if not self.quick or len(values) <= 2 else (values[0], values[-1])


def table(rows):
    lines = ["| claim | experiment | numbers | verdict |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['claim']}. {row['statement']} | {row['experiment']} | {row['numbers']} "
                     f"| **{row['verdict']}**: {row['detail']} |")
    return "\n".join(lines)


def parse_args():
    parser = DemoParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claim", choices=list(CLAIMS), action="append",
                        help="run this claim (repeat for several; default: all)")
    parser.add_argument("--data", default="digits", help=D.DATA_HELP)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per compared model (--seed, +1, ...)")
    parser.add_argument("--draws", type=int, default=100, help="few-shot probe draws")
    parser.add_argument("--steps", type=int, default=None, help="every training run's steps (tests)")
    parser.add_argument("--quick", action="store_true", help="sweep ends only, one seed, 5%% of the steps")
    return add_run_flags(parser).parse_args()


def main():
    args = parse_args()
    data = setup(args)
    seeds = [args.seed] if args.quick else [args.seed + i for i in range(args.seeds)]
    lab = Lab(data, seeds, args.draws, args.steps, args.quick)
    rows, numbers = [], {}
    for number, name in enumerate(CLAIMS, 1):
        if args.claim and name not in args.claim:
            continue
        run, judge = CLAIMS[name]
        start = time.perf_counter()
        result = run(lab)
        seconds = time.perf_counter() - start
        figure = os.path.join(args.out, f"claim_{name}.png")
        row = {"claim": number, "name": name, "statement": STATEMENTS[name], **judge(result, figure),
               "seconds": round(seconds, 1), "figure": figure}
        rows.append(row)
        numbers[name] = result
        print(f"\n[{number}] {name} ({seconds:.0f} s): {row['verdict']}\n  {row['numbers']}\n  {row['detail']}")
        with open(os.path.join(args.out, "claims.md"), "w") as f:   # the table so far
            f.write(f"# Claims on {data.name}, seeds {seeds}\n\n{table(rows)}\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "numbers": numbers, "seeds": seeds}, f, indent=1,
                  default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    print(f"\n{table(rows)}\n\nwrote {args.out}/claims.md, results.json and one figure per claim")


if __name__ == "__main__":
    main()
