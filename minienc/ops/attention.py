"""Scaled dot-product attention, fused: softmax(q k^T / sqrt(d) + mask) v with a hand-written
backward (Vaswani et al. 2017).

With P the attention weights and O = P v, the backward is

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P)),   dQ = dS K * scale,   dK = dS^T Q * scale

Masks. `key_padding_mask` (B, Lk) is True at keys to ignore (padding), PyTorch's convention; those
scores become -inf, so their weights are exactly 0. `attn_mask` is an additive float mask that
broadcasts to the scores (-inf or a large negative number to forbid, 0 to allow; it gets a
gradient if it requires one). A row whose keys are ALL masked would be softmax(-inf, ..., -inf) =
0/0: we define its weights as 0 (the output row is 0 and nothing flows back) instead of NaN. That
costs nothing: the row maximum is replaced by 0 when it is -inf, and the denominator of a row with
any finite score is at least exp(0) = 1, so clamping it at 1 only ever touches all-masked rows.

`multi_head_attention(qkv, heads)` takes the packed output of one (D -> 3D) projection, splits
heads with views, and writes the gradients of q, k and v straight into one packed array: no
split/merge ops and no concatenation in the graph.
"""
from .. import checks, kernels
from ..backend import get_xp
from ..engine import as_array, Function
from .reduce import shift_for_exp


def scores_to_weights(s, masked):
    """softmax(s) over the last axis; with `masked`, all-masked rows give 0 (module docstring)."""
    xp = get_xp(s)
    top = shift_for_exp(s, axis=-1) if masked else s.max(axis=-1, keepdims=True)
    e = xp.exp(s - top)
    total = e.sum(axis=-1, keepdims=True)
    if masked:
        total = xp.maximum(total, 1.0)  # only all-masked rows (total 0) are changed: weights 0
    return e / total


def padding_bias(key_padding_mask, scores_shape, dtype):
    """(B, Lk) True-at-padding -> an additive (B, 1, ..., 1, Lk) array of 0 and -inf."""
    if key_padding_mask.shape != (scores_shape[0], scores_shape[-1]):
        raise ValueError(f"attention: key_padding_mask has shape {tuple(key_padding_mask.shape)}, "
                         f"expected (batch, keys) = {(scores_shape[0], scores_shape[-1])}")
    xp = get_xp(key_padding_mask)
    b, lk = key_padding_mask.shape
    bias = xp.where(key_padding_mask, dtype.type(float("-inf")), dtype.type(0))
    return bias.reshape((b,) + (1,) * (len(scores_shape) - 2) + (lk,))


def masked_scores(s, attn_mask, key_padding_mask):
    """The scores s with the additive mask and the padding's -inf added."""
    if attn_mask is not None:
        s = s + attn_mask
    if key_padding_mask is not None:
        s = s + padding_bias(key_padding_mask, s.shape, s.dtype)
    return s


def attention_forward(q, k, v, scale, attn_mask=None, key_padding_mask=None):
    """(output, weights) for arrays q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv)."""
    s = masked_scores((q @ k.swapaxes(-1, -2)) * scale, attn_mask, key_padding_mask)
    p = scores_to_weights(s, attn_mask is not None or key_padding_mask is not None)
    return p @ v, p


def attention_backward(g, q, k, v, p, scale, need_mask_grad=False):
    """(dq, dk, dv, d_attn_mask or None) for the upstream gradient g of the output."""
    dv = p.swapaxes(-1, -2) @ g
    dp = g @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))   # the gradient of the (masked) scores
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv, (ds if need_mask_grad else None)


def _check_qkv(q, k, v):
    if q.ndim < 2 or k.shape[:-2] != q.shape[:-2] or v.shape[:-1] != k.shape[:-1] or \
            q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)} must be (..., Lq, d), (..., Lk, d), (..., Lk, dv)")


class ScaledDotProductAttention(Function):
    # the arithmetic, which a fast variant (minienc/kernels/) may replace
    attend, attend_backward = staticmethod(attention_forward), staticmethod(attention_backward)

    def __init__(self, key_padding_mask=None, scale=None):
        if scale is not None:
            checks.positive("scaled_dot_product_attention", "scale", scale)
        self.key_padding_mask, self.scale = key_padding_mask, scale

    def forward(self, q, k, v, attn_mask=None):
        _check_qkv(q, k, v)
        if self.scale is None:
            self.scale = q.shape[-1] ** -0.5
        out, self.p = self.attend(q, k, v, self.scale, attn_mask, self.key_padding_mask)
        self.q, self.k, self.v, self.has_mask = q, k, v, attn_mask is not None
        return out

    def backward(self, g):
        need_mask_grad = self.has_mask and self.needs_grad[3]
        dq, dk, dv, dmask = self.attend_backward(g, self.q, self.k, self.v, self.p, self.scale, need_mask_grad)
        return (dq, dk, dv, dmask) if self.has_mask else (dq, dk, dv)


class MultiHeadAttentionFunction(Function):
    """Self-attention over packed projections: qkv (B, L, 3*D) -> (B, L, D), heads of D/H."""
    attend, attend_backward = staticmethod(attention_forward), staticmethod(attention_backward)

    name = "multi_head_attention"

    def __init__(self, num_heads, key_padding_mask=None):
        self.heads = checks.positive_int(self.name, "num_heads", num_heads)
        self.key_padding_mask = key_padding_mask

    def _split(self, qkv):
        if qkv.ndim != 3:
            raise ValueError(f"multi_head_attention: expected packed qkv (B, L, 3*D), the projection "
                             f"of inputs (B, L, D) as nn.MultiHeadAttention makes it, got shape "
                             f"{tuple(qkv.shape)}")
        b, length, three_d = qkv.shape
        d = three_d // 3
        if three_d % 3 or d % self.heads:
            raise ValueError(f"multi_head_attention: packed qkv {tuple(qkv.shape)} must have a last "
                             f"axis 3*D with D divisible by {self.heads} heads")
        parts = qkv.reshape(b, length, 3, self.heads, d // self.heads)
        # views (B, H, L, d_head): no copy; the batched matmuls read them in place
        return [parts[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]

    def forward(self, qkv, attn_mask=None):
        q, k, v = self._split(qkv)
        self.scale = q.shape[-1] ** -0.5
        out, self.p = self.attend(q, k, v, self.scale, attn_mask, self.key_padding_mask)
        self.qkv, self.has_mask = qkv, attn_mask is not None
        b, h, length, dh = out.shape
        return out.transpose(0, 2, 1, 3).reshape(b, length, h * dh)

    def backward(self, g):
        q, k, v = self._split(self.qkv)
        b, length, d = g.shape
        g4 = g.reshape(b, length, self.heads, d // self.heads).transpose(0, 2, 1, 3)
        need_mask_grad = self.has_mask and self.needs_grad[1]
        dq, dk, dv, dmask = self.attend_backward(g4, q, k, v, self.p, self.scale, need_mask_grad)
        gqkv = get_xp(g).empty((b, length, 3, self.heads, d // self.heads), dtype=g.dtype)
        for i, part in enumerate((dq, dk, dv)):
            gqkv[:, :, i] = part.transpose(0, 2, 1, 3)
        gqkv = gqkv.reshape(b, length, 3 * d)
        return (gqkv, dmask) if self.has_mask else gqkv


def _mask_array(mask, like):
    if mask is None:
        return None
    mask = like.xp.asarray(as_array(mask))
    if mask.dtype != bool:
        raise TypeError(f"attention: key_padding_mask must be boolean (True = ignore), got {mask.dtype}")
    return mask


def scaled_dot_product_attention(q, k, v, key_padding_mask=None, attn_mask=None, scale=None):
    """softmax(q k^T * scale + attn_mask) v over the last two axes; scale defaults to 1/sqrt(d).
    key_padding_mask (B, Lk) is True at keys to ignore; attn_mask is an additive float mask."""
    fn = kernels.variant(ScaledDotProductAttention, q)(_mask_array(key_padding_mask, q), scale)
    return fn(q, k, v) if attn_mask is None else fn(q, k, v, attn_mask)


def multi_head_attention(qkv, num_heads, key_padding_mask=None, attn_mask=None):
    """Self-attention on packed qkv (B, L, 3*D) -> (B, L, D); see MultiHeadAttentionFunction."""
    fn = kernels.variant(MultiHeadAttentionFunction, qkv)(num_heads, _mask_array(key_padding_mask, qkv))
    return fn(qkv) if attn_mask is None else fn(qkv, attn_mask)
