"""Data parallelism: the same model on every rank, each rank a share of the batch.

    broadcast_parameters(model)      rank 0's weights and buffers everywhere, once at the start
    reducer = GradientReducer(params)
    loss.backward(); reducer()       every gradient <- its average over the ranks
    optimizer.step()                 the same update on every rank: the weights stay identical

The average of the ranks' gradients of their own losses is the gradient of the average loss,
which for a loss that is a mean over samples (and equal shares) is the loss of the whole batch
on one process. The gradients are copied into a few flat buckets (one per dtype and device, up
to `bucket_bytes` each) so each bucket is one all-reduce, not one per parameter: a collective
costs a fixed latency plus its bytes, and a model has many small parameters (biases, norms).
On the NCCL engine the buckets are device arrays and the copies device kernels: nothing goes
through the host. After the reduction every gradient is a view of its bucket.
"""
from .. import backend
from ..engine import Tensor
from .engines import WorldOfOne

BUCKET_BYTES = 4 * 2**20


def _engine():
    from . import engine
    return engine()


def _arrays_of(models):
    """The array of every parameter and buffer of the given Modules (and Tensors), once each."""
    seen = set()
    for item in models:
        if isinstance(item, Tensor):
            arrays = [item.data]
        else:
            arrays = [p.data for p in item.parameters()]   # those in lists and dicts too
            for m in item.modules():
                arrays += [v.data for v in vars(m).values() if isinstance(v, Tensor)]
                arrays += list(vars(m).get("_buffers", {}).values())
        for array in arrays:
            if id(array) not in seen and hasattr(array, "dtype"):
                seen.add(id(array))
                yield array


def broadcast_parameters(*models):
    """Every parameter and buffer of `models` (Modules or Tensors) <- rank 0's, in place."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return
    for array in _arrays_of(models):
        if array.flags.c_contiguous:
            engine.broadcast_(array, root=0)
        else:  # broadcast a contiguous copy, then write it back so the array keeps its identity
            array[...] = engine.broadcast_(backend.get_xp(array).ascontiguousarray(array), 0)


def _buckets(params, bucket_bytes):
    """Parameters grouped, in order, by (device, dtype), each group cut at `bucket_bytes`."""
    open_buckets, done = {}, []
    for p in params:
        key = (p.device, p.dtype)
        bucket = open_buckets.get(key)
        if bucket is None or (bucket and sum(q.data.nbytes for q in bucket) + p.data.nbytes
                              > bucket_bytes):
            bucket = open_buckets[key] = []
            done.append(bucket)
        bucket.append(p)
    return done


class GradientReducer:
    """reducer(): the .grad of every parameter in `params` <- its average over the ranks.

    A parameter whose .grad is None adds zeros and keeps no gradient: in data parallelism every
    rank runs the same graph, so a parameter without a gradient has none anywhere."""

    def __init__(self, params, bucket_bytes=BUCKET_BYTES, engine=None):
        unique = {}
        for p in params:
            unique.setdefault(id(p), p)
        self.engine = engine or _engine()
        self.buckets = _buckets(list(unique.values()), bucket_bytes)
        self._flat = [None] * len(self.buckets)

    def _flat_buffer(self, i):
        if self._flat[i] is None:
            bucket = self.buckets[i]
            xp = backend.get_xp(bucket[0].data)
            self._flat[i] = xp.empty(sum(p.size for p in bucket), dtype=bucket[0].dtype)
        return self._flat[i]

    def __call__(self):
        if isinstance(self.engine, WorldOfOne):
            return
        scale = 1.0 / self.engine.size
        for i, bucket in enumerate(self.buckets):
            flat = self._flat_buffer(i)
            offset = 0
            for p in bucket:
                part = flat[offset:offset + p.size]
                if p.grad is None:
                    part[...] = 0
                else:
                    part[...] = p.grad.reshape(-1)
                offset += p.size
            self.engine.allreduce_(flat)
            flat *= scale
            offset = 0
            for p in bucket:
                if p.grad is not None:
                    p.grad = flat[offset:offset + p.size].reshape(p.shape)
                offset += p.size


class DataParallel:
    """What minienc.train.Trainer does differently when several processes train together:
    rank 0's weights everywhere at the start, gradients averaged before every optimizer step,
    the logged numbers averaged over the ranks, and each rank's RNG state in the checkpoint."""

    def __init__(self, models, optimizer, engine=None):
        self.engine = engine or _engine()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        broadcast_parameters(*models, *params)
        self.reduce_gradients = GradientReducer(params, engine=self.engine)

    @property
    def size(self):
        return self.engine.size

    def average(self, metrics):
        """{name: 0-d array or number} -> the same names, each the mean over the ranks: one
        all-reduce for all of them, on the device (the Trainer calls it once per step)."""
        names = list(metrics)
        arrays = [v for v in metrics.values() if hasattr(v, "dtype")]
        xp = backend.get_xp(arrays[0]) if arrays else backend.numpy
        stacked = xp.stack([xp.asarray(metrics[k], dtype=xp.float64).reshape(()) for k in names])
        self.engine.allreduce_(stacked)
        stacked *= 1.0 / self.size
        return {k: stacked[i] for i, k in enumerate(names)}

    def gather_rank_states(self, state):
        """Every rank's `state` (host values), a list in rank order (for the checkpoint)."""
        return self.engine.allgather_object(state)


def data_parallel(models, optimizer):
    """A DataParallel over `models` (a list of Modules) and `optimizer` once init() has joined
    an engine (even a world of one under a launcher: its collectives then run for real), else
    None: a process on its own trains as it always has."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return None
    return DataParallel(models, optimizer, engine)
