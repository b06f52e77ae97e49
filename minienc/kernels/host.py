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
from ..ops import attention, elementwise, losses, norm, reduce, shape
from ..ops.embedding import EmbeddingFunction as _ReferenceEmbedding
from . import threads
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
def _flat(a):
    """a as a 1-D C-contiguous array (a view when it already is contiguous)."""
    return np.ascontiguousarray(a).reshape(-1)


class GELUFunction(elementwise.GELUFunction):
    """Both directions as in-place steps on chunks that stay in cache (the formula makes a
    temporary per operator, each a pass over memory), spread over the thread pool."""

    def forward(self, x):
        self.x, flat = x, _flat(x)
        t, out = np.empty_like(flat), np.empty_like(flat)

        def chunk(s):
            xs, ts, ys = flat[s], t[s], out[s]
            np.multiply(xs, xs, out=ts)             # c (x + k x^3) = x (c + c k x^2)
            ts *= C * K
            ts += C
            ts *= xs
            np.tanh(ts, out=ts)
            np.add(ts, 1.0, out=ys)                 # 0.5 x (1 + t)
            ys *= xs
            ys *= 0.5
        threads.for_slices(chunk, flat.size)
        self.t = t.reshape(x.shape)
        return out.reshape(x.shape)

    def backward(self, g):
        x, t, g = _flat(self.x), _flat(self.t), _flat(g)
        d = np.empty_like(g)

        def chunk(s):
            xs, ts, ds = x[s], t[s], d[s]
            slope = np.multiply(xs, xs)             # c (1 + 3 k x^2)
            slope *= 3.0 * C * K
            slope += C
            np.multiply(ts, ts, out=ds)             # x (1 - t^2) * slope
            np.subtract(1.0, ds, out=ds)
            ds *= xs
            ds *= slope
            ds += ts                                # 0.5 (1 + t + ...)
            ds += 1.0
            ds *= 0.5
            ds *= g[s]
        threads.for_slices(chunk, g.size)
        return d.reshape(self.x.shape)


# ----- layer norm ------------------------------------------------------------------------------
class LayerNormFunction(norm.LayerNormFunction):
    """Statistics by einsum and the standardisation in place, on chunks of rows that stay in
    cache, spread over the thread pool."""

    def forward(self, x, weight=None, bias=None):
        norm.check_layer_norm(x, weight, bias)
        d = x.shape[-1]
        x2 = np.ascontiguousarray(x).reshape(-1, d)
        xhat, rstd = np.empty_like(x2), np.empty((x2.shape[0], 1), dtype=x.dtype)
        out = xhat if weight is None else np.empty_like(x2)
        inv_d = 1.0 / d

        def chunk(s):
            xs, hs, rs = x2[s], xhat[s], rstd[s]
            np.subtract(xs, row_sum(xs) * inv_d, out=hs)
            np.multiply(row_dot(hs, hs), inv_d, out=rs)
            rs += self.eps
            np.sqrt(rs, out=rs)
            np.divide(1.0, rs, out=rs)
            hs *= rs
            if weight is not None:
                np.multiply(hs, weight, out=out[s])
                out[s] += bias
        threads.for_slices(chunk, x2.shape[0], d)
        self.weight, self.xhat, self.rstd = weight, xhat, rstd
        return out.reshape(x.shape)

    def backward(self, g):
        xhat, rstd, w = self.xhat, self.rstd, self.weight
        d = g.shape[-1]
        g2 = np.ascontiguousarray(g).reshape(-1, d)
        need_x, need_w, need_b = self.needs_grad if w is not None else (self.needs_grad[0], 0, 0)
        gx = np.empty_like(g2) if need_x else None
        parts = threads.slices(g2.shape[0], d, threads.CHUNK // 8, fixed=True)   # (see gw, gb)
        gw, gb = np.empty((len(parts), d), g.dtype), np.empty((len(parts), d), g.dtype)
        inv_d = 1.0 / d

        def chunk(i):
            s = parts[i]
            gs, hs = g2[s], xhat[s]
            if need_x:     # rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat)), gxhat = g w
                gxhat = gs if w is None else gs * w
                gxs = gx[s]
                np.multiply(hs, row_dot(gxhat, hs) * inv_d, out=gxs)
                np.subtract(gxhat, gxs, out=gxs)
                gxs -= row_sum(gxhat) * inv_d
                gxs *= rstd[s]
            if need_w:
                np.einsum("md,md->d", gs, hs, out=gw[i])
            if need_b:
                np.einsum("md->d", gs, out=gb[i])
        threads.run(chunk, len(parts))
        gx = None if gx is None else gx.reshape(g.shape)
        # gw and gb add partial sums over slices that do not depend on the thread count, so the
        # result does not either
        if w is None:
            return gx
        return gx, (gw.sum(axis=0) if need_w else None), (gb.sum(axis=0) if need_b else None)


# ----- attention -------------------------------------------------------------------------------
# The scores are laid out batch-major and keys next, st[b, j, ..., i] = s[b, ..., i, j]: the
# softmax over the keys then reduces over axis 1, which NumPy vectorises across the rest of a
# batch element, where a max over the short last axis pays per row (docs/benchmarks.md). The
# products read and write that layout directly (BLAS takes the leading dimension), the weights are
# handed out as the (..., Lq, Lk) view of it, and a batch cuts into contiguous chunks for the
# thread pool (each a few hundred small products and their softmax).
ATTENTION_CHUNK = 1 << 20    # scores per chunk: fewer, larger chunks than elementwise work


def _rows_view(st):
    return np.moveaxis(st, 1, -1)


def _batch_part(mask, s, batch, ndim):
    """The part of a mask that goes with the batch slice s (a mask without a batch axis whole)."""
    if mask is None or mask.ndim != ndim or mask.shape[0] != batch:
        return mask
    return mask[s]


def attend(q, k, v, scale, attn_mask=None, key_padding_mask=None, out=None):
    """attention.attention_forward in the layout above; writes the output into `out` if given."""
    shape = q.shape[:-1] + k.shape[-2:-1]
    if q.ndim == 2 or attn_mask is not None and np.broadcast_shapes(shape, attn_mask.shape) != shape:
        return attention.attention_forward(q, k, v, scale, attn_mask, key_padding_mask)
    padding = (None if key_padding_mask is None else   # (B, 1, 1, Lk) of 0 and -inf, checked once
               attention.padding_bias(key_padding_mask, shape, q.dtype))
    batch, masked = q.shape[0], attn_mask is not None or key_padding_mask is not None
    st = np.empty(q.shape[:1] + k.shape[-2:-1] + q.shape[1:-1], dtype=q.dtype)
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype) if out is None else out

    def chunk(b):
        sts = st[b]
        np.matmul(k[b], q[b].swapaxes(-1, -2), out=np.moveaxis(sts, 1, -2))
        sts *= scale
        s = _rows_view(sts)
        if attn_mask is not None:
            s += _batch_part(attn_mask, b, batch, len(shape))
        if padding is not None:
            s += padding[b]
        sts -= reduce.shift_for_exp(sts, 1) if masked else sts.max(axis=1, keepdims=True)
        np.exp(sts, out=sts)
        total = sts.sum(axis=1, keepdims=True)
        if masked:
            np.maximum(total, 1.0, out=total)  # only all-masked rows (total 0): weights 0
        sts /= total
        np.matmul(s, v[b], out=out[b])
    threads.for_slices(chunk, batch, st[0].size, ATTENTION_CHUNK)
    return out, _rows_view(st)


def attend_backward(g, q, k, v, p, scale, need_mask_grad=False, out=None):
    """attention.attention_backward on weights in the layout above, dS built in place on dP;
    writes (dq, dk, dv) into `out` if given."""
    st = np.moveaxis(p, -1, 1)
    if p.ndim == 2 or not st.flags.c_contiguous:        # the weights of a reference forward
        return attention.attention_backward(g, q, k, v, p, scale, need_mask_grad)
    dq, dk, dv = out if out is not None else (np.empty(q.shape, q.dtype), np.empty(k.shape, q.dtype),
                                              np.empty(v.shape, q.dtype))
    dst = np.empty_like(st)                                      # dP, then dS

    def chunk(b):
        sts, dsts = st[b], dst[b]
        np.matmul(p[b].swapaxes(-1, -2), g[b], out=dv[b])
        np.matmul(v[b], g[b].swapaxes(-1, -2), out=np.moveaxis(dsts, 1, -2))
        dsts -= np.einsum("bj...,bj...->b...", dsts, sts)[:, None]     # - rowsum(dP * P)
        dsts *= sts
        ds = _rows_view(dsts)
        np.matmul(ds, k[b], out=dq[b])
        dq[b] *= scale
        np.matmul(ds.swapaxes(-1, -2), q[b], out=dk[b])
        dk[b] *= scale
    threads.for_slices(chunk, q.shape[0], st[0].size, ATTENTION_CHUNK)
    return dq, dk, dv, (_rows_view(dst) if need_mask_grad else None)


class ScaledDotProductAttention(attention.ScaledDotProductAttention):
    attend, attend_backward = staticmethod(attend), staticmethod(attend_backward)


class MultiHeadAttentionFunction(attention.MultiHeadAttentionFunction):
    """The packed form with the output and the packed gradient written in place by the products
    (no transposing copies)."""
    attend, attend_backward = staticmethod(attend), staticmethod(attend_backward)

    def forward(self, qkv, attn_mask=None):
        q, k, v = self._split(qkv)
        b, length, _ = qkv.shape
        out = np.empty((b, length) + q.shape[1:2] + q.shape[-1:], dtype=qkv.dtype)   # (B, L, H, dh)
        self.scale = q.shape[-1] ** -0.5
        _, self.p = attend(q, k, v, self.scale, attn_mask, self.key_padding_mask,
                           out=out.transpose(0, 2, 1, 3))
        self.qkv, self.has_mask = qkv, attn_mask is not None
        return out.reshape(b, length, -1)

    def backward(self, g):
        q, k, v = self._split(self.qkv)
        b, length, d = g.shape
        g4 = g.reshape(b, length, self.heads, d // self.heads).transpose(0, 2, 1, 3)
        gqkv = np.empty((b, length, 3, self.heads, d // self.heads), dtype=g.dtype)
        parts = [gqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]
        need_mask_grad = self.has_mask and self.needs_grad[1]
        *grads, dmask = attend_backward(g4, q, k, v, self.p, self.scale, need_mask_grad, out=parts)
        if grads[0] is not parts[0]:                         # the reference backward ran
            for part, grad in zip(parts, grads):
                part[...] = grad
        gqkv = gqkv.reshape(b, length, 3 * d)
        return (gqkv, dmask) if self.has_mask else gqkv


# ----- MSE -------------------------------------------------------------------------------------
class MSELoss(losses.MSELoss):
    """The sum of squares as one dot product (no squares temporary), the gradient in one pass."""

    def forward(self, pred, target):
        if self.reduction == "none" or pred.shape != target.shape or pred.size == 0:
            return super().forward(pred, target)
        self.diff = pred - target
        flat = self.diff.reshape(-1)
        total = np.dot(flat, flat)
        return total * (1.0 / flat.size) if self.reduction == "mean" else total


# ----- scatter-add (the backward of indexing and of embedding) ---------------------------------
def scatter_rows(rows, index, values):
    """zeros((rows,) + values.shape[1:]) with values[i] added into row index[i], repeats summed.
    Where no row repeats (a permutation, a gather of distinct tokens) that is one assignment; else
    the repeats are summed after a sort. np.add.at does either one element at a time: ~30x slower
    for a (64, 49) gather of 64-wide tokens (docs/benchmarks.md)."""
    out = np.zeros((rows,) + values.shape[1:], dtype=values.dtype)
    if index.size == 0:
        return out
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    first = np.empty(ordered.shape, dtype=bool)      # where a new row starts in sorted order
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    if first.all():
        out[index] = values
    else:
        starts = np.flatnonzero(first)
        out[ordered[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


class GetItem(shape.GetItem):
    """Integer-array indices on the leading axes scatter back through scatter_rows."""

    def backward(self, g):
        parts = self.key if isinstance(self.key, tuple) else (self.key,)
        if len(parts) > len(self.in_shape) or not all(
                getattr(k, "dtype", None) is not None and k.dtype.kind in "iu" for k in parts):
            return super().backward(g)
        lead, rest = self.in_shape[:len(parts)], self.in_shape[len(parts):]
        # mode="wrap" reads negative indices as NumPy does (forward already refused bad ones)
        index = np.ravel_multi_index(np.broadcast_arrays(*parts), lead, mode="wrap").reshape(-1)
        return scatter_rows(int(np.prod(lead)), index, g.reshape((-1,) + rest)).reshape(self.in_shape)


class EmbeddingFunction(_ReferenceEmbedding):
    def backward(self, g):
        rows, width = self.table_shape
        return None, scatter_rows(rows, self.ids.reshape(-1), g.reshape(-1, width))


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
            shape.GetItem: GetItem, _ReferenceEmbedding: EmbeddingFunction, losses.MSELoss: MSELoss,
            attention.ScaledDotProductAttention: ScaledDotProductAttention,
            attention.MultiHeadAttentionFunction: MultiHeadAttentionFunction,
            adam.adam_update: adam_update, sgd.sgd_update: sgd_update, ema.ema_step: ema_step}
