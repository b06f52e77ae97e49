"""NumPy variants of the hottest ops and of the optimizer updates: the same arithmetic as the
reference in ops/ and optim/, written to make fewer passes over memory and fewer temporaries.

The tricks, each used where a measurement said it pays (docs/benchmarks.md):
- in-place steps on a buffer the variant owns (`a *= b` instead of `c = a * b`), with `out=`
  where an expression would allocate;
- row sums and sums of products with einsum, never `.sum(axis=-1)` nor BLAS (the rule is in
  minienc/kernels/__init__.py);
- optimizer updates that borrow scratch space (`WorkBuffers`) instead of allocating.
Every class here subclasses its reference op and keeps its checks; tests/test_kernels.py checks
values and gradients of each against the reference.
"""
import threading

from .. import backend
from ..ops import attention, elementwise, norm
from ..optim import adam, ema, sgd

np = backend.numpy          # these variants run on host arrays only
C, K = elementwise.GELU_C, elementwise.GELU_K


def row_sum(a):
    """a summed over its last axis, keeping it (einsum: see the module docstring)."""
    return np.einsum("...d->...", a)[..., None]


def row_dot(a, b):
    """sum(a * b) over the last axis, keeping it, without the product as a temporary."""
    return np.einsum("...d,...d->...", a, b)[..., None]


# ----- GELU ------------------------------------------------------------------------------------
def _square(x):
    # out=: an array even for a 0-d input (x * x would be a NumPy scalar), so in-place steps work
    return np.multiply(x, x, out=np.empty_like(x))


class GELUFunction(elementwise.GELUFunction):
    """Both directions as in-place steps on two buffers (the formula makes a temporary per operator)."""

    def forward(self, x):
        self.x = x
        inner = _square(x)                  # c (x + k x^3) = x (c + c k x^2)
        inner *= C * K
        inner += C
        inner *= x
        self.t = np.tanh(inner, out=inner)
        out = self.t + 1.0
        out *= x
        out *= 0.5
        return out

    def backward(self, g):
        x, t = self.x, self.t
        slope = _square(x)                  # c (1 + 3 k x^2)
        slope *= 3.0 * C * K
        slope += C
        d = _square(t)                      # x (1 - t^2) * slope
        np.subtract(1.0, d, out=d)
        d *= x
        d *= slope
        d += t                              # 0.5 (1 + t + ...)
        d += 1.0
        d *= 0.5
        d *= g
        return d


# ----- layer norm ------------------------------------------------------------------------------
class LayerNormFunction(norm.LayerNormFunction):
    """Statistics by einsum and the standardisation in place on one buffer."""

    def forward(self, x, weight=None, bias=None):
        norm.check_layer_norm(x, weight, bias)
        self.weight, inv_d = weight, 1.0 / x.shape[-1]
        xhat = x - row_sum(x) * inv_d
        rstd = row_dot(xhat, xhat)
        rstd *= inv_d
        rstd += self.eps
        np.sqrt(rstd, out=rstd)
        np.divide(1.0, rstd, out=rstd)
        xhat *= rstd
        self.xhat, self.rstd = xhat, rstd
        if weight is None:
            return xhat
        out = xhat * weight
        out += bias
        return out

    def backward(self, g):
        xhat, w = self.xhat, self.weight
        inv_d = 1.0 / g.shape[-1]
        gx = None
        if self.needs_grad[0]:
            gxhat = g if w is None else g * w
            gx = xhat * (row_dot(gxhat, xhat) * inv_d)
            np.subtract(gxhat, gx, out=gx)
            gx -= row_sum(gxhat) * inv_d
            gx *= self.rstd
        if w is None:
            return gx
        g2, xhat2 = g.reshape(-1, g.shape[-1]), xhat.reshape(-1, g.shape[-1])
        gw = np.einsum("md,md->d", g2, xhat2) if self.needs_grad[1] else None
        return gx, gw, (np.einsum("md->d", g2) if self.needs_grad[2] else None)


# ----- attention -------------------------------------------------------------------------------
def attend(q, k, v, scale, attn_mask=None, key_padding_mask=None):
    """attention.attention_forward with the softmax in place on the scores."""
    s = q @ k.swapaxes(-1, -2)
    s *= scale
    masked = attn_mask is not None or key_padding_mask is not None
    if masked:
        s = attention.masked_scores(s, attn_mask, key_padding_mask)
    top = s.max(axis=-1, keepdims=True)
    if masked:
        top = np.where(top == float("-inf"), s.dtype.type(0), top)
    s -= top
    np.exp(s, out=s)
    total = row_sum(s)
    if masked:
        np.maximum(total, 1.0, out=total)
    s /= total
    return s @ v, s


def attend_backward(g, q, k, v, p, scale, need_mask_grad=False):
    """attention.attention_backward with dS built in place on dP."""
    dv = p.swapaxes(-1, -2) @ g
    ds = g @ v.swapaxes(-1, -2)                      # dP
    ds -= row_dot(ds, p)
    ds *= p                                          # dS
    dmask = ds if need_mask_grad else None           # (not modified below)
    dq = ds @ k
    dq *= scale
    dk = ds.swapaxes(-1, -2) @ q
    dk *= scale
    return dq, dk, dv, dmask


class ScaledDotProductAttention(attention.ScaledDotProductAttention):
    attend, attend_backward = staticmethod(attend), staticmethod(attend_backward)


class MultiHeadAttentionFunction(attention.MultiHeadAttentionFunction):
    attend, attend_backward = staticmethod(attend), staticmethod(attend_backward)


# ----- optimizer updates -----------------------------------------------------------------------
class WorkBuffers:
    """Flat scratch arrays, one set per dtype, sized to the largest array seen and shared by every
    update in this thread: an in-place update borrows views of them instead of allocating
    temporaries. A view is valid only until the next `get`."""

    def __init__(self):
        self._flat = {}
        self._views = {}  # (dtype, shape, count) -> views, so a step makes none

    def get(self, like, count=1):
        key = (like.dtype, like.shape, count)
        views = self._views.get(key)
        if views is None:
            views = self._views[key] = self._carve(like, count)
        return views

    def _carve(self, like, count):
        flat = self._flat.get(like.dtype)
        if flat is None or flat.shape[0] < count or flat.shape[1] < like.size:
            rows, size = (2, 0) if flat is None else flat.shape
            flat = self._flat[like.dtype] = np.empty((max(count, rows), max(size, like.size)),
                                                     dtype=like.dtype)
            self._views.clear()  # views of the old buffer would keep it alive
        views = tuple(flat[i, :like.size].reshape(like.shape) for i in range(count))
        return views if count > 1 else views[0]


_local = threading.local()


def work(like, count=1):
    """`count` scratch arrays shaped like `like`, from this thread's WorkBuffers."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = WorkBuffers()
    return buffers.get(like, count)


def _plus_l2(g, w, weight_decay, out):
    """g + weight_decay * w, written into `out` (g itself when weight_decay is 0)."""
    if weight_decay == 0:
        return g
    np.multiply(w, weight_decay, out=out)
    out += g
    return out


def adam_update(w, g, m, v, b1, b2, step_size, eps, l2, decay):
    tmp, decayed = work(w, 2)
    g = _plus_l2(g, w, l2, out=decayed)
    if decay != 1:
        w *= decay
    m *= b1                                  # m <- b1 m + (1 - b1) g
    np.multiply(g, 1.0 - b1, out=tmp)
    m += tmp
    v *= b2                                  # v <- b2 v + (1 - b2) g^2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - b2
    v += tmp
    np.sqrt(v, out=tmp)                      # w <- w - step_size m / (sqrt(v) + eps)
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    w -= tmp


def sgd_update(w, g, buf, lr, weight_decay, momentum, nesterov):
    tmp, decayed = work(w, 2)
    g = _plus_l2(g, w, weight_decay, out=decayed)
    if momentum != 0:
        buf *= momentum
        buf += g
        if nesterov:
            np.multiply(buf, momentum, out=tmp)
            tmp += g
            g = tmp
        else:
            g = buf
    np.multiply(g, lr, out=tmp)
    w -= tmp


def ema_step(target, online, momentum):
    tmp = work(target)
    target *= momentum
    np.multiply(online, 1.0 - momentum, out=tmp)
    target += tmp


VARIANTS = {elementwise.GELUFunction: GELUFunction, norm.LayerNormFunction: LayerNormFunction,
            attention.ScaledDotProductAttention: ScaledDotProductAttention,
            attention.MultiHeadAttentionFunction: MultiHeadAttentionFunction,
            adam.adam_update: adam_update, sgd.sgd_update: sgd_update, ema.ema_step: ema_step}
