"""Figures every demo saves as PNG: 2-D PCA (and t-SNE) scatters of embeddings coloured by label,
grids of images (inputs, reconstructions, samples, augmented views), and curves of metrics over
training.

matplotlib is imported on first use with the Agg backend (no display needed), so importing
minienc.eval never requires it. Every function takes arrays or Tensors on any device, writes
`path` (creating its folder) and returns the path.
"""
import os

from .. import backend
from ..engine import as_array
from .baselines import fit_pca
from .features import as_features, has_labels


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install -e '.[demos]' or pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _host(x):
    return backend.to_host(as_array(x))


def _save(fig, path):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def tsne_map(z, seed=0):
    """A 2-D t-SNE map (scikit-learn's TSNE, PCA-initialised, seeded) of host features z (n, D),
    or None (and a line saying why) without scikit-learn or with fewer than 5 points."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        print("plot_embeddings: no t-SNE panel (it needs scikit-learn: pip install scikit-learn)")
        return None
    if len(z) < 5:
        return None
    perplexity = min(30.0, (len(z) - 1) / 3)   # TSNE needs perplexity < n; 30 is its default
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    try:   # one OpenMP thread: on a shared or busy CPU its spinning threads ran it 10x slower
        from threadpoolctl import threadpool_limits
    except ImportError:
        return tsne.fit_transform(z.astype("float64"))
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(z.astype("float64"))


def plot_embeddings(embeddings, labels, path, title="embeddings (PCA)", max_points=3000,
                    tsne=False, tsne_points=1000, seed=0):
    """Scatter of the first two principal components of `embeddings` (N, D), coloured by label.
    With `tsne`, a t-SNE map of up to `tsne_points` of them beside it: PCA keeps the global
    geometry (a linear view along the two widest directions), t-SNE keeps neighbourhoods (which
    points cluster together) and distorts the distances between clusters."""
    plt = _pyplot()
    z = as_features(embeddings, "embeddings")
    if z.shape[1] < 2:
        raise ValueError(f"plot_embeddings: need at least 2 dimensions, got {z.shape[1]}")
    mean, components = fit_pca(z, 2)
    xy = _host((z - mean) @ components)
    labels = _host(labels)
    labeled = has_labels(labels)   # unlabeled images (-1) are drawn in one colour
    step = max(1, len(xy) // max_points)     # a regular subsample keeps big sets readable
    panels = [("PC 1", "PC 2", "PCA", xy[::step], labels[::step])]
    if tsne:
        step = max(1, len(xy) // tsne_points)
        mapped = tsne_map(_host(z)[::step], seed)
        if mapped is not None:
            panels.append(("t-SNE 1", "t-SNE 2", "t-SNE", mapped, labels[::step]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (xlabel, ylabel, name, points, colours) in zip(axes[0], panels):
        drawn = ax.scatter(points[:, 0], points[:, 1], c=colours if labeled else None,
                           cmap="tab10" if labeled else None, s=6, alpha=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(panels) > 1:
            ax.set_title(name)
    if labeled:
        axes[0, 0].legend(*drawn.legend_elements(), title="label", fontsize=7, loc="best",
                          markerscale=0.8)
    (fig.suptitle if len(panels) > 1 else axes[0, 0].set_title)(title)
    return _save(fig, path)


def _in_unit(images):
    """Each image scaled into [0, 1]: as it is when the whole row already lies there (so 0 is
    black and 1 white and rows compare), else each by its own [min, max]."""
    np = backend.numpy
    if images.min() >= 0 and images.max() <= 1:
        return images
    axes = tuple(range(1, images.ndim))
    low, high = images.min(axis=axes, keepdims=True), images.max(axis=axes, keepdims=True)
    return (images - low) / np.maximum(high - low, 1e-12)


def _mosaic(images, cols):
    """One image of `cols` cells side by side (white gaps and white empty cells) from images
    (n, H, W) or (n, H, W, 3) in [0, 1]."""
    np = backend.numpy
    n, h, w = images.shape[:3]
    gap = max(1, w // 8)
    canvas = np.ones((h, cols * w + (cols - 1) * gap) + images.shape[3:], dtype=np.float32)
    for j in range(n):
        canvas[:, j * (w + gap):j * (w + gap) + w] = images[j]
    return canvas


def plot_image_grid(rows, path, row_titles=None, title=None, cell=0.9):
    """One row of images per entry of `rows` (each (n, C, H, W) or (n, H, W); C = 1 grey or 3
    RGB), with an optional title at the left of each row. Each image is shown on its own
    [min, max] unless the row lies in [0, 1] (then 0 is black and 1 white, so rows compare).
    Each row is drawn as one picture, so a grid of a hundred images costs one image."""
    plt = _pyplot()
    rows = [_host(r) for r in rows]
    rows = [r[:, 0] if r.ndim == 4 and r.shape[1] == 1 else
            (r.transpose(0, 2, 3, 1) if r.ndim == 4 else r) for r in rows]
    for r in rows:
        if r.ndim not in (3, 4) or (r.ndim == 4 and r.shape[3] != 3):
            raise ValueError(f"plot_image_grid: each row must be (n, H, W), (n, 1, H, W) or "
                             f"(n, 3, H, W) images, got a row of shape {tuple(r.shape)}")
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(cell * cols + (1.2 if row_titles else 0),
                                                    cell * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        ax = axes[i, 0]
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.imshow(_mosaic(_in_unit(row.astype("float32")), cols), cmap="gray", vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        if row_titles:
            ax.set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=8)
    if title:   # anchored by its bottom just above the top row, however many lines it has
        fig.suptitle(title, y=fig.subplotpars.top + 0.01, va="bottom")
    return _save(fig, path)


def plot_curves(curves, path, title=None, xlabel="step", log_scale=()):
    """One panel per metric. `curves` maps a name to a list of values (x = 0, 1, ...), to a pair
    (xs, ys), or to a list of triples (xs, ys, label) drawn together with a legend; names listed
    in `log_scale` get a log y axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        if isinstance(curve, list) and curve and isinstance(curve[0], tuple):
            for xs, ys, label in curve:
                ax.plot(list(xs), [float(y) for y in ys], label=label, lw=1.0)
            ax.legend(fontsize=7)
        else:
            xs, ys = curve if isinstance(curve, tuple) else (range(len(curve)), curve)
            ax.plot(list(xs), [float(y) for y in ys], marker="." if len(ys) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if name in log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_training(losses, path, evaluations=(), evaluation_path=None, eval_every=None):
    """The Trainer's figures: `path` gets the loss per step (with a running mean over 1/50 of
    the run); with `evaluations` ({"step", name: value} per evaluation), `evaluation_path` gets
    the loss beside each evaluated number over the steps. Returns the paths written."""
    from .monitor import EVAL_NAMES
    steps = list(range(1, len(losses) + 1))
    window = max(1, len(losses) // 50)
    loss_curve = (steps, losses)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        loss_curve = [(steps, losses, "loss"), (steps, smooth, f"mean of {window}")]
    written = [plot_curves({"loss": loss_curve}, path)]
    if evaluations and evaluation_path:
        at = [e["step"] for e in evaluations]
        curves = {"loss": loss_curve}
        for key in evaluations[-1]:
            if key != "step":
                curves[EVAL_NAMES.get(key, key)] = (at, [e.get(key, float("nan")) for e in evaluations])
        every = f"every {eval_every} steps" if eval_every else "at the start and the end"
        written.append(plot_curves(curves, evaluation_path,
                                   title=f"training, with the held-out evaluation {every}"))
    return written
