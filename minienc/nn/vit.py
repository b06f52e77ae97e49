"""Vision Transformer pieces: patchify/unpatchify, fixed 2-D sin-cos position embeddings,
PatchEmbed, and the VisionTransformer encoder that MAE and I-JEPA share (Dosovitskiy et al. 2021).

Patch order is raster order over the grid (token t = row * grid_w + col), and a patch vector is
laid out (p, p, C), channels last, as MAE's patchify: `unpatchify(patchify(x)) == x` exactly.

The encoder can run on a per-sample SUBSET of patches: `forward(x, patch_indices)` with integer
patch_indices (B, K) gathers those patches and their position embeddings first, so the blocks
only ever see K tokens. MAE's encoder sees the visible patches; I-JEPA's context encoder sees the
context block.
"""
from .. import backend, checks, ops
from ..engine import as_array, tensor, Tensor
from . import init
from .layers import Linear, check_dropout
from .module import Module
from .norm import LayerNorm
from .transformer import TransformerBlock, check_heads, check_mlp_ratio, init_transformer_weights


def _grid(image_hw, patch_size, owner="patchify"):
    h, w = image_hw
    if h % patch_size or w % patch_size:
        raise ValueError(f"{owner}: image size {tuple(image_hw)} is not divisible by patch size {patch_size}")
    return h // patch_size, w // patch_size


def patchify(images, patch_size):
    """(B, C, H, W) -> (B, (H/p)*(W/p), p*p*C). Works on Tensors (differentiable) and arrays."""
    if images.ndim != 4:
        raise ValueError(f"patchify: expected images (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, hgt, wid = images.shape
    gh, gw = _grid((hgt, wid), patch_size)
    p = patch_size
    x = images.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(patches, patch_size, channels=1, grid=None):
    """The inverse of patchify: (B, N, p*p*C) -> (B, C, gh*p, gw*p); grid (gh, gw) defaults to a
    square grid."""
    b, n, size = patches.shape
    p = patch_size
    if size != p * p * channels:
        raise ValueError(f"unpatchify: patches {tuple(patches.shape)} do not hold {p}x{p} patches "
                         f"of {channels} channels")
    if grid is None:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"unpatchify: {n} patches are not a square grid; pass grid=(gh, gw)")
        grid = (side, side)
    gh, gw = grid
    x = patches.reshape(b, gh, gw, p, p, channels).transpose(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


def get_1d_sincos_pos_embed(dim, positions):
    """(len(positions), dim): [sin(pos * w_i) for i < dim/2, cos(pos * w_i) for i < dim/2] with
    w_i = 1 / 10000^(i / (dim/2)) (the Transformer's frequencies), computed on the host."""
    np = backend.numpy
    if dim % 2:
        raise ValueError(f"sin-cos position embedding: dim {dim} must be even")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.asarray(positions, dtype=np.float64).reshape(-1, 1) * omega
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed(dim, grid_size, cls_token=False):
    """Fixed 2-D position embeddings (grid_h * grid_w [+1], dim) as MAE and I-JEPA build them:
    the first half of each vector encodes the patch's COLUMN, the second half its ROW (each with
    get_1d_sincos_pos_embed of dim/2), tokens in raster order; cls_token prepends a zero row.
    A host float32 array."""
    np = backend.numpy
    gh, gw = checks.pair("get_2d_sincos_pos_embed", "grid_size", grid_size, minimum=1)
    check_sincos_dim("get_2d_sincos_pos_embed", "dim", dim)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    emb = np.concatenate([get_1d_sincos_pos_embed(dim // 2, cols),
                          get_1d_sincos_pos_embed(dim // 2, rows)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb.astype(np.float32)


def check_sincos_dim(owner, name, dim):
    """A 2-D sin-cos table splits its width into sin and cos of columns and of rows: a multiple
    of 4 (checked under the name `owner` gave it, as check_heads in transformer.py)."""
    if dim % 4:
        raise ValueError(f"{owner}: {name} {dim} must be divisible by 4 (fixed 2-D sin-cos "
                         f"positions split it into sin and cos of columns and rows)")


def patch_grid(owner, image_size, patch_size, in_channels):
    """(image_size as a pair, the patch grid) of images cut into patch_size patches, each
    argument checked under `owner`'s name: sizes of at least 1, the image divisible."""
    image_size = checks.pair(owner, "image_size", image_size, minimum=1)
    checks.positive_int(owner, "patch_size", patch_size)
    checks.positive_int(owner, "in_channels", in_channels)
    return image_size, _grid(image_size, patch_size, owner)


POS_EMBEDS = ("sincos", "learned", None)


def check_vit(owner, image_size, patch_size, in_channels, dim, depth, num_heads, mlp_ratio,
              pos_embed="sincos", dropout=0.0):
    """A VisionTransformer's arguments, checked under `owner`'s name (the ViT's own, or a model's
    that builds one from its arguments, as MAE does): every one where it is given, num_heads
    and mlp_ratio even at depth 0, where no block is built to refuse them."""
    patch_grid(owner, image_size, patch_size, in_channels)
    checks.non_negative_int(owner, "depth", depth)
    check_heads(owner, dim, num_heads)
    check_mlp_ratio(owner, dim, mlp_ratio)
    check_dropout(owner, "dropout", dropout)
    checks.one_of(owner, "pos_embed", pos_embed, POS_EMBEDS)
    if pos_embed == "sincos":
        check_sincos_dim(owner, "dim", dim)


def patch_index_array(owner, indices, xp, batch, count):
    """`indices` as an integer device array (B, K), checked: integers, (B, K) or a (K,) shared by
    every sample, each in [0, count) (that last on the host only, where it costs no device sync).
    `owner` names the caller in the error."""
    data = xp.asarray(as_array(indices))
    if data.dtype.kind not in "iu":
        raise TypeError(f"{owner}: patch indices must be integers, got {data.dtype}")
    if data.ndim == 1:
        data = xp.broadcast_to(data, (batch,) + data.shape)
    if data.ndim != 2 or data.shape[0] != batch:
        raise ValueError(f"{owner}: patch indices must be (B, K) = ({batch}, K) or (K,), got "
                         f"{tuple(data.shape)}")
    if not backend.is_cupy(data) and data.size and (data.min() < 0 or data.max() >= count):
        raise IndexError(f"{owner}: patch indices must lie in [0, {count}), got values in "
                         f"[{int(data.min())}, {int(data.max())}]")
    return data


def gather_tokens(tokens, indices):
    """tokens (B, N, D), indices (B, K) -> (B, K, D): out[b, j] = tokens[b, indices[b, j]]."""
    return _take(tokens, patch_index_array("gather_tokens", indices, tokens.xp, *tokens.shape[:2]))


def _take(tokens, index):
    """gather_tokens for an index array already checked by patch_index_array."""
    rows = tokens.xp.arange(tokens.shape[0]).reshape(-1, 1)
    return tokens[rows, index]


class PatchEmbed(Module):
    """Cut images into p x p patches and project each to `dim`: a Linear on patchify(x), which
    is exactly a Conv2d with kernel = stride = p, without the im2col copy."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        self.image_size, self.grid_size = patch_grid("PatchEmbed", image_size, patch_size, in_channels)
        self.patch_size, self.in_channels = int(patch_size), int(in_channels)
        self.dim = checks.positive_int("PatchEmbed", "dim", dim)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = Linear(patch_size * patch_size * in_channels, dim)

    def forward(self, images, patch_indices=None):
        """(B, C, H, W) -> (B, N, dim), or (B, K, dim) for the patches in patch_indices (B, K)."""
        patches = self.patches(images)
        if patch_indices is not None:
            patches = gather_tokens(patches, patch_indices)
        return self.proj(patches)

    def patches(self, images):
        """images (B, C, H, W), a Tensor or a raw batch, checked against image_size and cut into
        patches (B, N, p*p*C)."""
        if not isinstance(images, Tensor):  # a raw (NumPy/CuPy) batch: float32 on our device
            images = tensor(images, device=self.proj.weight.device)
        if images.ndim == 3 and self.in_channels == 1:
            images = images.reshape(images.shape[0], 1, *images.shape[1:])
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.in_channels,) + self.image_size:
            raise ValueError(f"PatchEmbed: images have shape {images.shape}, expected "
                             f"(B, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]})")
        return patchify(images, self.patch_size)


class VisionTransformer(Module):
    """ViT encoder returning token embeddings.

    forward(images (B, C, H, W), patch_indices=None (B, K) ints) -> (B, K [+1], dim): the final
    LayerNorm's output for the selected patches (all N when patch_indices is None), with the CLS
    token first when cls_token=True. pos_embed is "sincos" (fixed, MAE and I-JEPA), "learned",
    or None. Weights: trunc_normal(0.02) as I-JEPA (weight_init="xavier" for MAE's choice).
    """

    def __init__(self, image_size=28, patch_size=4, in_channels=1, dim=128, depth=4, num_heads=4,
                 mlp_ratio=4.0, cls_token=False, pos_embed="sincos", qkv_bias=True, dropout=0.0,
                 weight_init="trunc_normal"):
        check_vit("VisionTransformer", image_size, patch_size, in_channels, dim, depth, num_heads,
                  mlp_ratio, pos_embed, dropout)
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.patch_embed = PatchEmbed(image_size, patch_size, in_channels, dim)
        self.grid_size, self.num_patches = self.patch_embed.grid_size, self.patch_embed.num_patches
        self.blocks = [TransformerBlock(dim, num_heads, mlp_ratio, qkv_bias, dropout) for _ in range(depth)]
        self.norm = LayerNorm(dim, eps=1e-6)
        init_transformer_weights(self, style=weight_init)
        self.cls_token = _trunc_normal_param((1, 1, dim)) if cls_token else None
        if pos_embed == "sincos":
            table = get_2d_sincos_pos_embed(dim, self.grid_size)[None]
            self.register_buffer("pos_embed", backend.to_device(table, backend.get_device()))
        elif pos_embed == "learned":
            self.pos_embed = _trunc_normal_param((1, self.num_patches, dim))
        else:   # None (check_vit refused anything else)
            self.pos_embed = None

    def forward(self, images, patch_indices=None):
        patches = self.patch_embed.patches(images)   # (B, N, p*p*C)
        pos = self.pos_embed                         # (1, N, dim), a Tensor (learned) or an array
        if patch_indices is not None:  # only these patches go in: indices checked once, used twice
            index = patch_index_array("VisionTransformer", patch_indices, patches.xp,
                                      patches.shape[0], self.num_patches)
            patches = _take(patches, index)
            pos = None if pos is None else pos[0][index]   # (B, K, dim)
        tokens = self.patch_embed.proj(patches)
        if pos is not None:
            tokens = tokens + pos
        if self.cls_token is not None:
            b = tokens.shape[0]
            tokens = ops.concatenate([self.cls_token.broadcast_to(b, 1, self.dim), tokens], axis=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def _trunc_normal_param(shape):
    return init.trunc_normal(init.empty(shape), std=0.02)

