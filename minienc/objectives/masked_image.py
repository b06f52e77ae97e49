"""Masked image modeling: the masked autoencoder (MAE, He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners"; official code: facebookresearch/mae, models_mae.py).

An image is cut into N patches x_1..x_N (raster order, each a vector of p*p*C pixels). Per
sample, a random subset M of the patches is removed, |M| = N - K with K = int(N * (1 - r)) kept
(mask ratio r = 0.75): shuffle the patch indices by the argsort of uniform noise, keep the first
K (`ids_keep`), and remember `ids_restore` = argsort of that shuffle, which puts any sequence in
shuffled order back into raster order.

    encoder:  z = ViT(embed(x_k) + pos_k  for k in ids_keep)       the visible patches only (B, K, D)
    decoder:  u = Linear(z) ++ [mask_token] * (N - K)               shuffled order (B, N, D')
              u = unshuffle(u, ids_restore) + pos'                  every patch back at its place
              x_hat = Linear(LayerNorm(Blocks(u)))                  pixels of every patch (B, N, p*p*C)
    loss:     L = sum_{b, i} m_bi * mean_j (x_hat_bij - t_bij)^2 / sum_{b, i} m_bi

m_bi = 1 where patch i of sample b was removed: the squared error is averaged over the pixels of
each patch, then over the removed patches of the whole batch; visible patches add nothing. The
target t is the patch's pixels, or with norm_pix_loss each patch standardised by its own mean
and (unbiased) variance, t = (x - mean) / sqrt(var + 1e-6), which the paper finds gives better
representations. Both position tables (pos for the encoder, pos' for the decoder) are fixed 2-D
sin-cos embeddings added to the patch embeddings BEFORE any token is dropped, so every kept
token knows where it came from.

The encoder is a plain `nn.VisionTransformer`: after pre-training it embeds whole images, and
`MAE.embed` average-pools its patch tokens into one vector per image for the probes.
"""
from .. import backend, checks, ops
from ..nn import init
from ..nn.layers import Linear
from .protocol import Objective
from ..nn.norm import LayerNorm
from ..nn.transformer import TransformerBlock, check_heads, check_mlp_ratio, init_transformer_weights
from ..nn.vit import (VisionTransformer, check_sincos_dim, check_vit, gather_tokens,
                      get_2d_sincos_pos_embed, patchify, unpatchify)
from ..engine import as_array, no_grad, tensor, Tensor

NORM_PIX_EPS = 1e-6


def random_masking(batch, num_patches, mask_ratio, device=None, rng=None):
    """Per-sample uniform random masking, as MAE: the argsort of uniform noise shuffles each row.

    Returns (ids_keep, ids_restore, mask), device arrays:
      ids_keep    (B, K) int   the kept patches, K = int(num_patches * (1 - mask_ratio)), in
                               shuffled (random) order; feed them to VisionTransformer(patch_indices=)
      ids_restore (B, N) int   the inverse shuffle: gathering a sequence in shuffled order (the K
                               kept tokens, then the N - K removed ones) at ids_restore puts it
                               back in raster order
      mask        (B, N) float32, 1 = removed (to reconstruct), 0 = kept; in raster order
    Drawn from `rng` (default: minienc's seeded generator of `device`) on the device, no host sync.
    """
    checks.positive_int("random_masking", "batch", batch)
    keep = kept_patches("random_masking", num_patches, mask_ratio)
    device = backend.check_device(device or backend.get_device())
    xp = backend.xp_for(device)
    rng = rng if rng is not None else backend.rng(device)
    noise = rng.random((batch, num_patches), dtype=xp.float32)
    ids_shuffle = xp.argsort(noise, axis=1)           # ascending: small noise is kept
    ids_restore = xp.argsort(ids_shuffle, axis=1)
    # position of each raster patch in the shuffled order; the first `keep` of those are kept
    mask = (ids_restore >= keep).astype(xp.float32)
    return ids_shuffle[:, :keep], ids_restore, mask


def kept_patches(owner, num_patches, mask_ratio):
    """K = int(N * (1 - mask_ratio)), checked to keep at least one patch and remove at least one
    (with none removed the loss is 0/0; with none kept the encoder sees nothing)."""
    checks.in_range(owner, "mask_ratio", mask_ratio, 0.0, 1.0, include_low=False, include_high=False)
    checks.positive_int(owner, "num_patches", num_patches)
    keep = int(num_patches * (1.0 - mask_ratio))
    if not 1 <= keep <= num_patches - 1:
        raise ValueError(f"{owner}: mask_ratio {mask_ratio} of {num_patches} patches keeps {keep}; "
                         f"it must keep at least 1 patch and remove at least 1")
    return keep


def check_keep(owner, name, keep, num_patches):
    """A view that keeps the share `keep` of its patches (random_masking at mask_ratio 1 - keep),
    checked under the caller's name for it: in (0, 1), and at least 1 of num_patches kept and
    1 masked, counted as random_masking will count them."""
    checks.in_range(owner, name, keep, 0.0, 1.0, include_low=False, include_high=False)
    kept = int(num_patches * keep)
    if not 1 <= kept < num_patches:   # none kept: attention over nothing, 0/0
        raise ValueError(f"{owner}: {name}={keep} of the encoder's {num_patches} patches keeps "
                         f"{kept}; each view must keep at least 1 patch and mask at least 1")
    kept_patches(owner, num_patches, 1.0 - keep)   # as random_masking counts
    return keep


def patch_targets(images, patch_size, norm_pix_loss=False):
    """The regression targets (B, N, p*p*C) of `images` (B, C, H, W), a device array (no graph).
    With norm_pix_loss every patch is standardised by its own mean and unbiased variance; the
    returned (targets, mean, std) then lets a reconstruction be mapped back to pixels as
    pred * std + mean. Without it mean = 0 and std = 1."""
    data = as_array(images)
    target = patchify(data, patch_size)
    xp = backend.get_xp(target)
    if not norm_pix_loss:
        return target, xp.zeros_like(target[..., :1]), xp.ones_like(target[..., :1])
    if target.shape[-1] < 2:
        raise ValueError(f"patch_targets: norm_pix_loss needs patches of at least 2 values to "
                         f"standardise, got patches {tuple(target.shape)} (patch size {patch_size})")
    mean = target.mean(axis=-1, keepdims=True)
    std = xp.sqrt(target.var(axis=-1, keepdims=True, ddof=1) + NORM_PIX_EPS)
    return (target - mean) / std, mean, std


def mae_loss(pred, target, mask):
    """Mean squared error on the removed patches only: pred, target (B, N, P); mask (B, N) with 1
    where a patch was removed. Per-patch pixel mean, then the mean over removed patches."""
    if pred.ndim != 3 or tuple(target.shape) != tuple(pred.shape) or tuple(mask.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"mae_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask "
                         f"{tuple(mask.shape)} must be (B, N, P), (B, N, P) and (B, N)")
    mask = as_array(mask)
    mask = mask.astype(pred.dtype, copy=False)   # a 0/1 indicator: exact in any float dtype
    removed = mask.sum()
    if not backend.is_cupy(mask) and not removed > 0:  # a host check only where it costs no sync
        raise ValueError(f"mae_loss: the mask {tuple(mask.shape)} marks no patch as removed, so "
                         f"there is nothing to average the loss over")
    diff = pred - target
    per_patch = (diff * diff).mean(axis=-1)
    return (per_patch * mask).sum() / removed


VIT_PARTS = ("patch_embed.patch_size", "patch_embed.in_channels", "num_patches", "grid_size", "dim")


def _check_vit_like(owner, encoder):
    """An encoder given to MAE must say what a VisionTransformer says of its patches."""
    def lacks(path):
        value = encoder
        for name in path.split("."):
            if not hasattr(value, name):
                return True
            value = getattr(value, name)
        return False
    missing = [path for path in VIT_PARTS if lacks(path)]
    if missing:
        raise TypeError(f"{owner}: encoder {type(encoder).__name__} lacks {', '.join(missing)}; "
                        f"it must be a VisionTransformer or have what one has of its patches")


class MAE(Objective):
    """A masked autoencoder: a ViT encoder over the visible patches and a light decoder.

        mae = MAE(image_size=8, patch_size=2, dim=64, depth=4, decoder_dim=32, decoder_depth=2)
        terms = mae.loss(images)                # {"loss"}: a fresh mask at mask_ratio per image
        features = mae.embed(images)            # (B, dim): mean of the encoder's patch tokens
        loss, pred, mask = mae.masked_prediction(images, masking)   # pred (B, N, p*p*C)

    masked_prediction(images, masking=None): masking is (ids_keep, ids_restore, mask) from
    random_masking; by default a fresh one at self.mask_ratio. `mae.encoder` is an nn.VisionTransformer with
    fixed sin-cos positions (or pass your own `encoder=`, which must have patch_embed (with
    patch_size and in_channels), num_patches, grid_size, dim and forward(images, patch_indices)). Weights as MAE: xavier_uniform
    Linears, zero biases, the mask token N(0, 0.02).
    """

    def __init__(self, image_size=8, patch_size=2, in_channels=1, dim=64, depth=4, num_heads=4,
                 decoder_dim=32, decoder_depth=2, decoder_num_heads=4, mlp_ratio=4.0, mask_ratio=0.75,
                 norm_pix_loss=False, encoder=None):
        # every argument checked here, under MAE's name, before a layer is built from it (the
        # layers would name themselves, and with decoder_depth 0 build no block to refuse heads)
        if encoder is None:   # (else the encoder's own arguments were checked where given)
            check_vit("MAE", image_size, patch_size, in_channels, dim, depth, num_heads, mlp_ratio)
        check_heads("MAE", decoder_dim, decoder_num_heads, "decoder_dim", "decoder_num_heads")
        checks.non_negative_int("MAE", "decoder_depth", decoder_depth)
        check_mlp_ratio("MAE", decoder_dim, mlp_ratio, "decoder_dim")
        check_sincos_dim("MAE", "decoder_dim", decoder_dim)
        self.encoder = encoder if encoder is not None else VisionTransformer(
            image_size, patch_size, in_channels, dim, depth, num_heads, mlp_ratio,
            pos_embed="sincos", weight_init="xavier")
        enc = self.encoder
        _check_vit_like("MAE", enc)
        self.patch_size, self.in_channels = enc.patch_embed.patch_size, enc.patch_embed.in_channels
        self.num_patches, self.grid_size = enc.num_patches, enc.grid_size
        kept_patches("MAE", self.num_patches, mask_ratio)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        if norm_pix_loss and self.patch_size ** 2 * self.in_channels < 2:
            raise ValueError(f"MAE: norm_pix_loss needs patches of at least 2 values, got "
                             f"{self.patch_size}x{self.patch_size}x{self.in_channels}")
        self.decoder_embed = Linear(enc.dim, decoder_dim)
        self.decoder_blocks = [TransformerBlock(decoder_dim, decoder_num_heads, mlp_ratio)
                               for _ in range(decoder_depth)]
        self.decoder_norm = LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = Linear(decoder_dim, self.patch_size ** 2 * self.in_channels)
        for part in (self.decoder_embed, *self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_transformer_weights(part, style="xavier")
        self.mask_token = init.normal(init.empty((1, 1, decoder_dim)), std=0.02)
        table = get_2d_sincos_pos_embed(decoder_dim, self.grid_size)[None]
        self.register_buffer("decoder_pos_embed", backend.to_device(table, backend.get_device()))

    def forward_encoder(self, images, ids_keep):
        """The encoder on the kept patches only: (B, K, dim) [with a CLS token first if the
        encoder has one]."""
        return self.encoder(images, patch_indices=ids_keep)

    def forward_decoder(self, latent, ids_restore):
        """latent (B, K [+1], dim) in shuffled order -> predicted pixels of every patch (B, N, p*p*C)."""
        x = self.decoder_embed(latent)
        b, n = x.shape[0], self.num_patches
        has_cls = getattr(self.encoder, "cls_token", None) is not None
        cls, visible = (x[:, :1], x[:, 1:]) if has_cls else (None, x)
        removed = self.mask_token.broadcast_to(b, n - visible.shape[1], x.shape[-1])
        x = gather_tokens(ops.concatenate([visible, removed], axis=1), ids_restore)
        x = x + self.decoder_pos_embed
        if has_cls:  # the CLS token takes part in decoder attention, with no position, as in MAE
            x = ops.concatenate([cls, x], axis=1)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:] if has_cls else x

    def loss(self, images):
        return {"loss": self.masked_prediction(images)[0]}

    def masked_prediction(self, images, masking=None):
        """-> (loss, pred (B, N, p*p*C) in target units, mask (B, N) with 1 = removed)."""
        images = self._images(images)
        if masking is None:
            masking = random_masking(images.shape[0], self.num_patches, self.mask_ratio, images.device)
        ids_keep, ids_restore, mask = masking
        pred = self.forward_decoder(self.forward_encoder(images, ids_keep), ids_restore)
        target, _, _ = patch_targets(images, self.patch_size, self.norm_pix_loss)
        return mae_loss(pred, target, mask), pred, mask

    def embed(self, images):
        """(B, dim): the encoder on the WHOLE image, its patch tokens averaged (CLS dropped)."""
        tokens = self.encoder(self._images(images))
        if getattr(self.encoder, "cls_token", None) is not None:
            tokens = tokens[:, 1:]
        return tokens.mean(axis=1)

    def reconstruct(self, images, masking=None, fill=0.5):
        """For pictures: a dict of device arrays (B, C, H, W) -- "masked" (removed patches set to
        `fill`), "reconstruction" (the decoder's prediction of every patch, mapped back to
        pixels when norm_pix_loss), "pasted" (visible patches from the input, removed ones
        predicted) -- and "mask" (B, N)."""
        images = self._images(images)
        with no_grad():
            _, pred, mask = self.masked_prediction(images, masking)
        _, mean, std = patch_targets(images, self.patch_size, self.norm_pix_loss)
        pixels = pred.data * std + mean
        original = patchify(images.data, self.patch_size)
        removed = mask[..., None]

        def image(patches):
            return unpatchify(patches, self.patch_size, self.in_channels, self.grid_size)
        return {"masked": image(original * (1.0 - removed) + fill * removed), "reconstruction": image(pixels),
                "pasted": image(original * (1.0 - removed) + pixels * removed), "mask": mask}

    def _images(self, images):
        if not isinstance(images, Tensor):
            images = tensor(images, device=self.device)
        if images.ndim == 3 and self.in_channels == 1:
            images = images.reshape(images.shape[0], 1, *images.shape[1:])
        return images
