"""Softmax family and the losses, each fused with a hand-written backward.

Every form here is the numerically stable one: softmax and logsumexp subtract the row maximum,
binary cross-entropy works on logits (max(x,0) - x*t + log1p(e^-|x|)), and `normalize` divides by
max(||x||, eps) so a zero vector gives zero, not NaN.
"""
from .. import backend, checks, kernels
from ..backend import get_xp, is_cupy
from ..engine import as_tensor, Function, Tensor
from .reduce import reciprocal, shift_for_exp


def _check_reduction(name, reduction):
    checks.one_of(name, "reduction", reduction, ("mean", "sum", "none"))


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _reduced_grad(g, shape, reduction, count):
    """The upstream gradient of a reduced loss spread back over the elementwise losses."""
    if reduction == "none":
        return g
    return get_xp(g).broadcast_to(g * reciprocal(count) if reduction == "mean" else g, shape)


class Softmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = get_xp(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        self.out = e / e.sum(axis=self.axis, keepdims=True)
        return self.out

    def backward(self, g):
        y = self.out
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = get_xp(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.out

    def backward(self, g):
        return g - get_xp(g).exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class LogSumExp(Function):
    def __init__(self, axis=-1, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = get_xp(x)
        top = shift_for_exp(x, self.axis)
        e = xp.exp(x - top)
        total = e.sum(axis=self.axis, keepdims=True)
        # total >= 1 in every row with a finite entry (its maximum gives exp(0)); a row of -inf
        # has total 0: its weights (and gradient) become 0 and its log is -inf
        self.softmax = e / xp.maximum(total, 1.0)
        with backend.numpy.errstate(divide="ignore"):
            out = xp.log(total) + top
        self.kept_shape = out.shape
        return out if self.keepdims else out.squeeze(axis=self.axis)

    def backward(self, g):
        # back to the kept-dims shape, which works for axis None, an int or a tuple alike
        return g.reshape(self.kept_shape) * self.softmax


class CrossEntropy(Function):
    """Softmax cross-entropy over the last axis with integer targets: logits (..., C), targets (...).
    Positions whose target is `ignore_index` add nothing and are not counted in the mean. If
    every target is ignored, the mean is 0 (0 / max(count, 1)) and so is the gradient: a batch
    with nothing to predict trains nothing, rather than giving NaN (PyTorch gives NaN).

    loss = logsumexp(logits) - logits[target];  d loss / d logits = softmax(logits) - onehot(target)."""

    index_inputs = (1,)  # the targets are class ids: never cast to the logits' dtype

    def __init__(self, ignore_index=None, reduction="mean"):
        _check_reduction("cross_entropy", reduction)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, logits, targets):
        xp = get_xp(logits)
        self.targets, self.valid = self._checked_targets(logits, targets)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        e = xp.exp(shifted)
        total = e.sum(axis=-1, keepdims=True)
        picked = xp.take_along_axis(shifted, self.targets[..., None], axis=-1)[..., 0]
        self.softmax = e / total
        return self._reduce(xp.log(total[..., 0]) - picked)

    def backward(self, g):
        xp = get_xp(g)
        grad = self.softmax.copy()
        flat = grad.reshape(-1, grad.shape[-1])
        flat[xp.arange(flat.shape[0]), self.targets.reshape(-1)] -= 1.0    # softmax - onehot
        return grad * self._row_scale(g)[..., None], None

    def _checked_targets(self, logits, targets):
        """(targets with ignored positions set to class 0, mask of the counted positions or None)."""
        xp = get_xp(logits)
        if logits.shape[:-1] != targets.shape or targets.dtype.kind == "f":
            raise ValueError(f"cross_entropy: logits {tuple(logits.shape)} need integer targets of "
                             f"shape {tuple(logits.shape[:-1])}, got {targets.dtype} {tuple(targets.shape)}")
        classes = logits.shape[-1]
        valid = targets != self.ignore_index if self.ignore_index is not None else None
        safe_targets = xp.where(valid, targets, 0) if valid is not None else targets
        if not is_cupy(logits):  # out-of-range targets (a host check only where it is free)
            bad = (safe_targets < 0) | (safe_targets >= classes)
            if bad.any():
                raise IndexError(f"cross_entropy: target {int(safe_targets[bad][0])} is out of range "
                                 f"for {classes} classes")
        return safe_targets, valid

    def _reduce(self, loss):
        """The per-position losses reduced; ignored positions add 0 and are not counted."""
        if self.valid is not None:
            loss = loss * self.valid
            self.count = get_xp(loss).maximum(self.valid.sum(), 1).astype(loss.dtype)  # on the device
        else:
            self.count = loss.size
        if self.reduction == "mean":
            return loss.sum() / self.count
        return loss.sum() if self.reduction == "sum" else loss

    def _row_scale(self, g):
        """The upstream gradient of each position's loss (0 where ignored), shaped like the targets."""
        scale = g / self.count if self.reduction == "mean" else g
        scale = get_xp(g).broadcast_to(scale, self.targets.shape)
        return scale if self.valid is None else scale * self.valid


class BinaryCrossEntropyWithLogits(Function):
    """-[t log s(x) + (1-t) log(1-s(x))] = max(x,0) - x t + log1p(e^-|x|)."""

    def __init__(self, reduction="mean"):
        _check_reduction("binary_cross_entropy_with_logits", reduction)
        self.reduction = reduction

    def forward(self, x, t):
        xp = get_xp(x)
        if x.shape != t.shape:
            raise ValueError(f"binary_cross_entropy_with_logits: logits {tuple(x.shape)} and targets "
                             f"{tuple(t.shape)} must have the same shape")
        self.x, self.t = x, t
        return _reduce(xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x))), self.reduction)

    def backward(self, g):
        xp = get_xp(g)
        g = _reduced_grad(g, self.x.shape, self.reduction, self.x.size)
        gx = g * (0.5 * (xp.tanh(0.5 * self.x) + 1.0) - self.t) if self.needs_grad[0] else None
        return gx, (-g * self.x if self.needs_grad[1] else None)


class MSELoss(Function):
    """mean((pred - target)^2); its gradient is 2 (pred - target) / count."""

    def __init__(self, reduction="mean"):
        _check_reduction("mse_loss", reduction)
        self.reduction = reduction

    def forward(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"mse_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                             f"must have the same shape")
        self.diff = pred - target
        return _reduce(self.diff * self.diff, self.reduction)

    def backward(self, g):
        count = self.diff.size if self.reduction == "mean" else 1
        g = (g * (2.0 * reciprocal(count))) * self.diff  # g is 0-d unless reduction is "none"
        return g, (-g if self.needs_grad[1] else None)


class SmoothL1Loss(Function):
    """Huber-style: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (PyTorch's definition;
    beta = 0 is the L1 loss |d|, as in PyTorch)."""

    def __init__(self, beta=1.0, reduction="mean"):
        _check_reduction("smooth_l1_loss", reduction)
        checks.non_negative("smooth_l1_loss", "beta", beta)
        self.beta, self.reduction = beta, reduction

    def forward(self, pred, target):
        xp = get_xp(pred)
        if pred.shape != target.shape:
            raise ValueError(f"smooth_l1_loss: prediction {tuple(pred.shape)} and target "
                             f"{tuple(target.shape)} must have the same shape")
        self.diff = pred - target
        size = xp.abs(self.diff)
        if self.beta == 0:                       # no quadratic zone: the L1 loss
            self.small = None
            return _reduce(size, self.reduction)
        self.small = size < self.beta
        loss = xp.where(self.small, 0.5 * self.diff * self.diff / self.beta, size - 0.5 * self.beta)
        return _reduce(loss, self.reduction)

    def backward(self, g):
        xp = get_xp(g)
        slope = xp.sign(self.diff) if self.small is None else \
            xp.where(self.small, self.diff / self.beta, xp.sign(self.diff))
        g = _reduced_grad(g, self.diff.shape, self.reduction, self.diff.size) * slope
        return g, (-g if self.needs_grad[1] else None)


class Normalize(Function):
    """x / max(||x||_2, eps) along `axis`."""

    def __init__(self, axis=-1, eps=1e-12):
        self.axis, self.eps = axis, checks.positive("normalize", "eps", eps)

    def forward(self, x):
        xp = get_xp(x)
        self.norm = xp.maximum(xp.sqrt((x * x).sum(axis=self.axis, keepdims=True)), self.eps)
        self.out = x / self.norm
        self.clamped = self.norm <= self.eps
        return self.out

    def backward(self, g):
        y = self.out
        # where the norm was clamped the map is x / eps, a plain scaling
        radial = (g * y).sum(axis=self.axis, keepdims=True) * ~self.clamped
        return (g - y * radial) / self.norm


def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)
def logsumexp(x, axis=-1, keepdims=False): return LogSumExp(axis, keepdims)(x)
def normalize(x, axis=-1, eps=1e-12): return Normalize(axis, eps)(x)


def cross_entropy(logits, targets, ignore_index=None, reduction="mean"):
    """Softmax cross-entropy of logits (..., C) against integer class ids (...). With
    `ignore_index`, those positions add nothing and the mean is over the others; when every
    target is ignored the mean is 0, with a zero gradient (see CrossEntropy)."""
    if not isinstance(targets, Tensor):
        targets = as_tensor(logits.xp.asarray(targets))
    return kernels.variant(CrossEntropy, logits)(ignore_index, reduction)(logits, targets)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    return BinaryCrossEntropyWithLogits(reduction)(logits, targets)


def mse_loss(pred, target, reduction="mean"):
    return kernels.variant(MSELoss, pred)(reduction)(pred, target)


def smooth_l1_loss(pred, target, beta=1.0, reduction="mean"):
    return SmoothL1Loss(beta, reduction)(pred, target)
