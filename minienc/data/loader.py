"""A batch iterator over arrays that share their first axis (images and labels, token ids, ...).

The arrays are moved to the device once, when the iterator is made; each batch is then one gather
on the device. Shuffling is seeded per epoch (seed, epoch), so a run can be repeated exactly and
every epoch still sees a new order.

    loader = BatchIterator(data.x_train, data.y_train, batch_size=128, device="cuda")
    for epoch in range(10):
        for images, labels in loader:      # minienc Tensors on the device (no gradient)
            ...

Under minienc.distributed the iterator shards: `batch_size` is the GLOBAL batch, and rank r of
W gets rows [r B/W, (r + 1) B/W) of each batch the unsharded iterator would give, so W ranks
see together exactly what one process sees (same seed, same order, disjoint rows, the same
number of steps on every rank). The last, smaller batch of an epoch (without drop_last) is cut
to a multiple of W, which skips at most W - 1 of that epoch's samples.
"""
import numpy

from .. import backend, checks
from ..engine import as_array, as_tensor


class BatchIterator:
    """Batches of `arrays` (NumPy/CuPy arrays or Tensors, same length), as minienc Tensors on
    `device` (default: minienc's default device). Floating arrays become float32; integer arrays
    (labels, token ids) keep their dtype. One array gives single tensors, several give tuples.

    shuffle: a new seeded order each epoch; drop_last: skip a final batch smaller than batch_size.
    rank, world_size: this process's shard (see the module docstring); by default those of
    minienc.distributed (0 and 1 until distributed.init() joins a launcher's processes).
    """

    def __init__(self, *arrays, batch_size=128, shuffle=True, drop_last=False, seed=0, device=None,
                 rank=None, world_size=None):
        if not arrays:
            raise ValueError("BatchIterator: give at least one array")
        checks.positive_int("BatchIterator", "batch_size", batch_size)   # (True is not a size)
        checks.non_negative_int("BatchIterator", "seed", seed)   # (-1 failed at the first epoch)
        self.rank, self.world_size = _shard(rank, world_size)
        if batch_size % self.world_size:
            raise ValueError(f"BatchIterator: the global batch_size {batch_size} does not split "
                             f"into {self.world_size} equal shares (one per process)")
        device = backend.check_device(device or backend.get_device())
        data = [as_array(a) for a in arrays]
        data = [a if hasattr(a, "dtype") else numpy.asarray(a) for a in data]
        lengths = {len(a) for a in data}
        if len(lengths) != 1:
            raise ValueError(f"BatchIterator: arrays differ in length: {[len(a) for a in data]}")
        self.arrays = []
        for a in data:
            a = backend.to_device(a, device)
            if backend.is_floating(a.dtype) and a.dtype != backend.DEFAULT_DTYPE:
                a = a.astype(backend.DEFAULT_DTYPE)   # float32 throughout, as minienc.tensor does
            self.arrays.append(a)
        self.n = lengths.pop()
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.device = device
        self.epoch = 0

    def __len__(self):
        """Number of batches per epoch (the same on every rank)."""
        return len(self._batches())

    def _batches(self):
        """(start, size) of each global batch in the epoch's order; sizes split into W shares."""
        full, rest = divmod(self.n, self.batch_size)
        sizes = [self.batch_size] * full
        last = 0 if self.drop_last else rest - rest % self.world_size
        if last:
            sizes.append(last)
        return [(i * self.batch_size, size) for i, size in enumerate(sizes)]

    def set_epoch(self, epoch):
        """Choose which epoch's order the next pass uses (e.g. when resuming from a checkpoint)."""
        self.epoch = epoch

    def order(self, epoch):
        """The sample order of `epoch` (host NumPy indices)."""
        if not self.shuffle:
            return numpy.arange(self.n)
        return numpy.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        # the permutation is drawn on the host (cheap, device-independent, same on CPU and GPU)
        # and sent to the device once per epoch
        index = backend.to_device(self.order(self.epoch), self.device)
        self.epoch += 1
        for start, size in self._batches():
            share = size // self.world_size
            first = start + self.rank * share
            rows = index[first:first + share]
            batch = tuple(as_tensor(a[rows]) for a in self.arrays)
            yield batch[0] if len(batch) == 1 else batch


def _shard(rank, world_size):
    if rank is None or world_size is None:
        from .. import distributed  # pure Python: mpi4py comes only with distributed.init()
        rank = distributed.rank() if rank is None else rank
        world_size = distributed.world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"BatchIterator: rank {rank} is not one of world_size {world_size} ranks")
    return rank, world_size
