"""Layer norm and batch norm, each one op with a hand-written backward.

Both standardise x over some axes, xhat = (x - mean) / sqrt(var + eps), then apply an optional
per-feature affine map y = xhat * weight + bias. Over the M values of one group the gradient of
the standardisation is

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),     dxhat = dy * weight,

which is one short expression instead of the ten graph nodes that mean/var/sqrt/div would build.
Layer norm (Ba et al. 2016) groups the last axis of each sample; batch norm (Ioffe & Szegedy
2015) groups every axis but the channel axis 1, and keeps running statistics for evaluation.
"""
from .. import checks, kernels
from ..backend import get_xp
from ..engine import Function


def _standardize(x, axes, eps):
    """xhat = (x - mean) * rstd over `axes`; returns (xhat, rstd, mean, var), the statistics
    shaped to broadcast against x."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    rstd = 1.0 / get_xp(x).sqrt(var + eps)
    return centered * rstd, rstd, mean, var


def _standardize_backward(gxhat, xhat, rstd, axes):
    """dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) over `axes`."""
    return rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                   - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))


def check_layer_norm(x, weight, bias):
    """The one check of an affine layer norm's shapes, for nn.LayerNorm and direct callers alike
    (the error names the layer the weight would make)."""
    if weight is None:
        return
    if weight.ndim != 1 or bias.shape != weight.shape:
        raise ValueError(f"layer_norm: weight and bias must both have shape (D,), got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    if x.shape[-1:] != weight.shape:
        dim = weight.shape[0]
        raise ValueError(f"layer_norm: a weight and bias of shape ({dim},), as in LayerNorm({dim}), "
                         f"take inputs (..., {dim}); got shape {tuple(x.shape)}")


class LayerNormFunction(Function):
    """Normalise over the last axis; weight and bias (both or neither) have shape (D,)."""

    name = "layer_norm"

    def __init__(self, eps=1e-5):
        self.eps = checks.non_negative("layer_norm", "eps", eps)

    def forward(self, x, weight=None, bias=None):
        check_layer_norm(x, weight, bias)
        self.weight = weight
        self.xhat, self.rstd, _, _ = _standardize(x, -1, self.eps)
        return self.xhat if weight is None else self.xhat * weight + bias

    def backward(self, g):
        xhat, w = self.xhat, self.weight
        gx = None
        if self.needs_grad[0]:
            gx = _standardize_backward(g if w is None else g * w, xhat, self.rstd, -1)
        if w is None:
            return gx
        rows = tuple(range(g.ndim - 1))            # every axis but the features
        gw = (g * xhat).sum(axis=rows) if self.needs_grad[1] else None
        return gx, gw, (g.sum(axis=rows) if self.needs_grad[2] else None)


class BatchNorm(Function):
    """Normalise (N, C, *spatial) over every axis but C.

    Training: batch statistics, and the running statistics (arrays owned by the layer) are updated
    in place, on the device: running = (1 - momentum) * running + momentum * batch, with the
    unbiased batch variance as PyTorch. Evaluation: the running statistics, a fixed affine map.
    The batch's averages are taken by `_batch_statistics` and `_batch_statistics_backward`, which
    minienc.distributed's SyncBatchNormFunction takes over every process's share instead."""

    name = "batch_norm"

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        checks.in_range(self.name, "momentum", momentum, 0.0, 1.0)
        checks.non_negative(self.name, "eps", eps)
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, weight=None, bias=None):
        channels = self._check_channels(x, weight)
        self.axes = (0,) + tuple(range(2, x.ndim))
        view = (1, channels) + (1,) * (x.ndim - 2)
        if self.training:
            self.xhat, self.rstd, mean, var, count = self._batch_statistics(x)
            if self.running_mean is not None:
                m = self.momentum
                self.running_mean *= 1.0 - m
                self.running_mean += m * mean.reshape(-1)
                self.running_var *= 1.0 - m
                self.running_var += (m * count / (count - 1)) * var.reshape(-1)
        else:
            self.rstd = (1.0 / (self.running_var + self.eps) ** 0.5).reshape(view)
            self.xhat = (x - self.running_mean.reshape(view)) * self.rstd
        self.weight = None if weight is None else weight.reshape(view)
        return self.xhat if weight is None else self.xhat * self.weight + bias.reshape(view)

    def _check_channels(self, x, weight):
        """The one check of the channels, for nn.BatchNorm1d/2d and direct callers alike: x is
        (N, C, ...) with C the weight's (or the running statistics') length; the error names
        the layer of that size which takes x's rank. Returns C."""
        sized_by = weight if weight is not None else self.running_mean
        expected = sized_by.shape[0] if sized_by is not None else None
        if x.ndim < 2 and expected is None:
            raise ValueError(f"{self.name}: input {tuple(x.shape)} needs shape (N, C, ...)")
        if x.ndim < 2 or expected not in (None, x.shape[1]):
            layer = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d"}.get(x.ndim, "BatchNorm")
            raise ValueError(f"{self.name}: {expected} channels, as in {layer}({expected}), take "
                             f"inputs (N, {expected}, ...); got shape {tuple(x.shape)}")
        return x.shape[1]

    def _batch_statistics(self, x):
        """(xhat, rstd, mean, var, count): x standardised over this batch's `count` values per
        channel."""
        count = x.size // x.shape[1]
        if count < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel, "
                             f"got input of shape {tuple(x.shape)}")
        return (*_standardize(x, self.axes, self.eps), count)

    def _batch_statistics_backward(self, gxhat):
        return _standardize_backward(gxhat, self.xhat, self.rstd, self.axes)

    def backward(self, g):
        gxhat = g if self.weight is None else g * self.weight
        gx = None
        if self.needs_grad[0]:
            gx = self._batch_statistics_backward(gxhat) if self.training else gxhat * self.rstd
        if self.weight is None:
            return gx
        gw = (g * self.xhat).sum(axis=self.axes) if self.needs_grad[1] else None
        return gx, gw, (g.sum(axis=self.axes) if self.needs_grad[2] else None)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise the last axis of x; weight and bias both or neither (I-JEPA's targets use none)."""
    fn = kernels.variant(LayerNormFunction, x)(eps)
    return fn(x) if weight is None else fn(x, weight, bias)


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5):
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation mode needs running statistics")
    fn = BatchNorm(running_mean, running_var, training, momentum, eps)
    return fn(x) if weight is None else fn(x, weight, bias)
