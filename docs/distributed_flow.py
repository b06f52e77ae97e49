"""Draws docs/images/distributed_flow.png: one data-parallel SimCLR step on two processes.

    python docs/distributed_flow.py
"""
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

HERE = os.path.dirname(os.path.abspath(__file__))
RANK_COLOURS = ("#dbe9f6", "#fde3cf")
SHARED = "#e2f0d9"


def box(ax, x, y, w, h, text, colour, size=8.5, bold=False):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="#555555", linewidth=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size,
            weight="bold" if bold else "normal")


def arrow(ax, start, end, colour="#444444", style="-|>", dashed=False):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=colour,
                                 linewidth=1.0, linestyle="--" if dashed else "-"))


def main(path=os.path.join(HERE, "images", "distributed_flow.png")):
    fig = Figure(figsize=(11, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 5.6)
    ax.axis("off")
    ax.text(5.5, 5.35, "one SimCLR step on 2 processes (global batch B: B/2 images each)",
            ha="center", fontsize=11, weight="bold")

    columns = [0.15, 1.75, 3.45, 5.3, 7.1, 9.1]
    widths = [1.35, 1.45, 1.6, 1.55, 1.75, 1.75]
    rows = {0: 3.55, 1: 0.75}
    steps = ["BatchIterator\nrows [r B/2, (r+1) B/2)\nof each global batch",
             "two views\n(this rank's RNG)",
             "encoder + head\nwith SyncBatchNorm",
             "z: 2 x B/2 views",
             "NT-Xent: my B views\nvs all 2B views\n(minus self, positive)",
             "backward, then\nGradientReducer:\naverage in buckets"]
    for r, y in rows.items():
        ax.text(0.15, y + 1.12, f"rank {r}", fontsize=9.5, weight="bold",
                color="#1f4e79" if r == 0 else "#9c4a00")
        for i, (x, w, text) in enumerate(zip(columns, widths, steps)):
            box(ax, x, y, w, 0.95, text, RANK_COLOURS[r], size=7.8)
            if i:
                arrow(ax, (columns[i - 1] + widths[i - 1], y + 0.47), (x, y + 0.47))

    middle = 2.62
    # SyncBatchNorm: statistics over both ranks
    box(ax, 3.45, middle - 0.3, 1.6, 0.6, "all-reduce: sums, count\n(mean, var, and in backward)",
        SHARED, size=7)
    for y in rows.values():
        arrow(ax, (4.25, y + (0 if y > middle else 0.95)), (4.25, middle + (0.3 if y > middle else -0.3)),
              style="<|-|>")
    # all_gather of the embeddings
    box(ax, 5.3, middle - 0.3, 1.55, 0.6, "all_gather (rank order)\nbackward: reduce-scatter",
        SHARED, size=7)
    for y in rows.values():
        arrow(ax, (6.07, y + (0 if y > middle else 0.95)), (6.07, middle + (0.3 if y > middle else -0.3)),
              style="<|-|>")
    arrow(ax, (6.85, middle), (7.1, rows[0] + 0.2), dashed=True)
    arrow(ax, (6.85, middle), (7.1, rows[1] + 0.75), dashed=True)
    # gradient average
    box(ax, 9.1, middle - 0.3, 1.75, 0.6, "all-reduce of flat buckets\n/ 2: identical gradients",
        SHARED, size=7)
    for y in rows.values():
        arrow(ax, (9.97, y + (0 if y > middle else 0.95)), (9.97, middle + (0.3 if y > middle else -0.3)),
              style="<|-|>")
    ax.text(5.5, 0.18, "then the same optimizer step on every rank: the weights stay identical "
            "(rank 0's were broadcast at the start); rank 0 alone logs, evaluates and checkpoints",
            ha="center", fontsize=8.5, style="italic")
    ax.text(0.15, middle, "MPI (NumPy, CPUs)\nor NCCL (CuPy, GPUs)", fontsize=7.5, va="center",
            color="#385723")
    fig.savefig(path)
    return path


if __name__ == "__main__":
    print(main())
