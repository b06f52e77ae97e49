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
mean((x - mean)^2) forward, mean(dxhat) and mean(dxhat * xhat) backward (minienc/ops/norm.py).
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
from ..ops.norm import BatchNorm
from .engines import WorldOfOne


def _engine():
    from . import engine  # the engine init() chose, looked up at call time
    return engine()


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


class _AxesAcrossRanks:
    """Averages over the given axes of every rank's batch: local sums, all-reduced, divided by
    the global count. Collectives are few because each costs a latency: the count travels with
    the first sum (forward: mean(x), then the variance; backward: both averages at once)."""

    def __init__(self, axes, x, engine):
        self.axes, self.engine = axes, engine
        self.local_count = x.size // x.shape[1]
        self.count = None    # the global count: known after the first all-reduce

    def _global_sums(self, *sums):
        """The sums (each (1, C, 1, ...)) added up over the ranks, in one all-reduce."""
        xp = backend.get_xp(sums[0])
        parts = [s.reshape(-1) for s in sums]
        if self.count is None:
            parts.append(xp.full((1,), self.local_count, dtype=sums[0].dtype))
        total = xp.concatenate(parts)
        self.engine.allreduce_(total)
        if self.count is None:
            self.count = total[-1]
        width = sums[0].size
        return [total[i * width:(i + 1) * width].reshape(s.shape) for i, s in enumerate(sums)]

    def _sum(self, a):
        return a.sum(axis=self.axes, keepdims=True)

    def mean(self, a):
        total, = self._global_sums(self._sum(a))
        return total / self.count

    def dot_mean(self, a, b):
        total, = self._global_sums(self._sum(a * b))
        return total / self.count

    def mean_and_dot_mean(self, a, b):
        first, second = self._global_sums(self._sum(a), self._sum(a * b))
        return first / self.count, second / self.count


class SyncBatchNormFunction(BatchNorm):
    """ops.batch_norm whose batch statistics are over every rank's batch (training mode only)."""

    def __init__(self, engine, running_mean, running_var, momentum=0.1, eps=1e-5):
        super().__init__(running_mean, running_var, True, momentum, eps)
        self.engine = engine

    def _groups(self, x):
        return _AxesAcrossRanks(self.axes, x, self.engine)


def sync_batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
                    momentum=0.1, eps=1e-5):
    """Training-mode batch norm over the global batch (every rank must call it); at world size 1
    the plain ops.batch_norm."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        from ..ops.norm import batch_norm
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
