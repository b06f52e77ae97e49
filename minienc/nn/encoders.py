"""The encoders the objectives share: MLPEncoder, ConvEncoder/ConvDecoder, TextTransformer.
(VisionTransformer lives in nn/vit.py with the patch helpers it needs.)

The MLP and conv models are Sequentials, so they print, index and save like any stack of layers;
an MLPEncoder with the sizes reversed is the matching decoder.
"""
from .. import checks
from ..engine import as_array
from ..ops.conv import out_size
from .conv import Conv2d, ConvTranspose2d
from .layers import Embedding, Flatten, Linear, ReLU, Unflatten, check_dropout
from .module import Module, Sequential
from .norm import BatchNorm1d, LayerNorm
from .transformer import TransformerBlock, check_heads, check_mlp_ratio, init_transformer_weights
from .vit import _trunc_normal_param


class MLPEncoder(Sequential):
    """Linear -> [BatchNorm1d] -> activation for each hidden width, then a final Linear (no
    activation): MLPEncoder(64, (256, 256), 32) is the benchmark's encoder, and
    MLPEncoder(32, (256, 256), 64) its decoder."""

    def __init__(self, in_features, hidden=(256, 256), out_features=32, activation=ReLU, batch_norm=False):
        hidden = checks.sizes("MLPEncoder", "hidden", hidden)
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            checks.positive_int("MLPEncoder", name, value)
        layers, width = [], in_features
        for h in hidden:
            layers.append(Linear(width, h, bias=not batch_norm))  # BN's shift makes a bias redundant
            if batch_norm:
                layers.append(BatchNorm1d(h))
            layers.append(activation())
            width = h
        layers.append(Linear(width, out_features))
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features


class ConvEncoder(Sequential):
    """Conv2d(kernel, stride, padding) -> activation per entry of `channels`; with out_features,
    then Flatten and a Linear to an embedding of that size (needs image_size to know the flat size).

    ConvEncoder(1, (16, 32)) on (N, 1, 28, 28) gives (N, 32, 7, 7), the benchmark's encoder."""

    def __init__(self, in_channels=1, channels=(16, 32), kernel_size=3, stride=2, padding=1,
                 activation=ReLU, out_features=None, image_size=None):
        layers, c = [], checks.positive_int("ConvEncoder", "in_channels", in_channels)
        channels = checks.sizes("ConvEncoder", "channels", channels)
        for out in channels:
            layers += [Conv2d(c, checks.positive_int("ConvEncoder", "channels", out), kernel_size,
                              stride, padding), activation()]
            c = out
        self.feature_shape = None
        if image_size is not None:
            hw = checks.pair("ConvEncoder", "image_size", image_size, minimum=1)
            for conv in layers[::2]:
                hw = tuple(out_size(n, k, s, p) for n, k, s, p in
                           zip(hw, conv.kernel_size, conv.stride, conv.padding))
            if min(hw) < 1:
                raise ValueError(f"ConvEncoder: image_size {image_size} is too small for "
                                 f"{len(channels)} convolutions (kernel {kernel_size}, stride "
                                 f"{stride}, padding {padding}): the features would be {hw}")
            self.feature_shape = (c,) + hw
        if out_features is not None:
            if self.feature_shape is None:
                raise ValueError("ConvEncoder: out_features needs image_size to size the final Linear")
            layers += [Flatten(), Linear(c * self.feature_shape[1] * self.feature_shape[2], out_features)]
        super().__init__(*layers)


class ConvDecoder(Sequential):
    """The mirror of ConvEncoder: [Linear(in_features, C*h*w) -> activation -> reshape to
    feature_shape], then ConvTranspose2d per entry of `channels` (each doubling H and W with the
    defaults) with activations between, ending in `out_channels` LOGITS (no final activation:
    pair it with binary_cross_entropy_with_logits or apply sigmoid).

    ConvDecoder(1, (32, 16)) maps (N, 32, 7, 7) back to (N, 1, 28, 28)."""

    def __init__(self, out_channels=1, channels=(32, 16), kernel_size=3, stride=2, padding=1,
                 output_padding=1, activation=ReLU, in_features=None, feature_shape=None):
        channels, layers = checks.sizes("ConvDecoder", "channels", channels), []
        if in_features is not None:
            if feature_shape is None or feature_shape[0] != channels[0]:
                raise ValueError(f"ConvDecoder: in_features needs feature_shape (C, h, w) with "
                                 f"C = channels[0] = {channels[0]}, got {feature_shape}")
            c, h, w = feature_shape
            layers += [Linear(in_features, c * h * w), activation(), Unflatten(feature_shape)]
        widths = list(channels) + [out_channels]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(ConvTranspose2d(c_in, c_out, kernel_size, stride, padding, output_padding))
            if i < len(widths) - 2:
                layers.append(activation())
        super().__init__(*layers)


def check_text_transformer(owner, vocab_size, max_len, dim, depth, num_heads, mlp_ratio, pad_id,
                           dropout):
    """A TextTransformer's arguments, checked under `owner`'s name (its own, or a model's that
    builds one from its arguments, as MaskedLanguageModel does): every one where it is given,
    the blocks' even at depth 0, where no block is built to refuse them."""
    checks.positive_int(owner, "vocab_size", vocab_size)
    checks.positive_int(owner, "max_len", max_len)
    checks.non_negative_int(owner, "depth", depth)
    check_heads(owner, dim, num_heads)
    check_mlp_ratio(owner, dim, mlp_ratio)
    check_dropout(owner, "dropout", dropout)
    if pad_id is not None:   # (None: no padding to mask)
        checks.token_id(owner, "pad_id", pad_id, vocab_size)


class TextTransformer(Module):
    """Token + learnable position embeddings -> pre-norm TransformerBlocks -> LayerNorm.

    forward(ids (B, L) ints, key_padding_mask=None) -> token embeddings (B, L, dim). Without an
    explicit mask, keys equal to pad_id are masked (pad_id=None masks nothing). The token table
    is `token_embedding.weight` (vocab_size, dim), for an MLM head that ties its output to it."""

    def __init__(self, vocab_size, max_len=128, dim=128, depth=2, num_heads=4, mlp_ratio=4.0,
                 pad_id=0, dropout=0.0):
        check_text_transformer("TextTransformer", vocab_size, max_len, dim, depth, num_heads,
                               mlp_ratio, pad_id, dropout)
        self.vocab_size, self.max_len, self.dim, self.pad_id = vocab_size, max_len, dim, pad_id
        self.token_embedding = Embedding(vocab_size, dim, std=0.02)
        self.blocks = [TransformerBlock(dim, num_heads, mlp_ratio, dropout=dropout) for _ in range(depth)]
        self.norm = LayerNorm(dim, eps=1e-6)
        init_transformer_weights(self)
        self.pos_embed = _trunc_normal_param((max_len, dim))

    def forward(self, ids, key_padding_mask=None):
        if ids.ndim != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"TextTransformer: ids have shape {ids.shape}, expected (B, L) with "
                             f"L <= max_len = {self.max_len}")
        if key_padding_mask is None and self.pad_id is not None:
            key_padding_mask = as_array(ids) == self.pad_id
        length = ids.shape[1]
        x = self.token_embedding(ids)
        x = x + (self.pos_embed if length == self.max_len else self.pos_embed[:length])
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.norm(x)

