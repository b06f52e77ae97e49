"""Layer norm and batch norm, fused, with hand-written backward.

Both standardise x over some axes, xhat = (x - mean) / sqrt(var + eps), then apply an optional
per-feature affine map y = xhat * weight + bias. Over the M values of one group the gradient of
the standardisation is

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),     dxhat = dy * weight,

which is one short expression instead of the ten graph nodes that mean/var/sqrt/div would build.
Layer norm (Ba et al. 2016) groups the last axis of each sample; batch norm (Ioffe & Szegedy
2015) groups every axis but the channel axis 1, and keeps running statistics for evaluation.
"""
from .. import kernels
from ..backend import get_xp
from ..engine import Function
from .linear import sum_rows


class _Groups:
    def mean_and_dot_mean(self, a, b):
        """(mean(a), mean(a * b)) together: SyncBatchNorm sums both over the ranks at once."""
        return self.mean(a), self.dot_mean(a, b)


class _LastAxis(_Groups):
    """Averages over the last axis of size d. Plain reductions rather than matrix-vector products
    with a ones vector: those are faster with one BLAS thread but pay a thread wake-up per call in
    a multi-threaded OpenBLAS (see linear.sum_rows)."""

    def __init__(self, x):
        self.d = x.shape[-1]

    def mean(self, a):
        return a.mean(axis=-1, keepdims=True)

    def dot_mean(self, a, b):
        """mean(a * b) over the group, without materialising a * b."""
        return get_xp(a).einsum("...d,...d->...", a, b)[..., None] * (1.0 / self.d)


class _Axes(_Groups):
    """Averages over the given axes (batch norm: every axis but the channel axis) of `count`
    values each."""

    def __init__(self, axes, count):
        self.axes, self.count = axes, count

    def mean(self, a):
        return a.mean(axis=self.axes, keepdims=True)

    def dot_mean(self, a, b):
        return (a * b).mean(axis=self.axes, keepdims=True)


def _standardize(x, groups, eps):
    """xhat = (x - mean) * rstd within each group; returns (xhat, rstd, mean, var) with the
    statistics shaped to broadcast against x."""
    mean = groups.mean(x)
    xhat = x - mean
    var = groups.dot_mean(xhat, xhat)
    rstd = 1.0 / (var + eps) ** 0.5
    xhat *= rstd  # in place: xhat is our own temporary
    return xhat, rstd, mean, var


def _standardize_backward(gxhat, xhat, rstd, groups):
    mean_g, mean_g_xhat = groups.mean_and_dot_mean(gxhat, xhat)
    gx = gxhat - mean_g
    gx -= xhat * mean_g_xhat
    gx *= rstd
    return gx


def _affine(xhat, weight, bias):
    out = xhat * weight
    out += bias
    return out


class LayerNorm(Function):
    """Normalise over the last axis; weight and bias (both or neither) have shape (D,)."""

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, weight=None, bias=None):
        if weight is not None and (weight.shape != x.shape[-1:] or bias.shape != weight.shape):
            raise ValueError(f"layer_norm: input {tuple(x.shape)} needs weight and bias of shape "
                             f"({x.shape[-1]},), got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight, self.fused = weight, kernels.fused(x)
        if self.fused:  # one kernel for statistics, xhat and the affine map
            y, self.xhat, self.rstd = kernels.layer_norm_forward(x, weight, bias, self.eps)
            return y
        self.groups = _LastAxis(x)
        self.xhat, self.rstd, _, _ = _standardize(x, self.groups, self.eps)
        return self.xhat if weight is None else _affine(self.xhat, weight, bias)

    def backward(self, g):
        xhat, w = self.xhat, self.weight
        gx = None
        if self.needs_grad[0] and self.fused:
            gx = kernels.layer_norm_backward(g, w, xhat, self.rstd)
        elif self.needs_grad[0]:
            gxhat = g if w is None else g * w
            gx = _standardize_backward(gxhat, xhat, self.rstd, self.groups)
        if w is None:
            return gx
        g2, d = g.reshape(-1, g.shape[-1]), g.shape[-1]
        gw = get_xp(g).einsum("md,md->d", g2, xhat.reshape(-1, d)) if self.needs_grad[1] else None
        return gx, gw, (sum_rows(g2) if self.needs_grad[2] else None)


class BatchNorm(Function):
    """Normalise (N, C, *spatial) over every axis but C.

    Training: batch statistics, and the running statistics (arrays owned by the layer) are updated
    in place, on the device: running = (1 - momentum) * running + momentum * batch, with the
    unbiased batch variance as PyTorch. Evaluation: the running statistics, a fixed affine map."""

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, weight=None, bias=None):
        expected = (weight if weight is not None else self.running_mean)
        expected = expected.shape[0] if expected is not None else None
        channels = x.shape[1] if x.ndim >= 2 else None
        if channels is None or expected not in (None, channels):
            raise ValueError(f"batch_norm: input {tuple(x.shape)} needs shape (N, C, ...) with "
                             f"C = {expected} channels")
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.groups = self._groups(x)
        view = (1, channels) + (1,) * (x.ndim - 2)
        count = x.size // channels
        if self.training:
            if count < 2:
                raise ValueError(f"batch_norm: training needs more than one value per channel, "
                                 f"got input of shape {tuple(x.shape)}")
            self.xhat, self.rstd, mean, var = _standardize(x, self.groups, self.eps)
            if self.running_mean is not None:
                m, n = self.momentum, self.groups.count
                self.running_mean *= 1.0 - m
                self.running_mean += m * mean.reshape(-1)
                self.running_var *= 1.0 - m
                self.running_var += (m * n / (n - 1)) * var.reshape(-1)
        else:
            self.rstd = (1.0 / (self.running_var + self.eps) ** 0.5).reshape(view)
            self.xhat = x - self.running_mean.reshape(view)
            self.xhat *= self.rstd
        self.weight = None if weight is None else weight.reshape(view)
        return self.xhat if weight is None else _affine(self.xhat, self.weight, bias.reshape(view))

    def _groups(self, x):
        """What the batch statistics average over: this batch (minienc.distributed's
        SyncBatchNorm averages over every process's batch instead)."""
        return _Axes(self.axes, x.size // x.shape[1])

    def backward(self, g):
        gxhat = g if self.weight is None else g * self.weight
        gx = None
        if self.needs_grad[0]:
            gx = _standardize_backward(gxhat, self.xhat, self.rstd, self.groups) if self.training \
                else gxhat * self.rstd
        if self.weight is None:
            return gx
        gw = (g * self.xhat).sum(axis=self.axes) if self.needs_grad[1] else None
        return gx, gw, (g.sum(axis=self.axes) if self.needs_grad[2] else None)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise the last axis of x; weight and bias both or neither (I-JEPA's targets use none)."""
    return LayerNorm(eps)(x) if weight is None else LayerNorm(eps)(x, weight, bias)


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5):
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation mode needs running statistics")
    fn = BatchNorm(running_mean, running_var, training, momentum, eps)
    return fn(x) if weight is None else fn(x, weight, bias)
