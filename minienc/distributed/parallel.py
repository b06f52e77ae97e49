"""Data parallelism: the same model on every rank, each rank a share of the batch.

    broadcast_parameters(model)      rank 0's weights and buffers everywhere, once at the start
                                     (after checking that every rank holds the same names,
                                     shapes and dtypes: a model that differs is refused, named)
    reducer = GradientReducer(params)
    loss.backward(); reducer()       every gradient <- its average over the ranks
    optimizer.step()                 the same update on every rank: the weights stay identical

The average of the ranks' gradients of their own losses is the gradient of the average loss,
which for a loss that is a mean over samples (and equal shares) is the loss of the whole batch
on one process. The gradients are copied into a few flat buckets (one per dtype and device, up
to `bucket_bytes` each) so each bucket is one all-reduce, not one per parameter: a collective
costs a fixed latency plus its bytes, and a model has many small parameters (biases, norms).
On the NCCL engine the buckets are device arrays and the copies device kernels: nothing goes
through the host. After the reduction every gradient is a view of its bucket. Two flags ride
at the end of the first bucket at no extra collective, "I have a batch" and "stop after this
step" (Ctrl-C or SIGTERM on any rank); NCCL's vote is read one step late (GradientReducer).
"""
from .. import backend
from ..engine import Tensor
from .engines import WorldOfOne

BUCKET_BYTES = 4 * 2**20


def _engine():
    from . import engine
    return engine()


def _named_arrays(models):
    """(name, array) for every parameter and buffer of the given Modules (and Tensors), once
    each; a name is the Module's class, its place among `models` and the dotted path
    (`MLPEncoder[0].layers.0.weight`), or `tensor[i]`."""
    seen = set()
    for i, item in enumerate(models):
        if isinstance(item, Tensor):
            named = [(f"tensor[{i}]", item.data)]
        else:
            prefix = f"{type(item).__name__}[{i}]."
            named = [(prefix + n, p.data) for n, p in item.named_parameters()]  # lists, dicts too
            for path, m in item._named_modules():
                named += [(prefix + path + k, v.data) for k, v in vars(m).items()
                          if isinstance(v, Tensor)]
                named += [(prefix + path + k, a) for k, a in vars(m).get("_buffers", {}).items()]
        for name, array in named:
            if id(array) not in seen and hasattr(array, "dtype"):
                seen.add(id(array))
                yield name, array


def _arrays_of(models):
    return [array for _, array in _named_arrays(models)]


def agree_on_models(engine, named):
    """Every rank's list of (name, shape, dtype), gathered once; a ValueError on every rank,
    naming the first parameter or buffer that differs, where a rank's differs from rank 0's (a
    broadcast of unequal sizes fails without a name, and of equal sizes but other shapes would
    train on silently)."""
    mine = [(name, tuple(a.shape), a.dtype.name) for name, a in named]
    everyone = engine.allgather_object(mine)
    reference = everyone[0]
    for r, theirs in enumerate(everyone[1:], start=1):
        if theirs == reference:
            continue
        for ours, other in zip(reference, theirs):
            if ours != other:
                raise ValueError(f"distributed.broadcast_parameters: the ranks' models differ: "
                                 f"rank 0 has {_entry(ours)}, rank {r} has {_entry(other)}; "
                                 f"every rank must build the same model")
        longer = 0 if len(reference) > len(theirs) else r
        extra = (reference if longer == 0 else theirs)[min(len(reference), len(theirs))]
        raise ValueError(f"distributed.broadcast_parameters: the ranks' models differ: rank 0 "
                         f"has {len(reference)} parameters and buffers, rank {r} has "
                         f"{len(theirs)} (the first beyond the other's: rank {longer}'s "
                         f"{_entry(extra)}); every rank must build the same model")


def _entry(entry):
    name, shape, dtype = entry
    return f"{name} {shape} {dtype}"


def broadcast_parameters(*models):
    """Every parameter and buffer of `models` (Modules or Tensors) <- rank 0's, in place, once
    every rank is found to hold the same names, shapes and dtypes (agree_on_models)."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return
    named = list(_named_arrays(models))
    agree_on_models(engine, named)
    for _, array in named:
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
    rank runs the same graph, so a parameter without a gradient has none anywhere.

    Two numbers ride at the end of the first bucket, so the ranks agree on them at no extra
    collective: "I have a batch" (1; 0 from no_batch) and "stop after this step" (vote_stop).
    Both are written only when they change: the average of the ranks' 1s is 1 again, and a
    write is a kernel launch on a GPU. The vote is read on the host after the reduction: at
    once from MPI's host buffers; from NCCL's device buffers one step late (a read now would
    wait for the GPU), which every rank does alike, so all still stop after the same step."""

    FLAGS = 2   # [has a batch, votes to stop] after the first bucket's gradients

    def __init__(self, params, bucket_bytes=BUCKET_BYTES, engine=None):
        unique = {}
        for p in params:
            unique.setdefault(id(p), p)
        self.engine = engine or _engine()
        self.buckets = _buckets(list(unique.values()), bucket_bytes)
        self._flat = [None] * len(self.buckets)
        self._flags_written = False
        self.stop_voted = False     # this rank asks every rank to stop after this step
        self.on_stop = None         # called when a stop vote is counted
        self._vote_on_its_way = None    # NCCL: the last reduction's vote, copied to the host

    def _flat_buffer(self, i):
        """Bucket i's flat buffer; the first one ends with the FLAGS."""
        if self._flat[i] is None:
            bucket = self.buckets[i]
            xp = backend.get_xp(bucket[0].data)
            self._flat[i] = xp.empty(sum(p.size for p in bucket) + (self.FLAGS if i == 0 else 0),
                                     dtype=bucket[0].dtype)
        return self._flat[i]

    def no_batch(self):
        """Called on a rank whose data has ended, in place of a reduction: the first bucket
        all-reduced with zeros and its flag 0, where a rank that has a batch sends its
        gradients and 1. Returns how many ranks had a batch (a host read, once per epoch).
        When every rank's data ends together the flags sum to 0 and each rank made the same
        one reduction; otherwise the rank that ran out learns it here, not by waiting in
        a collective the others never call."""
        if isinstance(self.engine, WorldOfOne) or not self.buckets:
            return 0
        flat = self._flat_buffer(0)
        flat[...] = 0
        self.engine.allreduce_(flat)
        self._flags_written = False
        return int(round(float(flat[-2])))

    def vote_stop(self):
        """Ask every rank to stop after the step whose reduction first counts this vote (a
        signal reaches the ranks at different moments; the vote makes them agree on the step)."""
        self.stop_voted, self._flags_written = True, False

    def __call__(self):
        if isinstance(self.engine, WorldOfOne):
            return
        scale = 1.0 / self.engine.size
        for i, bucket in enumerate(self.buckets):
            flat = self._flat_buffer(i)
            if i == 0 and not self._flags_written:
                flat[-2], flat[-1] = 1, float(self.stop_voted)
                self._flags_written = True
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
        if self.on_stop is not None and self._flat and self._stop_vote_counted():
            self.on_stop()

    def _stop_vote_counted(self):
        """Whether a reduction has counted a vote to stop. Host buffers (MPI): this one's, read
        now for free. Device buffers (NCCL): this reduction's vote starts its way to the host
        and the previous one's is read, which the GPU finished long ago: no sync, and since
        every rank reads the same reduction's vote at the same step, all stop together."""
        vote = self._flat[0][-1:]
        if self.engine.name != "nccl":
            return bool(vote[0] > 0)
        previous, self._vote_on_its_way = self._vote_on_its_way, backend.to_host_later(vote)
        return previous is not None and bool(previous()[0] > 0)


class DataParallel:
    """What minienc.train.Trainer does differently when several processes train together:
    rank 0's weights everywhere at the start, gradients averaged before every optimizer step,
    the logged numbers averaged over the ranks, and each rank's RNG state in the checkpoint."""

    def __init__(self, models, optimizer, engine=None):
        self.engine = engine or _engine()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        broadcast_parameters(*models, *params)
        self.reduce_gradients = GradientReducer(params, engine=self.engine)
        self._metric_names = None   # the names every rank logs, once agreed

    @property
    def size(self):
        return self.engine.size

    def stop_together(self, on_stop):
        """From now on `on_stop()` runs on every rank after the reduction of a step in which
        any rank called vote_stop(); returns vote_stop."""
        self.reduce_gradients.on_stop = on_stop
        return self.reduce_gradients.vote_stop

    def average(self, metrics):
        """{name: 0-d array or number} -> the same names, each the mean over the ranks: one
        all-reduce for all of them, on the device (the Trainer calls it once per step). The
        names are compared across ranks the first time (and whenever they change): position i
        of the sum must be the same number on every rank."""
        names = list(metrics)
        if names != self._metric_names:
            agree("Trainer: the logged numbers", {"names (in order)": names})
            self._metric_names = names
        arrays = [v for v in metrics.values() if hasattr(v, "dtype")]
        xp = backend.get_xp(arrays[0]) if arrays else backend.numpy
        stacked = xp.stack([xp.asarray(metrics[k], dtype=xp.float64).reshape(()) for k in names])
        self.engine.allreduce_(stacked)
        stacked *= 1.0 / self.size
        return {k: stacked[i] for i, k in enumerate(names)}

    def batches(self, batches):
        """The batches of `batches` (an epoch's iterator), then, where it ends, the ranks'
        check that theirs ended too (GradientReducer.no_batch): a ValueError naming this rank
        and the epoch where another rank still had a batch."""
        given = 0
        for batch in batches:
            given += 1
            yield batch
        others = self.reduce_gradients.no_batch()
        if others:
            raise ValueError(f"distributed: rank {self.engine.rank}'s data ended after {given} "
                             f"batches of this epoch while {others} other rank(s) still had a "
                             f"batch; every rank must give the same number of batches per epoch "
                             f"(BatchIterator(..., rank=, world_size=) shares one dataset "
                             f"evenly)")

    def gather_rank_states(self, state):
        """Every rank's `state` (host values), a list in rank order (for the checkpoint)."""
        return self.engine.allgather_object(state)


def agree(where, facts, unchecked=()):
    """Every rank's `facts` (a dict of small host values) gathered in one collective; where a
    fact not named in `unchecked` differs between ranks, a ValueError on every rank naming
    each rank's value (the ranks would otherwise run different collectives and wait for each
    other forever). Returns the list of every rank's facts, in rank order."""
    everyone = _engine().allgather_object(facts)
    for name in facts:
        values = [theirs.get(name) for theirs in everyone]
        if name not in unchecked and any(v != values[0] for v in values):
            said = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"{where}: every rank must give the same {name}, got {said}")
    return everyone


def raise_together(error):
    """`error` (an exception, or None where this rank found nothing wrong) raised on EVERY rank
    when any rank has one: the first rank's, its type kept, its message prefixed with the rank
    (one collective). A refusal made on one rank alone would leave the others waiting."""
    mine = (type(error), str(error)) if error else (None, None)
    found = [(r, kind, text) for r, (kind, text) in enumerate(_engine().allgather_object(mine))
             if kind is not None]
    if not found:
        return
    rank, kind, text = found[0]
    if error is not None and rank == _engine().rank:
        raise error
    try:
        echoed = kind(f"rank {rank}: {text}")
    except TypeError:   # an exception type that takes other arguments
        echoed = RuntimeError(f"rank {rank}: {kind.__name__}: {text}")
    raise echoed


def data_parallel(models, optimizer):
    """A DataParallel over `models` (a list of Modules) and `optimizer` once init() has joined
    an engine (even a world of one under a launcher: its collectives then run for real), else
    None: a process on its own trains as it always has."""
    engine = _engine()
    if isinstance(engine, WorldOfOne):
        return None
    return DataParallel(models, optimizer, engine)
