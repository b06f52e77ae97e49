# %% [markdown]
# # A tour of minienc
#
# Five stops: tensors and backward, an op of your own, checking its gradient, one self-supervised
# objective (BYOL) trained for 2,000 steps, and a look at what its embeddings learned. As a
# script it takes about 20 seconds (16 s wall, 29 CPU s at two threads on a 2-core EPYC,
# 2026-12-06);
# `--steps 200` is a quick look.
#
# This file is a notebook in the *percent* format: VS Code opens it as cells, Jupyter does with
# jupytext installed (`pip install jupytext`), and Python runs it as a script: `python
# demos/tour.py` (`--help` for its flags; the test suite runs it with `TOUR_STEPS=5`). Pictures
# go to `runs/tour/` (`--out` or `TOUR_OUT` moves them) and show inline in a notebook; the two
# pictures of graphs need Graphviz's `dot` program (`apt install graphviz`, `brew install
# graphviz`; without it the .dot files are written and the tour goes on). Like every demo, a
# second run is refused rather than replacing the first: `--overwrite` starts it again. In a
# notebook, where running the cells again is the point, the tour starts again and says so.

# %%
import argparse
import os
import sys

import numpy as np

# the checkout's root, so `import minienc` works without an install (a notebook runs in demos/)
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
sys.path.insert(0, os.path.join(HERE, ".."))

import minienc  # noqa: E402
import minienc.run_folder  # noqa: E402  (RUN_FILES: what makes a folder hold a run)
from minienc import nn  # noqa: E402

try:
    IN_NOTEBOOK = get_ipython() is not None  # noqa: F821  (defined only inside IPython / Jupyter)
except NameError:
    IN_NOTEBOOK = False
parser = argparse.ArgumentParser(description="A tour of minienc in five stops (a notebook in the "
                                 "percent format that also runs as a script)",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--steps", type=int, default=int(os.environ.get("TOUR_STEPS", "2000")),
                    help="BYOL's training steps (TOUR_STEPS sets the default)")
parser.add_argument("--out", default=os.environ.get("TOUR_OUT", os.path.join("runs", "tour")),
                    help="where the pictures and the run go (TOUR_OUT sets the default)")
parser.add_argument("--overwrite", action="store_true", help="start again over an earlier tour in --out")
args = parser.parse_args([] if IN_NOTEBOOK else None)   # a kernel's own argv is not the tour's
OUT, STEPS = args.out, args.steps
if any(os.path.exists(os.path.join(OUT, name)) for name in minienc.run_folder.RUN_FILES):
    if not (args.overwrite or IN_NOTEBOOK):
        sys.exit(f"tour: {OUT} already holds a tour; --overwrite starts it again, --out elsewhere "
                 f"keeps it")
    print(f"tour: starting again over the tour in {OUT}")
os.makedirs(OUT, exist_ok=True)
minienc.manual_seed(0)


def show(path):
    """Display a saved picture inline in a notebook; in a script, say where it is."""
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(path))
    else:
        print("saved", path)


# %% [markdown]
# ## 1. Tensors and backward
#
# A `Tensor` holds an array (NumPy, or CuPy on a GPU) and remembers the op that made it.
# `backward()` walks those ops in reverse and leaves dL/dx in `x.grad`. Here
# L = sum(relu(x W)), so dL/dW = x^T 1[x W > 0]: we check the engine against that formula.

# %%
x = minienc.tensor([[1.0, -2.0], [3.0, 0.5]])
W = minienc.tensor([[0.5, -1.0, 2.0], [1.0, 0.3, -0.2]], requires_grad=True)
L = (x @ W).relu().sum()
L.backward()
by_hand = x.numpy().T @ ((x.numpy() @ W.numpy()) > 0).astype(np.float32)
print("L =", L.item())
print("dL/dW from backward:\n", W.grad)
assert np.allclose(W.grad, by_hand)

# %% [markdown]
# The graph that backward walked, drawn (`minienc.viz.graph`: a .dot file always, a .png where
# Graphviz is installed). Blue boxes take a gradient; `x` is data.

# %%
L = (x @ W).relu().sum()
minienc.viz.graph(L, os.path.join(OUT, "graph_relu"), names={"x": x, "W": W, "L": L})
if os.path.exists(os.path.join(OUT, "graph_relu.png")):
    show(os.path.join(OUT, "graph_relu.png"))

# %% [markdown]
# ## 2. Your own op
#
# An op is a `Function` with `forward` (arrays in, an array out; keep what backward needs) and
# `backward` (the output's gradient in, one gradient per input out). Softplus,
# log(1 + e^x), has derivative sigmoid(x). `get_xp` gives NumPy or CuPy, whichever holds the
# array, so the same op runs on the GPU.

# %%
from minienc.backend import get_xp  # noqa: E402


class Softplus(minienc.Function):
    def forward(self, x):
        self.x = x
        return get_xp(x).logaddexp(0, x)              # log(1 + e^x) without overflow

    def backward(self, grad):
        return grad / (1 + get_xp(grad).exp(-self.x))  # grad * sigmoid(x)


z = minienc.tensor([-3.0, 0.0, 2.0], requires_grad=True)
Softplus()(z).sum().backward()
print("softplus'(z) =", z.grad, " sigmoid(z) =", 1 / (1 + np.exp(-z.numpy())))

# %% [markdown]
# ## 3. Is the backward right? gradcheck
#
# `minienc.gradcheck` compares backward with central finite differences in float64, with a
# random upstream gradient. It passes for Softplus, and catches a backward that forgot a factor:

# %%
probe = minienc.tensor(np.random.default_rng(0).normal(size=(4, 3)), requires_grad=True)
print("Softplus passes:", minienc.gradcheck(lambda t: Softplus()(t), probe))


class BrokenSoftplus(Softplus):
    def backward(self, grad):
        return grad / (1 + get_xp(grad).exp(self.x))   # the sign of the exponent is wrong


try:
    minienc.gradcheck(lambda t: BrokenSoftplus()(t), probe)
except minienc.GradcheckError as error:
    print("BrokenSoftplus is caught:", str(error).splitlines()[0])

# %% [markdown]
# ## 4. One objective, trained for a few CPU minutes: BYOL
#
# BYOL (Grill et al. 2020) has no negatives: an online network predicts, from one augmented
# view, what an EMA *target* network makes of the other view. The target gets no gradient --
# the graph below shows the cut: its output enters the loss as a red "no gradient" box, and
# nothing of the target network is in the graph at all.

# %%
from minienc.data import BatchIterator, contrastive_augment, load_digits  # noqa: E402
from minienc.eval import Evaluator, evaluate, plot_embeddings, encode  # noqa: E402
from minienc.objectives.byol import BYOL, byol_mlp  # noqa: E402
from minienc.optim import Adam, WarmupCosine  # noqa: E402
from minienc.train import Trainer  # noqa: E402

data = load_digits()
encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (256, 256), 32, batch_norm=True))
random_encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (256, 256), 32, batch_norm=True))
random_encoder.load_state_dict(encoder.state_dict())   # the same start, never trained
augment = contrastive_augment()
byol = BYOL(encoder, byol_mlp(32, 256, 32), byol_mlp(32, 256, 32), augment, momentum=0.99)

images = minienc.tensor(data.x_train[:8])
view1, view2 = augment(images), augment(images)
loss = byol.loss_of_views(view1, view2)["loss"]
minienc.viz.graph(loss, os.path.join(OUT, "graph_byol"),
                  names={"online": byol.online_network, "predictor": byol.predictor,
                         "view 1": view1, "view 2": view2, "loss": loss})
if os.path.exists(os.path.join(OUT, "graph_byol.png")):
    show(os.path.join(OUT, "graph_byol.png"))

# %% [markdown]
# The `Trainer` runs the loop: schedules, the EMA update after each step (BYOL's after_step), a
# held-out evaluation every 100 steps (k-NN, 5-shot, RankMe, embedding std on a fixed subset),
# metrics.jsonl, the curves, a checkpoint. Stop it with Ctrl-C and `fit(..., resume=True)`
# continues where it stopped.

# %%
loader = BatchIterator(data.x_train, batch_size=128, drop_last=True, seed=0)
optimizer = Adam(byol.param_groups(), lr=2e-3)
trainer = Trainer(byol, optimizer, schedules={"lr": WarmupCosine(2e-3, STEPS, STEPS // 10)},
                  evaluator=Evaluator(byol.embed, data), eval_every=100, out_dir=OUT)
trainer.fit(loader, steps=STEPS, overwrite=True)   # an earlier tour here: checked at the top
if os.path.exists(os.path.join(OUT, "evaluation.png")):
    show(os.path.join(OUT, "evaluation.png"))

# %% [markdown]
# ## 5. What did the embeddings learn?
#
# The encoder never saw a label. We read its test embeddings with the labels only now: a linear
# probe, a 5-shot probe, k-NN and RankMe, beside the same encoder at its random start; and a
# picture (PCA and t-SNE), coloured by the digit each image shows.

# %%
for name, model in (("BYOL", encoder), ("random init", random_encoder)):
    evaluate(model, data, name=name, draws=20)   # prints its row
path = plot_embeddings(encode(encoder, data.x_test), data.y_test, os.path.join(OUT, "embeddings.png"),
                       title=f"BYOL after {STEPS} steps: test embeddings", tsne=True)
show(path)
