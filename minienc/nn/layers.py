"""Basic layers: Linear, activations, Flatten, Identity, Dropout, Embedding.

Each layer is a thin Module around an op in minienc.ops; the math and the backward live there.
Parameters are created on the default device (`minienc.set_device`) and initialised on the host
(see nn/init.py), so the same seed gives the same layer on CPU and GPU.
"""
import math

from .. import checks, ops
from . import init
from .module import Module


class Linear(Module):
    """y = x @ weight.T + bias on the last axis, for inputs of any rank (..., in_features).

    weight has PyTorch's layout (out_features, in_features) and PyTorch's default initialisation:
    kaiming_uniform with a=sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), and the bias likewise.
    """

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = checks.positive_int("Linear", "in_features", in_features)
        self.out_features = checks.positive_int("Linear", "out_features", out_features)
        self.weight = init.kaiming_uniform(init.empty((out_features, in_features)), a=math.sqrt(5.0))
        self.bias = init.linear_bias(init.empty((out_features,)), in_features) if bias else None

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)   # the op checks x's shape

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None})"


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class GELU(Module):
    """The tanh approximation of GELU (see minienc/ops/elementwise.py for why)."""

    def forward(self, x):
        return ops.gelu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Identity(Module):
    def forward(self, x):
        return x


class Flatten(Module):
    """Flatten every axis from `start_axis` on: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_axis=1):
        if not checks.is_int(start_axis):
            raise ValueError(f"Flatten: start_axis must be an integer, got {start_axis!r}")
        self.start_axis = int(start_axis)

    def forward(self, x):
        return x.reshape(*x.shape[:self.start_axis], -1)


class Unflatten(Module):
    """The inverse of Flatten: (N, C*H*W) -> (N, *shape)."""

    def __init__(self, shape):
        self.shape = checks.sizes("Unflatten", "shape", shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def check_dropout(owner, name, p):
    """A dropout probability in [0, 1) (1 would drop everything and scale by 1 / 0), checked
    under the name of whoever was given it (a model that builds Dropout layers from it)."""
    return checks.in_range(owner, name, p, 0, 1, include_high=False)


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode."""

    def __init__(self, p=0.5):
        self.p = check_dropout("Dropout", "p", p)

    def forward(self, x):
        return ops.dropout(x, self.p, self.training)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Embedding(Module):
    """A lookup table: integer ids (...) -> vectors (..., dim). Initialised N(0, 1) as PyTorch,
    or with `std` (e.g. 0.02 as BERT) when given."""

    def __init__(self, num_embeddings, dim, std=None):
        self.num_embeddings = checks.positive_int("Embedding", "num_embeddings", num_embeddings)
        self.dim = checks.positive_int("Embedding", "dim", dim)
        if std is not None:
            checks.positive("Embedding", "std", std)
        weight = init.empty((num_embeddings, dim))
        self.weight = init.normal(weight) if std is None else init.trunc_normal(weight, std=std)

    def forward(self, ids):
        return ops.embedding(ids, self.weight)

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.dim})"
