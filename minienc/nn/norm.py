"""Normalisation layers: LayerNorm, BatchNorm1d, BatchNorm2d, SyncBatchNorm (math in
minienc/ops/norm.py)."""
from .. import backend, checks, ops
from . import init
from .module import Module, _substituted


class LayerNorm(Module):
    """Normalise the last axis (size `dim`); weight 1 and bias 0 at start. affine=False gives the
    parameter-free form (I-JEPA normalises its targets this way)."""

    def __init__(self, dim, eps=1e-5, affine=True):
        self.dim = checks.positive_int("LayerNorm", "dim", dim)
        self.eps = checks.non_negative("LayerNorm", "eps", eps)
        self.weight = init.ones(init.empty((dim,))) if affine else None
        self.bias = init.empty((dim,)) if affine else None

    def forward(self, x):
        # the op checks x against the weight; without one (affine=False) the size is ours to check
        if self.weight is None and x.shape[-1:] != (self.dim,):
            raise ValueError(f"LayerNorm({self.dim}, affine=False): input has shape {x.shape}, "
                             f"expected (..., {self.dim})")
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def __repr__(self):
        return f"LayerNorm({self.dim}, eps={self.eps}, affine={self.weight is not None})"


class _BatchNorm(Module):
    ranks, layouts = (), ""  # the input ranks this layer accepts, in words for errors

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        name = type(self).__name__
        self.num_features = checks.positive_int(name, "num_features", num_features)
        self.eps = checks.non_negative(name, "eps", eps)
        self.momentum = checks.in_range(name, "momentum", momentum, 0.0, 1.0)
        self.weight = init.ones(init.empty((num_features,))) if affine else None
        self.bias = init.empty((num_features,)) if affine else None
        xp = backend.xp_for(backend.get_device())
        self.register_buffer("running_mean", xp.zeros(num_features, dtype=backend.DEFAULT_DTYPE))
        self.register_buffer("running_var", xp.ones(num_features, dtype=backend.DEFAULT_DTYPE))

    def _check(self, x):
        """The rank, which is the layer's to say (the op takes any (N, C, ...) and checks C)."""
        if x.ndim not in self.ranks:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input has shape {x.shape}, "
                             f"expected {self.layouts} with C = {self.num_features}")

    def forward(self, x):
        self._check(x)
        return ops.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                              self.training, self.momentum, self.eps)

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum})"


class BatchNorm1d(_BatchNorm):
    """Batch norm over features (N, C) or channels of sequences (N, C, L)."""
    ranks, layouts = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over the channels of images (N, C, H, W)."""
    ranks, layouts = (4,), "(N, C, H, W)"


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are over the global batch, every process's share
    together (minienc.distributed; SimCLR's "global BN"). Evaluation uses the running statistics,
    which every rank updates with the same global values. Without a distributed engine it is
    plain batch norm. `SyncBatchNorm.convert(model)` swaps every BatchNorm1d/2d in a model."""
    ranks, layouts = (2, 3, 4), "(N, C), (N, C, L) or (N, C, H, W)"

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check(x)
        from .. import distributed  # pure Python; mpi4py only comes with distributed.init()
        return distributed.sync_batch_norm(x, self.weight, self.bias, self.running_mean,
                                           self.running_var, self.momentum, self.eps)

    @classmethod
    def convert(cls, module):
        """Replace, in place, every BatchNorm1d/BatchNorm2d inside `module` by a SyncBatchNorm
        that holds the same weight, bias and running statistics (an optimizer made before still
        updates them) and accepts the same input shapes. Returns `module`, or the replacement
        when `module` is itself a batch norm."""
        def synced(layer):
            if not isinstance(layer, _BatchNorm) or isinstance(layer, cls):
                return layer
            new = object.__new__(cls)
            vars(new).update(vars(layer))
            new.ranks, new.layouts = layer.ranks, layer.layouts
            return new
        if isinstance(module, _BatchNorm):
            return synced(module)
        for m in list(module.modules()):
            for name, value in list(vars(m).items()):
                vars(m)[name] = _substituted(value, synced)
        return module

    def __repr__(self):
        return f"SyncBatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum})"
