"""I-JEPA: predicting the embeddings of hidden image blocks from a visible one (Assran et al.
2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture";
official code: facebookresearch/ijepa, src/train.py and src/models/vision_transformer.py).

The idea. A masked autoencoder predicts the PIXELS of hidden patches, so its encoder must keep
every detail a pixel loss rewards (stroke thickness, noise, exact position). I-JEPA predicts the
hidden patches' EMBEDDINGS, as computed by a slowly moving copy of the encoder: the target is
whatever the encoder itself finds worth representing, so unpredictable detail can be dropped
and the representation is pushed towards what can be inferred from context (shape, layout).

Per image, a multi-block sampler (minienc/objectives/multiblock.py) picks T target blocks
B_1..B_T of patches and a context block C with every target patch removed. Then

    s_y = LN(f_target(x))                the target encoder on the WHOLE image, layer-normed over
                                         features (no affine), patches of B_i gathered: s_y(i)
    s_x = f_context(x_C)                 the context encoder on the context patches only
    s_hat(i) = g(s_x, pos(B_i))          the predictor: context tokens projected down (+ their
                                         positions) and one mask token per target patch carrying
                                         that patch's position; its outputs at the mask tokens,
                                         projected back up, are the predictions
    L = mean over images b, blocks i, patches j in B_i, features d of
            smooth_l1(s_hat(i)_jd - s_y(i)_jd)     (released code; beta = 1)
        or  (s_hat(i)_jd - s_y(i)_jd)^2             (the paper's L2)

Only f_context and g are trained (AdamW, biases and norm weights without weight decay). The
target encoder gets no gradient (stop-gradient); after each step it follows the context
encoder by an exponential moving average, theta_target <- m theta_target + (1 - m) theta_context,
with m rising linearly from 0.996 to 1.0 over training.

What stops collapse (every image mapped to one constant, which a predictor could match for
free): the target is produced by a DIFFERENT network that does not descend the loss, the EMA
moves it only slowly, and the predictor (asymmetric: the target branch has none) absorbs what
the context cannot know, as in BYOL. Nothing in the loss forbids collapse; the dynamics avoid it.
Watch RankMe and the embedding std (minienc.eval) during training to see it does not happen.

At small scale the dynamics do not suffice: on 4x4 patch grids the targets are mostly
predictable from their position, and the encoder lowers the loss by shrinking whatever varies
between images (RankMe 2.8 -> 1.2; the study is in README's I-JEPA section). The optional
remedy is NOT in I-JEPA. C-JEPA (Mo & Tong 2024) adds VICReg (Bardes et al. 2022) to I-JEPA,
invariance between two augmented views included; minienc takes only VICReg's variance and
covariance terms, on one view: the context encoder's embeddings average-pooled per image, z (B, D):

    L += w_var * mean_d relu(1 - sqrt(Var_b z_d + eps))      every feature varies over images
       + w_cov * sum_{d != e} Cov_b(z)_de^2 / D              and features do not repeat each other

(variance_weight, covariance_weight; both 0 by default, which is exactly I-JEPA.) With
distributed=True (minienc.distributed) these batch statistics, and those of "layer+batch", are
over the global batch: the pooled embeddings are gathered from every process, with a gradient.

The predictor runs all T blocks in ONE pass, as the released code does: the context tokens are
repeated once per block and each copy is followed by that block's mask tokens, so the blocks of
an image never attend to each other. Evaluation uses the TARGET encoder, average-pooled over
patches (`IJEPA.embed`).

Small differences from the released code: its init_model re-initialises every Linear with
trunc_normal(0.02) AFTER the 1/sqrt(2 * layer) rescale of the blocks' output projections, which
undoes the rescale; minienc keeps it (init_transformer_weights). target_norm="layer+batch" is
not in I-JEPA: it is an option for the small-scale study (README).
"""
from .. import backend, ops
from .. import distributed as dist
from ..nn import init
from ..nn.layers import Linear
from ..nn.module import Module
from ..nn.norm import LayerNorm
from ..nn.transformer import TransformerBlock, init_transformer_weights
from ..nn.vit import VisionTransformer, gather_tokens, get_2d_sincos_pos_embed
from ..optim.ema import EMA
from ..optim.optimizer import param_groups_without_decay
from ..engine import as_array, no_grad
from .vicreg import variance_covariance  # the one implementation, shared with VICReg

LOSSES = ("smooth_l1", "l2")
TARGET_NORMS = ("layer", "layer+batch", None)


def _indices(name, idx, batch, ndim, num_patches, device):
    """Mask indices as an integer array on `device`, checked: (B, K) or (B, T, K), in range."""
    data = as_array(idx)
    data = backend.to_device(data, device)
    if data.dtype.kind not in "iu" or data.ndim != ndim or data.shape[0] != batch:
        want = "(B, K)" if ndim == 2 else "(B, T, K)"
        raise ValueError(f"{name}: expected integer indices {want} with B = {batch}, got "
                         f"{data.dtype} array of shape {tuple(data.shape)}")
    if not backend.is_cupy(data) and data.size and (data.min() < 0 or data.max() >= num_patches):
        raise IndexError(f"{name}: patch indices must lie in [0, {num_patches}), got "
                         f"[{int(data.min())}, {int(data.max())}]")
    return data


def jepa_loss(predictions, targets, loss="smooth_l1"):
    """Mean over every target patch and feature of smooth L1 (beta 1) or squared error."""
    if tuple(predictions.shape) != tuple(targets.shape):
        raise ValueError(f"jepa_loss: predictions {tuple(predictions.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    if loss == "smooth_l1":
        return ops.smooth_l1_loss(predictions, targets, beta=1.0)
    if loss == "l2":
        return ops.mse_loss(predictions, targets)
    raise ValueError(f"jepa_loss: loss must be one of {LOSSES}, got {loss!r}")


class JEPAPredictor(Module):
    """The narrow transformer g of I-JEPA (VisionTransformerPredictor in the released code).

    forward(context (B, Kc, D), context_idx (B, Kc), target_idx (B, T, Kt)) -> (B, T, Kt, D):
    the prediction of the target encoder's embedding of patch target_idx[b, i, j].
    dim: the predictor's width (narrower than D); fixed 2-D sin-cos positions of that width.
    """

    def __init__(self, grid_size, embed_dim, dim=None, depth=6, num_heads=4, mlp_ratio=4.0):
        dim = dim or embed_dim // 2
        self.grid_size = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim, self.dim = embed_dim, dim
        self.embed = Linear(embed_dim, dim)
        self.blocks = [TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth)]
        self.norm = LayerNorm(dim, eps=1e-6)
        self.proj = Linear(dim, embed_dim)
        init_transformer_weights(self)
        self.mask_token = init.trunc_normal(init.empty((1, 1, dim)), std=0.02)
        table = get_2d_sincos_pos_embed(dim, self.grid_size)
        self.register_buffer("pos_embed", backend.to_device(table, backend.get_device()))

    def forward(self, context, context_idx, target_idx):
        if context.ndim != 3 or context.shape[-1] != self.embed_dim:
            raise ValueError(f"JEPAPredictor: context has shape {tuple(context.shape)}, expected "
                             f"(B, Kc, {self.embed_dim})")
        b, kc, _ = context.shape
        cidx = _indices("JEPAPredictor context_idx", context_idx, b, 2, self.num_patches, context.device)
        tidx = _indices("JEPAPredictor target_idx", target_idx, b, 3, self.num_patches, context.device)
        if cidx.shape[1] != kc:
            raise ValueError(f"JEPAPredictor: context_idx {tuple(cidx.shape)} does not match "
                             f"context {tuple(context.shape)}")
        _, t, kt = tidx.shape
        x = self.embed(context) + self.pos_embed[cidx]                        # (B, Kc, P)
        # one copy of each image's context per target block, sample-major: row b * T + i
        x = x.reshape(b, 1, kc, self.dim).broadcast_to(b, t, kc, self.dim).reshape(b * t, kc, self.dim)
        queries = self.mask_token + self.pos_embed[tidx.reshape(b * t, kt)]    # (B*T, Kt, P)
        x = ops.concatenate([x, queries], axis=1)
        for block in self.blocks:
            x = block(x)
        x = self.proj(self.norm(x)[:, kc:])
        return x.reshape(b, t, kt, self.embed_dim)


class IJEPA(Module):
    """Context encoder + EMA target encoder + predictor, and the loss between them.

    jepa = IJEPA(VisionTransformer(...), predictor_dim=32, predictor_depth=2)
    opt = AdamW(jepa.param_groups(weight_decay=0.04), lr=1e-3)   # never the target encoder
    loss = jepa(images, context_idx, target_idx)                  # indices from the sampler
    loss.backward(); opt.step(); jepa.update_target(momentum)

    target_norm: "layer" (the released code): layer-norm the target encoder's output over
    features, no affine, before gathering; "layer+batch": then also standardise every
    (patch position, feature) over the batch's images (NOT in I-JEPA; see `targets`); None:
    the raw outputs. loss: "smooth_l1" (code) or "l2" (paper). variance_weight,
    covariance_weight: the VICReg terms on the pooled context embeddings (module docstring;
    0 = I-JEPA as released). distributed: the batch statistics over every process's batch.
    """

    def __init__(self, encoder, predictor_dim=None, predictor_depth=6, predictor_heads=None,
                 loss="smooth_l1", target_norm="layer", variance_weight=0.0, covariance_weight=0.0,
                 distributed=False):
        if not isinstance(encoder, VisionTransformer) or encoder.cls_token is not None:
            raise ValueError("IJEPA: the encoder must be a VisionTransformer without a CLS token")
        if target_norm not in TARGET_NORMS:
            raise ValueError(f"IJEPA: target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
        if loss not in LOSSES:
            raise ValueError(f"IJEPA: loss must be one of {LOSSES}, got {loss!r}")
        self.context_encoder = encoder
        self._ema = EMA(encoder)   # a deep copy, frozen: no gradient, never in the optimizer
        self.target_encoder = self._ema.target
        self.predictor = JEPAPredictor(encoder.grid_size, encoder.dim, predictor_dim,
                                       predictor_depth, predictor_heads or encoder.num_heads)
        self.loss_name, self.target_norm = loss, target_norm
        self.variance_weight, self.covariance_weight = float(variance_weight), float(covariance_weight)
        self.distributed = distributed

    def param_groups(self, weight_decay):
        """AdamW groups of the TRAINED parts (context encoder, predictor): weights with
        `weight_decay`, biases and norm parameters without, as I-JEPA's init_opt."""
        return param_groups_without_decay([self.context_encoder, self.predictor], weight_decay)

    def targets(self, images, target_idx):
        """(B, T, Kt, D): the target encoder's (layer-normed) embeddings of the target patches;
        no graph, so no gradient can reach the target encoder."""
        with no_grad():
            h = self.target_encoder(images)
            if self.target_norm is not None:
                h = ops.layer_norm(h, eps=1e-5)  # F.layer_norm(h, (D,)) in the released code
            if self.target_norm == "layer+batch":
                # On small images the fixed position embeddings dominate every token, so most of
                # a target is predictable from its position alone and the encoder lowers the
                # loss by shrinking what varies between images. Standardising each position's
                # feature over the batch leaves only that variation, at unit scale.
                batch = dist.all_gather(h) if self.distributed else h
                h = (h - batch.mean(axis=0, keepdims=True)) / (batch.var(axis=0, keepdims=True) + 1e-5).sqrt()
            b, t, kt = target_idx.shape
            return gather_tokens(h, target_idx.reshape(b, t * kt)).reshape(b, t, kt, h.shape[-1])

    def forward(self, images, context_idx, target_idx):
        """The scalar loss for one batch and its masks (host or device index arrays)."""
        return self.terms(images, context_idx, target_idx)["loss"]

    def terms(self, images, context_idx, target_idx):
        """{"loss": the total, "prediction": the JEPA loss, and with nonzero weights "variance"
        and "covariance" (unweighted)}: a Trainer step_fn may return this dict to log each."""
        device = self.context_encoder.device
        b = images.shape[0]
        n = self.context_encoder.num_patches
        context_idx = _indices("IJEPA context_idx", context_idx, b, 2, n, device)
        target_idx = _indices("IJEPA target_idx", target_idx, b, 3, n, device)
        targets = self.targets(images, target_idx)
        context = self.context_encoder(images, context_idx)                 # (B, Kc, D)
        predictions = self.predictor(context, context_idx, target_idx)      # (B, T, Kt, D)
        prediction = jepa_loss(predictions, targets, self.loss_name)
        if not (self.variance_weight or self.covariance_weight):
            return {"loss": prediction, "prediction": prediction}
        pooled = context.mean(axis=1)
        variance, covariance = variance_covariance(dist.all_gather(pooled) if self.distributed
                                                   else pooled)
        loss = prediction + self.variance_weight * variance + self.covariance_weight * covariance
        return {"loss": loss, "prediction": prediction, "variance": variance, "covariance": covariance}

    def update_target(self, momentum):
        """theta_target <- m * theta_target + (1 - m) * theta_context, in place (after a step)."""
        self._ema.update(momentum)

    def embed(self, images):
        """(B, D): the target encoder on whole images, average-pooled over patches."""
        return self.target_encoder(images).mean(axis=1)
