"""embedding(ids, weight) = weight[ids]: a table lookup whose backward scatters the gradient rows
back into the table, adding them up where an id repeats (backend.scatter_add)."""
from .. import kernels
from ..backend import get_xp, is_cupy, scatter_add
from ..engine import as_tensor, Function, Tensor


class EmbeddingFunction(Function):
    name = "embedding"
    index_inputs = (0,)  # the ids: integers, used as they are

    def forward(self, ids, weight):
        if ids.dtype.kind not in "iu" or weight.ndim != 2:
            raise TypeError(f"embedding: needs integer ids and a 2-D table, got ids {ids.dtype} "
                            f"{tuple(ids.shape)} and a table of shape {tuple(weight.shape)}")
        if not is_cupy(ids) and ids.size:  # a range check only where it costs no device sync
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= weight.shape[0]:
                raise IndexError(f"embedding: id {low if low < 0 else high} is out of range for a "
                                 f"table of {weight.shape[0]} rows")
        self.ids, self.table_shape = ids, weight.shape
        return weight[ids]

    def backward(self, g):
        gw = get_xp(g).zeros(self.table_shape, dtype=g.dtype)
        scatter_add(gw, self.ids.reshape(-1), g.reshape(-1, self.table_shape[1]))
        return None, gw


def embedding(ids, weight):
    if not isinstance(ids, Tensor):
        ids = as_tensor(weight.xp.asarray(ids))
    return kernels.variant(EmbeddingFunction, weight)()(ids, weight)
