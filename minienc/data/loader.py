"""A batch iterator over arrays that share their first axis (images and labels, token ids, ...).

The arrays are moved to the device once, when the iterator is made; each batch is then one gather
on the device. Shuffling is seeded per epoch (seed, epoch), so a run can be repeated exactly and
every epoch still sees a new order.

    loader = BatchIterator(data.x_train, data.y_train, batch_size=128, device="cuda")
    for epoch in range(10):
        for images, labels in loader:      # minienc Tensors on the device (no gradient)
            ...
"""
import numpy

from .. import backend
from ..engine import as_array, as_tensor


class BatchIterator:
    """Batches of `arrays` (NumPy/CuPy arrays or Tensors, same length), as minienc Tensors on
    `device` (default: minienc's default device). Floating arrays become float32; integer arrays
    (labels, token ids) keep their dtype. One array gives single tensors, several give tuples.

    shuffle: a new seeded order each epoch; drop_last: skip a final batch smaller than batch_size.
    """

    def __init__(self, *arrays, batch_size=128, shuffle=True, drop_last=False, seed=0, device=None):
        if not arrays:
            raise ValueError("BatchIterator: give at least one array")
        if batch_size < 1:
            raise ValueError(f"BatchIterator: batch_size must be positive, got {batch_size}")
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
        """Number of batches per epoch."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

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
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        for start in range(0, stop, self.batch_size):
            rows = index[start:start + self.batch_size]
            batch = tuple(as_tensor(a[rows]) for a in self.arrays)
            yield batch[0] if len(batch) == 1 else batch
