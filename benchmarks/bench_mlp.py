"""The MLP workloads of benchmarks/benchmark.py: mlp_ae and simclr_mlp, each three ways.

minienc builds the model from nn parts; the floor is the same network written by hand in NumPy
(CuPy on --device cuda) with no autograd at all -- forward keeping activations, a hand-derived
backward, Adam in place with out= arguments; PyTorch is the twin a reader would otherwise write.
All three start from the same weights (drawn once by minienc) and see the same batch, so the
benchmark can check that they compute the same losses before it times them.
"""
import numpy as np

import minienc
from minienc import nn
from minienc.objectives.contrastive import nt_xent
from minienc.optim import Adam


def _nt_xent(h, batch, tau):
    return nt_xent(h[:batch], h[batch:], temperature=tau)   # minienc.objectives.contrastive


class _Mlp:
    """Shared by the MLP workloads: `sizes` Linear layers with ReLU after those in `relu_after`,
    weights drawn by minienc from `seed` and kept as host arrays for the other twins."""

    lr = 1e-3

    def _build(self, sizes, relu_after, seed):
        minienc.manual_seed(seed)
        layers = []
        for (a, b), relu in zip(zip(sizes, sizes[1:]), relu_after):
            layers += [nn.Linear(a, b), nn.ReLU()] if relu else [nn.Linear(a, b)]
        self.model, self.relu_after = nn.Sequential(*layers), list(relu_after)
        # the same initial weights for every implementation: (W (out, in), b) as host arrays
        self.init = [(m.weight.numpy().copy(), m.bias.numpy().copy())
                     for m in layers if isinstance(m, nn.Linear)]

    def _parts(self, device, loss_of):
        model = self.model.to(device)
        return Adam(model.parameters(), lr=self.lr), lambda: loss_of(model), None

    def _torch_step(self, device, loss_of):
        import torch
        mods = []
        for (w, b), relu in zip(self.init, self.relu_after):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            mods += [lin, torch.nn.ReLU()] if relu else [lin]
        model = torch.nn.Sequential(*mods).to(device)
        return train_step(torch.optim.Adam(model.parameters(), lr=self.lr), lambda: loss_of(model))


def train_step(opt, loss_fn, after=None):
    """(step, loss): one training step -- zero the gradients, the loss, backward, the optimizer
    step, then `after` (an EMA update) -- and a reader of the last loss. The same loop serves
    minienc and PyTorch, whose optimizers and tensors share these method names."""
    last = {}

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        if after is not None:
            after()
        last["loss"] = loss
    return step, lambda: last["loss"].item()


class MlpAE(_Mlp):
    """Linear 64-256-256-32, ReLU between layers, mirrored decoder 32-256-256-64, MSE, Adam,
    batch 256 (the code layer and the output have no activation)."""

    name = "mlp_ae"
    sizes = [64, 256, 256, 32, 256, 256, 64]
    batch = 256

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        code = len(self.sizes) // 2 - 1          # the Linear that outputs the 32-d code
        last = len(self.sizes) - 2
        self._build(self.sizes, [i not in (code, last) for i in range(last + 1)], seed)
        rs = np.random.default_rng(seed)
        self.x = rs.normal(size=(self.batch, self.sizes[0])).astype(np.float32)

    def parts(self, device):
        x = minienc.tensor(self.x, device=device)
        return self._parts(device, lambda model: minienc.mse_loss(model(x), x))

    def numpy(self, xp):
        x = xp.asarray(self.x)
        scale = 2.0 / x.size

        def mse(y):
            diff = y - x
            loss = (diff * diff).mean()
            diff *= scale                         # d mean((y - x)^2) / dy
            return loss, diff
        return numpy_mlp(xp, self.init, self.relu_after, x, mse, self.lr)

    def torch(self, device):
        import torch
        x = torch.from_numpy(self.x).to(device)
        return self._torch_step(device, lambda model: torch.nn.functional.mse_loss(model(x), x))


class SimclrMlp(_Mlp):
    """SimCLR on vectors: encoder 64-512-512-128 (ReLU), projection head 128-128-64, NT-Xent at
    temperature 0.5 over 2 x 256 views (the two views go through the network as one batch of
    512; each row's positive is its other view, the other 510 rows are negatives), Adam.
    minienc uses minienc.objectives.contrastive.nt_xent; the floor and PyTorch the direct form
    (cross-entropy over the similarity logits with -inf on the diagonal)."""

    name = "simclr_mlp"
    sizes = [64, 512, 512, 128, 128, 64]
    relu = [True, True, False, True, False]
    batch, tau = 256, 0.5

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        self._build(self.sizes, self.relu, seed)
        rs = np.random.default_rng(seed)
        base = rs.normal(size=(self.batch, self.sizes[0]))
        views = [base + 0.1 * rs.normal(size=base.shape) for _ in range(2)]  # two noisy views
        self.x = np.concatenate(views).astype(np.float32)
        n = 2 * self.batch
        self.positive = np.concatenate([np.arange(self.batch, n), np.arange(self.batch)])
        # a row is never its own negative: -inf on the diagonal of the similarity logits
        self.self_mask = np.where(np.eye(n, dtype=bool), -np.inf, 0.0).astype(np.float32)

    def parts(self, device):
        x, b = minienc.tensor(self.x, device=device), self.batch
        return self._parts(device, lambda model: _nt_xent(model(x), b, self.tau))

    def numpy(self, xp):
        x, positive = xp.asarray(self.x), xp.asarray(self.positive)
        n, inv_tau = x.shape[0], 1.0 / self.tau
        rows = xp.arange(n)

        def nt_xent(h):
            norm = xp.sqrt((h * h).sum(axis=1, keepdims=True))
            z = h / norm
            s = z @ z.T
            s *= inv_tau
            xp.fill_diagonal(s, -xp.inf)
            s -= s.max(axis=1, keepdims=True)
            picked = s[rows, positive]                            # the positives' logits
            xp.exp(s, out=s)
            total = s.sum(axis=1, keepdims=True)
            s /= total                                            # softmax p
            loss = (xp.log(total[:, 0]) - picked).mean()
            s[rows, positive] -= 1.0                              # dL/dlogits * n = p - onehot
            s *= inv_tau / n                                      # dL/ds
            dz = (s + s.T) @ z                                    # s is z z^T: both sides
            dz -= z * (dz * z).sum(axis=1, keepdims=True)         # through z = h / ||h||
            dz /= norm
            return loss, dz
        return numpy_mlp(xp, self.init, self.relu_after, x, nt_xent, self.lr)

    def torch(self, device):
        import torch
        f = torch.nn.functional
        x = torch.from_numpy(self.x).to(device)
        mask = torch.from_numpy(self.self_mask).to(device)
        targets = torch.from_numpy(self.positive).to(device)

        def nt_xent(model):
            z = f.normalize(model(x), dim=-1)
            return f.cross_entropy(z @ z.T / self.tau + mask, targets)
        return self._torch_step(device, nt_xent)


def numpy_mlp(xp, init, relu_after, x, loss_and_grad, lr, b1=0.9, b2=0.999, eps=1e-8):
    """The floor: an MLP by hand. `loss_and_grad(y)` gives (loss, dL/dy) for the output y; the
    rest -- forward keeping activations, backward through the layers, Adam in place -- is here.
    No graph, no Python objects per op."""
    params = [(xp.asarray(w).copy(), xp.asarray(b).copy()) for w, b in init]
    flat = [a for pair in params for a in pair]
    m = [xp.zeros_like(a) for a in flat]
    v = [xp.zeros_like(a) for a in flat]
    work = [xp.empty_like(a) for a in flat]
    state = {"t": 0, "loss": None}

    def step():
        acts = [x]
        h = x
        for (w, b), relu in zip(params, relu_after):
            h = h @ w.T
            h += b
            if relu:
                xp.maximum(h, 0.0, out=h)
            acts.append(h)
        state["loss"], g = loss_and_grad(h)
        grads = [None] * len(flat)
        for i in range(len(params) - 1, -1, -1):
            w, _ = params[i]
            h_in = acts[i]
            grads[2 * i] = g.T @ h_in
            grads[2 * i + 1] = g.sum(axis=0)
            if i:
                g = g @ w
                if relu_after[i - 1]:
                    g *= h_in > 0                      # ReLU: the input to layer i is its output
        state["t"] += 1
        t = state["t"]
        root_bc2 = (1.0 - b2 ** t) ** 0.5
        step_size = lr * root_bc2 / (1.0 - b1 ** t)
        for p, gr, mi, vi, tmp in zip(flat, grads, m, v, work):
            mi *= b1
            xp.multiply(gr, 1.0 - b1, out=tmp)
            mi += tmp
            vi *= b2
            xp.multiply(gr, gr, out=tmp)
            tmp *= 1.0 - b2
            vi += tmp
            xp.sqrt(vi, out=tmp)
            tmp += eps * root_bc2
            xp.divide(mi, tmp, out=tmp)
            tmp *= step_size
            p -= tmp
    return step, lambda: float(state["loss"])


WORKLOADS = (MlpAE, SimclrMlp)
