"""The JEPA demos' pictures (demos/jepa.py, demos/jepa_study.py, demos/lejepa.py): each says
what it shows and names its method.

    views_picture      masks.png      the two masked views MaskedViewsJEPA trains on
    blocks_picture     masks.png      I-JEPA's multi-block masks (demos/jepa_study.py)
    loss_terms         curves.png     the loss terms over training, and why the prediction rises
    jepa_vs_mae        jepa_vs_mae.png  the probe over training steps and over CPU seconds
    titled_loss        loss.png       the Trainer's loss per step, titled with its method
"""
import json
import os

from minienc import backend
from minienc.eval import plot_curves, plot_image_grid
from minienc.progress import MetricsFile


def _pyplot():
    import matplotlib
    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt
    return plt


def _seen(indices, n, grid, patch_size):
    """(B, K) patch indices -> (B, 1, H, W) booleans, True on the pixels of those patches."""
    np = backend.numpy
    indices = backend.to_host(indices)
    seen = np.zeros((len(indices), grid[0] * grid[1]), bool)
    seen[np.arange(len(indices))[:, None], indices] = True
    return seen.reshape(-1, 1, *grid).repeat(patch_size, 2).repeat(patch_size, 3)


def views_picture(path, images, views, masks, grid, patch_size, method):
    """Rows: the images; view 1; its context patches; view 2; its target patches. Hidden
    patches are tinted dark red (the title says so). views: the two augmented views (clipped to
    the pixels' [0, 1] for display); masks: (context, target) patch indices (B, K)."""
    np = backend.numpy
    images, views = backend.to_host(images), [backend.to_host(v).clip(0, 1) for v in views]

    def rgb(x):
        return np.repeat(x.mean(axis=1, keepdims=True), 3, axis=1)

    def masked(view, idx):
        seen = _seen(idx, len(view), grid, patch_size)                # (B, 1, H, W)
        hidden = 0.25 * rgb(view) + np.array([0.35, 0.0, 0.0])[None, :, None, None]
        return np.where(seen, rgb(view), hidden).astype(np.float32)
    k = [backend.to_host(m).shape[1] for m in masks]
    return plot_image_grid(
        [rgb(images), rgb(views[0]), masked(views[0], masks[0]), rgb(views[1]),
         masked(views[1], masks[1])], path,
        row_titles=["image", "view 1", f"context\n({k[0]} patches)", "view 2",
                    f"targets\n({k[1]} patches)"],
        title=f"{method}: two augmented views, each masked to a random half of its patches\n"
              f"(dark red = hidden). The predictor sees the context patches and predicts the "
              f"target patches' embeddings")


COLOURS = (("red", (1, 0.2, 0.2)), ("green", (0.2, 1, 0.2)), ("blue", (0.3, 0.5, 1)),
           ("yellow", (1, 0.9, 0.2)), ("magenta", (1, 0.3, 1)))


def blocks_picture(path, images, context, targets, patch_size, method):
    """Rows: the images; the context the encoder sees (the rest dimmed); the target blocks, one
    colour per block (the title says which), over the dimmed image."""
    np = backend.numpy
    pixels = backend.to_host(images)
    context, targets = backend.to_host(context), backend.to_host(targets)
    grey = pixels.mean(axis=1)                  # the targets' tint is drawn over the luminance
    n, size, _ = grey.shape
    grid = (size // patch_size,) * 2
    rgb = pixels if pixels.shape[1] == 3 else np.repeat(grey[:, None], 3, axis=1)
    context_row = rgb * np.where(_seen(context, n, grid, patch_size), 1.0, 0.2)
    target_row = rgb * 0.35
    for i in range(targets.shape[1]):
        tint = 0.35 + 0.65 * grey[:, None] * np.array(COLOURS[i % len(COLOURS)][1])[None, :, None, None]
        target_row = np.where(_seen(targets[:, i], n, grid, patch_size), tint, target_row)
    names = ", ".join(c for c, _ in COLOURS[:targets.shape[1]])
    return plot_image_grid(
        [pixels, context_row.astype(np.float32), target_row.astype(np.float32)], path,
        row_titles=["image", "context", "targets"],
        title=f"{method}: multi-block masks. Context: {context.shape[1]} patches (the rest dimmed); "
              f"targets: {targets.shape[1]} blocks of {targets.shape[2]} patches ({names})")


TERMS = {"prediction": "prediction (predictor -> target view)",
         "invariance": "invariance (LeJEPA, pooled views)", "sigreg": "SIGReg (LeJEPA)",
         "variance": "variance (VICReg)", "covariance": "covariance (VICReg)", "loss": "total loss"}
RISE = ("The prediction loss rises late while RankMe rises: SIGReg spreads the embeddings, so the\n"
        "layer-normed targets carry more about each digit and are harder to predict (not a fault).")


def loss_terms(path, metrics_path, method, evaluations=(), note=RISE, names=None):
    """curves.png: each logged loss term over training in one row of panels (RankMe beside the
    prediction loss when evaluated, since it explains its shape); the held-out probe curves are
    in evaluation.png and jepa_vs_mae.png, not repeated here. names: term -> panel title."""
    names = dict(TERMS, **(names or {}))
    logged = MetricsFile(metrics_path).curves(list(names))
    terms = {names[k]: v for k, v in logged.items() if k != "loss" or len(logged) == 1}
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(terms), figsize=(3.4 * len(terms), 3.2), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes[0], terms.items()):
        ax.plot(steps, values, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name.startswith("prediction") and evaluations:
            twin = ax.twinx()
            twin.plot([e["step"] for e in evaluations], [e["rankme"] for e in evaluations],
                      color="tab:orange", lw=1, ls="--")
            twin.set_ylabel("RankMe (held out)", color="tab:orange", fontsize=8)
    fig.suptitle(f"{method}: the loss terms over training", fontsize=10)
    if note and "prediction" in logged:
        fig.text(0.5, 0.01, note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def jepa_vs_mae(path, runs, data_name):
    """jepa_vs_mae.png: the 5-shot and k-NN probes (held-out subset) of each run over training
    steps and over its training CPU seconds. runs: label -> {"step", "cpu_s", "fewshot", "knn"},
    kept beside it in jepa_vs_mae.json."""
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(runs, f, indent=1)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, run in runs.items():
        style = "-" if label.startswith("JEPA") else "--"
        for ax, x in zip(axes, ("step", "cpu_s")):
            ax.plot(run[x], run["fewshot"], style, marker=".", label=label)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training CPU seconds (evaluations left out)")
    for ax in axes:
        ax.set_ylabel("5-shot accuracy (held-out subset)")
        ax.yaxis.set_major_formatter(_percent())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"JEPA beside MAE on {data_name}: the same ViT from the same initialisation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _percent():
    from matplotlib.ticker import PercentFormatter
    return PercentFormatter(1.0)


def titled_loss(trainer, path, method):
    """The Trainer's loss.png again, titled with the method it trained."""
    steps = list(range(1, len(trainer.losses) + 1))
    return plot_curves({"loss": (steps, trainer.losses)}, path, title=f"{method}: loss per step")
