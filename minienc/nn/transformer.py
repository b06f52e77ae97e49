"""Transformer parts: multi-head self-attention, the MLP, the pre-norm block, and the weight
initialisation that ViT-style encoders (MAE, I-JEPA) use.

The pre-norm block (as in ViT, MAE and I-JEPA) is

    x = x + Attention(LayerNorm(x))
    x = x + MLP(LayerNorm(x)),      MLP = Linear(D, r*D) -> GELU -> Linear(r*D, D)

Attention projects q, k and v with ONE Linear(D, 3D) and runs the fused packed attention op
(minienc/ops/attention.py), so a block is a handful of graph nodes, not dozens.
"""
import math

from .. import checks, ops
from ..engine import no_grad
from . import init
from .layers import GELU, Dropout, Linear
from .module import Module
from .norm import LayerNorm


def check_heads(owner, dim, num_heads, dim_name="dim", heads_name="num_heads"):
    """The rule for attention's width and heads, stated once: positive integers, the width split
    evenly into the heads. A model that builds blocks from its own arguments (MAE's decoder, a
    JEPA predictor) checks them with it under its own names, so a bad value is named by the
    model it was given to -- even at depth 0, where no block is built to refuse it."""
    checks.positive_int(owner, dim_name, dim)
    checks.positive_int(owner, heads_name, num_heads)
    if dim % num_heads:
        raise ValueError(f"{owner}: {dim_name} {dim} is not divisible by {num_heads} heads "
                         f"({heads_name})")


def check_mlp_ratio(owner, dim, mlp_ratio, dim_name="dim"):
    """A block's MLP is int(dim * mlp_ratio) wide: mlp_ratio a finite number > 0 that leaves it
    at least 1 wide (check_heads says why a model checks it under its own name)."""
    checks.positive(owner, "mlp_ratio", mlp_ratio)
    if int(dim * mlp_ratio) < 1:
        raise ValueError(f"{owner}: mlp_ratio {mlp_ratio} of {dim_name} {dim} leaves an MLP of "
                         f"width 0")


class MultiHeadAttention(Module):
    """Self-attention with `num_heads` heads of dim // num_heads.

    forward(x (B, L, D), key_padding_mask=None (B, L) bool, True = ignore that key,
    attn_mask=None additive) -> (B, L, D)."""

    def __init__(self, dim, num_heads, qkv_bias=True, dropout=0.0):
        check_heads("MultiHeadAttention", dim, num_heads)
        self.dim, self.num_heads = dim, num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, x, key_padding_mask=None, attn_mask=None):
        # x's shapes are checked once each: its last axis by the qkv Linear, its rank by the op
        out = ops.multi_head_attention(self.qkv(x), self.num_heads, key_padding_mask, attn_mask)
        return self.drop(self.proj(out))

    def __repr__(self):
        return f"MultiHeadAttention(dim={self.dim}, num_heads={self.num_heads})"


class MLP(Module):
    def __init__(self, dim, hidden, out=None, dropout=0.0):
        checks.positive_int("MLP", "hidden", hidden)
        self.fc1, self.act, self.fc2 = Linear(dim, hidden), GELU(), Linear(hidden, out or dim)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.act(self.fc1(x))))


class TransformerBlock(Module):
    """Pre-norm block: attention and an MLP of width mlp_ratio * dim, each in a residual branch.
    LayerNorm eps is 1e-6 as in ViT, MAE and I-JEPA."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, dropout=0.0, eps=1e-6):
        checks.positive_int("TransformerBlock", "dim", dim)
        check_mlp_ratio("TransformerBlock", dim, mlp_ratio)
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias, dropout)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x, key_padding_mask=None, attn_mask=None):
        x = x + self.attn(self.norm1(x), key_padding_mask, attn_mask)
        return x + self.mlp(self.norm2(x))


def init_transformer_weights(module, style="trunc_normal", std=0.02):
    """Re-initialise every Linear and LayerNorm inside `module` as ViT codebases do: Linear
    weights trunc_normal(std) (I-JEPA) or xavier_uniform (MAE), biases 0; LayerNorm 1 and 0.
    With trunc_normal, each block's output projections (attn.proj, mlp.fc2) are then scaled by
    1/sqrt(2 * layer) as I-JEPA does, so the residual stream does not grow with depth."""
    if style not in ("trunc_normal", "xavier"):
        raise ValueError(f"init_transformer_weights: style must be 'trunc_normal' or 'xavier', got {style!r}")
    for m in module.modules():
        if isinstance(m, Linear):
            init.trunc_normal(m.weight, std=std) if style == "trunc_normal" else init.xavier_uniform(m.weight)
            if m.bias is not None:
                init.zeros(m.bias)
        elif isinstance(m, LayerNorm) and m.weight is not None:
            init.ones(m.weight), init.zeros(m.bias)
    if style == "trunc_normal":
        blocks = [m for m in module.modules() if isinstance(m, TransformerBlock)]
        with no_grad():   # an in-place update of a parameter, counted in its version
            for layer, block in enumerate(blocks, start=1):
                for linear in (block.attn.proj, block.mlp.fc2):
                    linear.weight *= 1.0 / math.sqrt(2.0 * layer)
    return module
