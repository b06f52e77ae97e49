"""The differentiable pieces of data parallelism: all_gather, batch norm over every rank, and
MoCo's shuffle of a batch across ranks.

all_gather. Rank r holds x_r (n, ...); y = [x_0; x_1; ...; x_{W-1}] (W n, ...) on every rank.
Data-parallel ranks together minimise the sum of their losses, L = sum_r L_r (the gradient
average then divides by W), and every L_r may read every x_s through y, so

    dL/dx_s = sum_r (dL_r/dy)[rows of s]:

each rank's backward sums the gradient of y over the ranks and keeps its own rows (a
reduce-scatter). Keeping only the local gradient's rows (as some GatherLayer copies do) would
drop what the other ranks' losses say about x_s.

SyncBatchNorm. Batch norm's only cross-sample quantities are its averages: mean(x) and
mean((x - mean)^2) forward, mean(dxhat) and mean(dxhat * xhat) backward (minienc/ops/norm.py):

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).

Over a batch split across ranks each is a sum over the local values, all-reduced, divided by
the global count (itself all-reduced, so shards may differ in size). The formulas are then
exactly those of one process holding the whole batch.

Shuffled forward (MoCo v2, He et al. 2020, section 3.3 "Shuffling BN"; the released code's
_batch_shuffle_ddp). A query and its positive key computed in the same batch-norm batch share
its statistics, which leak which key belongs to which query. The key images are gathered from
every rank, shuffled by one permutation drawn on rank 0 and broadcast, and each rank encodes
its share of the shuffled batch; the keys are gathered again and every rank takes back the
keys of its own images.
"""
from .. import backend
from ..engine import Function, as_array, as_tensor
from ..ops.norm import BatchNorm, batch_norm
from .engines import WorldOfOne


def _engine():
    from . import engine  # the engine init() chose, looked up at call time
    return engine()


def global_sums(engine, *local, count=None):
    """Local sums of one shape (SyncBatchNorm's (1, C, 1, ...), DINO's (1, K)) added up over the
    ranks in ONE all-reduce (each collective costs a latency); with `count`, this rank's number
    of samples, the global count too (last), so shards may differ in size."""
    xp = backend.get_xp(local[0])
    parts = [a.reshape(-1) for a in local]
    if count is not None:
        parts.append(xp.full((1,), count, dtype=local[0].dtype))
    total = engine.allreduce_(xp.concatenate(parts))
    width = local[0].size
    sums = [total[i * width:(i + 1) * width].reshape(a.shape) for i, a in enumerate(local)]
    return sums + ([total[-1]] if count is not None else [])


def batch_mean(x):
    """The mean over axis 0 of every rank's rows together, (1, ...), with no gradient (a
    constant: DINO's centre): the local sum and row count all-reduced, divided. Every rank must
    call it; at world size 1 it is x.mean(axis=0, keepdims=True)."""
    engine, x = _engine(), as_array(x)
    if isinstance(engine, WorldOfOne):
        return x.mean(axis=0, keepdims=True)
    total, count = global_sums(engine, x.sum(axis=0, keepdims=True), count=x.shape[0])
    return total / count


class AllGather(Function):
    """y = every rank's x stacked along axis 0 in rank order; backward: a reduce-scatter."""

    def __init__(self, engine):
        self.engine = engine

    def forward(self, x):
        return self.engine.allgather(x)

    def backward(self, grad):
        return self.engine.reduce_scatter(grad)


def all_gather(x):
    """Every rank's x (n, ...) stacked in rank order, (W n, ...), with a gradient (see the module
    docstring). Every rank must call it, with the same n; at world size 1 it returns x."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return x
    return AllGather(engine)(x)


class SyncBatchNormFunction(BatchNorm):
    """Training-mode batch norm of (N, C, *spatial) over every axis but C of the GLOBAL batch:
    ops.norm.BatchNorm with each of its averages a local sum, all-reduced, over the global
    count. Three all-reduces per call, as each costs a latency: (sum x, count), then
    sum (x - mean)^2, and in backward sum dxhat and sum dxhat * xhat together. The running
    statistics get the global mean and unbiased variance, the same on every rank; the
    parameters' gradients stay local sums (GradientReducer adds the ranks' up)."""

    name = "sync_batch_norm"

    def __init__(self, engine, running_mean, running_var, momentum=0.1, eps=1e-5):
        super().__init__(running_mean, running_var, True, momentum, eps)
        self.engine = engine

    def _global_sums(self, *local, count=None):
        return global_sums(self.engine, *local, count=count)

    def _batch_statistics(self, x):
        total, self.count = self._global_sums(x.sum(axis=self.axes, keepdims=True),
                                              count=x.size // x.shape[1])
        mean = total / self.count
        centered = x - mean
        squares, = self._global_sums((centered * centered).sum(axis=self.axes, keepdims=True))
        var = squares / self.count
        rstd = 1.0 / backend.get_xp(x).sqrt(var + self.eps)
        return centered * rstd, rstd, mean, var, self.count

    def _batch_statistics_backward(self, gxhat):
        sum_g, sum_g_xhat = self._global_sums(gxhat.sum(axis=self.axes, keepdims=True),
                                              (gxhat * self.xhat).sum(axis=self.axes, keepdims=True))
        return self.rstd * (gxhat - sum_g / self.count - self.xhat * (sum_g_xhat / self.count))


def sync_batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
                    momentum=0.1, eps=1e-5):
    """Training-mode batch norm over the global batch (every rank must call it); at world size 1
    the plain ops.batch_norm."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    fn = SyncBatchNormFunction(engine, running_mean, running_var, momentum, eps)
    return fn(x) if weight is None else fn(x, weight, bias)


def shuffled_forward(fn, x):
    """fn (no gradient) run on this rank's share of the whole batch in a random order that every
    rank agrees on, the outputs handed back to the rank and row each input came from (MoCo's
    shuffling BN; see the module docstring). Every rank must call it with the same n."""
    engine = _engine()
    x = as_array(x)
    if isinstance(engine, WorldOfOne):
        return fn(as_tensor(x))
    everyone = engine.allgather(x)
    total, n = everyone.shape[0], x.shape[0]
    xp = backend.get_xp(everyone)
    if engine.rank == 0:
        order = xp.argsort(backend.rng(backend.device_of(x)).random(total)).astype(xp.int64)
    else:
        order = xp.empty(total, dtype=xp.int64)
    engine.broadcast_(order, root=0)
    mine = slice(engine.rank * n, (engine.rank + 1) * n)
    out = as_array(fn(as_tensor(everyone[order[mine]])))
    outputs = engine.allgather(out)            # row j: the output for sample order[j]
    restore = xp.argsort(order)                # where each sample's output landed
    return as_tensor(outputs[restore[mine]])
