"""JEPA: predict the EMBEDDINGS of hidden patches from visible ones, not their pixels.

A masked autoencoder predicts the PIXELS of hidden patches, so its encoder must keep every detail
a pixel loss rewards (stroke thickness, noise, exact position). A joint-embedding predictive
architecture predicts the hidden patches' embeddings instead: the target is whatever the encoder
itself finds worth representing, so unpredictable detail can be dropped and the representation
is pushed towards what can be inferred from context (shape, layout). Two objectives here:

IJEPA -- I-JEPA as published (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture"; official code facebookresearch/ijepa, src/train.py).
Per image, a multi-block sampler (multiblock.py) picks T target blocks B_1..B_T of patches and a
context block C with every target patch removed. With f the context encoder (trained), f_bar
its EMA copy (the target encoder) and g a narrow ViT predictor:

    s_y      = LN(f_bar(x))          the target encoder on the WHOLE image, layer-normed over
                                     features (no affine); s_y(i) its tokens at the patches of B_i
    s_x      = f(x_C)                the context encoder on the context patches only
    s_hat(i) = g(s_x, pos(B_i))      context tokens + one mask token per patch of B_i, carrying
                                     that patch's position; g's outputs at the mask tokens
    L        = mean over images, blocks i, patches of B_i, features of
               smooth_l1(s_hat(i) - s_y(i))          (the released code; the paper writes L2)

f and g descend L (AdamW); f_bar gets no gradient and after each step follows f,
theta_bar <- m theta_bar + (1 - m) theta, with m rising linearly from 0.996 to 1 over the run.
Nothing in L forbids collapse (every image to one constant); the dynamics avoid it: the target
comes from a network that does not descend L and moves slowly, and the predictor (only one
branch has one) absorbs what the context cannot know, as in BYOL. At this library's small scale
(8x8 digits) they do not suffice -- the collapse lab (demos/collapse.py) shows it.

MaskedViewsJEPA -- what trains on small images (docs/jepa_study.md, run 2.G8): a predictor
between two masked views, guarded by LeJEPA (lejepa.py). Two augmentations x1, x2 of the image;
the context view keeps a random subset C of x1's patches, the target view another random subset
T of x2's. One encoder f for both (no EMA copy):

    h_T      = f(x2_T)                          the target view's tokens
    s_hat    = g(f(x1_C), pos(T))               the predictor fills in the target view
    predict  = mean smooth_l1(s_hat - sg(LN(h_T)))   sg: stop-gradient (the targets are constants)
    z_1, z_2 = proj(mean_tokens f(x1_C)), proj(mean_tokens h_T)     (one BatchNorm-MLP pass)
    L        = predict + (1 - lambda) * invariance(z_1, z_2) + lambda * SIGReg(z_1, z_2)

the last two terms being LeJEPA's loss between the two pooled, projected views (lambda 0.02):
SIGReg keeps the embeddings spread like N(0, I), so collapse costs; the stop-gradient keeps the
per-patch targets from collapsing onto their positions (study run 2.G1).

Both evaluate the pooled encoder on whole images (`embed`; I-JEPA's target encoder). The study's
variants (other guards, other masks and views) are built in objectives/jepa_study.py.
"""
from .. import backend, checks, ops
from ..engine import as_array, no_grad
from ..nn import init
from ..nn.layers import Linear
from ..nn.module import Module
from ..nn.norm import LayerNorm
from ..nn.transformer import TransformerBlock, check_heads, init_transformer_weights
from ..nn.vit import (VisionTransformer, check_sincos_dim, gather_tokens, get_2d_sincos_pos_embed,
                      patch_index_array)
from ..optim.ema import EMA
from .contrastive import projection_head
from .lejepa import lejepa_terms
from .masked_image import check_keep, random_masking
from .multiblock import MultiBlockMaskSampler
from .protocol import Objective
from .sigreg import NUM_DIRECTIONS


def jepa_loss(predictions, targets):
    """Mean over every target patch and feature of smooth L1 with beta 1 (the released code)."""
    if tuple(predictions.shape) != tuple(targets.shape):
        raise ValueError(f"jepa_loss: predictions {tuple(predictions.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    return ops.smooth_l1_loss(predictions, targets, beta=1.0)


def layer_normed(tokens):
    """The targets' normalisation: LN over features, no affine (F.layer_norm(h, (D,)) there)."""
    return ops.layer_norm(tokens, eps=1e-5)


def patch_indices(owner, idx, ndim, batch, num_patches, device):
    """User-given masks as an integer array on `device`, checked ONCE where they enter the
    objective (ndim 2: (B, K); 3: (B, T, K) blocks; values in [0, num_patches)) by the ViT's own
    patch_index_array; the objective's own masks are not checked at all."""
    data = backend.to_device(as_array(idx), device)
    if data.ndim != ndim:
        raise ValueError(f"{owner}: expected {'(B, K)' if ndim == 2 else '(B, T, K)'} patch "
                         f"indices, got shape {tuple(data.shape)}")
    if data.shape[-1] == 0:   # an empty context or target block: attention over nothing, 0/0
        raise ValueError(f"{owner}: needs at least one patch per block, got shape "
                         f"{tuple(data.shape)}")
    flat = data.reshape(data.shape[0], -1)
    return patch_index_array(owner, flat, backend.xp_for(device), batch, num_patches).reshape(data.shape)


class JEPAPredictor(Module):
    """The narrow transformer g (VisionTransformerPredictor in the released code).

    forward(context (B, Kc, D), context_idx (B, Kc), target_idx (B, T, Kt)) -> (B, T, Kt, D):
    the prediction of the target embedding of patch target_idx[b, i, j]. The T blocks run in
    ONE pass, as in the released code: each image's context is repeated once per block and each
    copy followed by that block's mask tokens, so the blocks never attend to each other.
    dim: the predictor's width (narrower than D); fixed 2-D sin-cos positions of that width.
    The indices are the objective's (checked where they enter it), not checked again here.
    """

    def __init__(self, grid_size, embed_dim, dim=None, depth=6, num_heads=4, mlp_ratio=4.0):
        checks.positive_int("JEPAPredictor", "embed_dim", embed_dim)
        dim = predictor_width(embed_dim, dim)
        checks.non_negative_int("JEPAPredictor", "depth", depth)   # 0: no blocks, a linear map
        check_heads("JEPAPredictor", dim, num_heads)
        check_sincos_dim("JEPAPredictor", "dim", dim)
        self.grid_size = checks.pair("JEPAPredictor", "grid_size", grid_size, minimum=1)
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
        b, kc, _ = context.shape
        _, t, kt = target_idx.shape
        if context.shape[-1] != self.embed_dim or context_idx.shape != (b, kc) or target_idx.shape[0] != b:
            raise ValueError(f"JEPAPredictor: context {tuple(context.shape)} (last axis "
                             f"{self.embed_dim}), context_idx {tuple(context_idx.shape)} and "
                             f"target_idx {tuple(target_idx.shape)} do not match")
        x = self.embed(context) + self.pos_embed[context_idx]                    # (B, Kc, P)
        # one copy of each image's context per target block, sample-major: row b * T + i
        x = x.reshape(b, 1, kc, self.dim).broadcast_to(b, t, kc, self.dim).reshape(b * t, kc, self.dim)
        queries = self.mask_token + self.pos_embed[target_idx.reshape(b * t, kt)]  # (B*T, Kt, P)
        x = ops.concatenate([x, queries], axis=1)
        for block in self.blocks:
            x = block(x)
        x = self.proj(self.norm(x)[:, kc:])
        return x.reshape(b, t, kt, self.embed_dim)


def predictor_width(embed_dim, dim=None):
    """The predictor's width: `dim`, by default half the encoder's."""
    return embed_dim // 2 if dim is None else dim


def build_predictor(owner, encoder, predictor_dim=None, predictor_depth=6, predictor_heads=None):
    """The JEPAPredictor an objective builds on `encoder` from its own arguments (defaults: half
    the encoder's width, the encoder's heads), each checked first under the objective's name
    and the argument's, as the objective was given it."""
    dim = predictor_width(encoder.dim, predictor_dim)
    heads = encoder.num_heads if predictor_heads is None else predictor_heads
    checks.non_negative_int(owner, "predictor_depth", predictor_depth)
    check_heads(owner, dim, heads, "predictor_dim", "predictor_heads")
    check_sincos_dim(owner, "predictor_dim", dim)
    return JEPAPredictor(encoder.grid_size, encoder.dim, dim, predictor_depth, heads)


def momentum_at(span, progress):
    """I-JEPA's EMA momentum schedule: linear from span[0] to span[1] as progress goes 0 -> 1."""
    start, end = span
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def _vit(owner, encoder):
    if not isinstance(encoder, VisionTransformer) or encoder.cls_token is not None:
        raise ValueError(f"{owner}: the encoder must be a VisionTransformer without a CLS token")
    return encoder


class IJEPA(Objective):
    """I-JEPA: context encoder, EMA target encoder and predictor (the module docstring's formula).

    jepa = IJEPA(VisionTransformer(...), predictor_dim=32, predictor_depth=2)
    opt = AdamW(jepa.param_groups(weight_decay=0.04), lr=1e-3)   # never the target encoder
    terms = jepa.loss(images)            # masks drawn by jepa.masks; {"loss": ...}
    terms["loss"].backward(); opt.step(); jepa.after_step(step / steps)   # the EMA moves

    masks: the sampler, batch_size -> (context (B, Kc), targets (B, T, Kt)) patch indices
        (default: MultiBlockMaskSampler with I-JEPA's settings on the encoder's grid).
    momentum: (start, end) of the EMA momentum, linear over the run (I-JEPA: 0.996 -> 1).
    transform: applied to each batch before its masks are drawn (a crop, the pixels'
        normalisation); default none.
    """

    def __init__(self, encoder, predictor_dim=None, predictor_depth=6, predictor_heads=None,
                 masks=None, momentum=(0.996, 1.0), transform=None):
        self.context_encoder = _vit("IJEPA", encoder)   # f, the one the optimizer trains
        self._ema = EMA(encoder)             # a frozen deep copy: no gradient, not optimised
        self.target_encoder = self._ema.target
        self.predictor = build_predictor("IJEPA", encoder, predictor_dim, predictor_depth, predictor_heads)
        if masks is not None and not callable(masks):
            raise ValueError(f"IJEPA: masks must be a sampler, batch_size -> (context, targets), "
                             f"got {masks!r}")
        self.masks = masks or MultiBlockMaskSampler(encoder.grid_size)
        self.momentum = checks.span("IJEPA", "momentum", momentum, high=1.0)
        checks.callable_or_none("IJEPA", "transform", transform)
        self.transform = transform

    def loss(self, images, masks=None):
        """{"loss"} for a batch; masks=(context (B, Kc), targets (B, T, Kt)) fixes the masks."""
        images = self.transform(images) if self.transform else images
        b, n, device = images.shape[0], self.encoder.num_patches, self.encoder.device
        if masks is None:
            context_idx, target_idx = (backend.to_device(m, device) for m in self.masks(b))
        else:
            context_idx = patch_indices("IJEPA context_idx", masks[0], 2, b, n, device)
            target_idx = patch_indices("IJEPA target_idx", masks[1], 3, b, n, device)
        _, t, kt = target_idx.shape
        with no_grad():                                                        # s_y: constants
            s_y = gather_tokens(layer_normed(self.target_encoder(images)), target_idx.reshape(b, t * kt))
        s_x = self.context_encoder(images, context_idx)                        # (B, Kc, D)
        s_hat = self.predictor(s_x, context_idx, target_idx)                   # (B, T, Kt, D)
        return {"loss": jepa_loss(s_hat, s_y.reshape(b, t, kt, -1))}

    @property
    def encoder(self):
        return self.context_encoder

    def update_target(self, momentum):
        """theta_bar <- m theta_bar + (1 - m) theta, in place."""
        self._ema.update(momentum)

    def after_step(self, progress):
        """The EMA step, its momentum `progress` of the way from start to end."""
        self.update_target(momentum_at(self.momentum, progress))

    def embed(self, images):
        """(B, D): the TARGET encoder on whole images, average-pooled over patches."""
        return self.target_encoder(images).mean(axis=1)

    def embed_module(self):
        return self.target_encoder


class MaskedViewsJEPA(Objective):
    """A predictor between two masked views, LeJEPA between them as the guard (module docstring).

    jepa = MaskedViewsJEPA(VisionTransformer(...), augment=lambda x: normalise(augment(x)))
    opt = AdamW(jepa.param_groups(weight_decay=0.04), lr=2e-3)
    terms = jepa.loss(images)   # {"loss", "prediction", "invariance", "sigreg"}

    augment: images -> one view (called twice per batch); default: the images as they are.
    keep: the share of patches each view keeps. lam: LeJEPA's lambda. proj_dim, hidden: the
    BatchNorm-MLP projector's output and hidden widths. distributed: SIGReg over every
    process's batch (minienc.distributed; the projector's batch norm: nn.SyncBatchNorm.convert).
    """

    def __init__(self, encoder, predictor_dim=None, predictor_depth=4, predictor_heads=None,
                 augment=None, keep=0.5, lam=0.02, proj_dim=32, hidden=256,
                 num_directions=NUM_DIRECTIONS, distributed=False):
        self.encoder = _vit("MaskedViewsJEPA", encoder)
        self.predictor = build_predictor("MaskedViewsJEPA", encoder, predictor_dim, predictor_depth, predictor_heads)
        checks.positive_int("MaskedViewsJEPA", "proj_dim", proj_dim)
        checks.positive_int("MaskedViewsJEPA", "hidden", hidden)
        self.projector = projection_head(encoder.dim, hidden, proj_dim, num_layers=3)
        check_keep("MaskedViewsJEPA", "keep", keep, encoder.num_patches)
        checks.in_range("MaskedViewsJEPA", "lam", lam, 0.0, 1.0)
        checks.positive_int("MaskedViewsJEPA", "num_directions", num_directions)
        checks.callable_or_none("MaskedViewsJEPA", "augment", augment)
        self.augment, self.keep, self.lam = augment, keep, lam
        self.num_directions, self.distributed = num_directions, distributed

    def loss(self, images, masks=None, directions=None):
        """masks=(context (B, Kc), target (B, Kt)) fixes the views' patches; directions (K, M)
        SIGReg's (else drawn)."""
        augment = self.augment or (lambda x: x)
        target_view, context_view = augment(images), augment(images)
        b, n, device = images.shape[0], self.encoder.num_patches, self.encoder.device
        if masks is None:
            context_idx, target_idx = (random_masking(b, n, 1.0 - self.keep, device=device)[0]
                                       for _ in range(2))
        else:
            context_idx = patch_indices("MaskedViewsJEPA context_idx", masks[0], 2, b, n, device)
            target_idx = patch_indices("MaskedViewsJEPA target_idx", masks[1], 2, b, n, device)
        h_t = self.encoder(target_view, target_idx)                        # (B, Kt, D)
        h_c = self.encoder(context_view, context_idx)                      # (B, Kc, D)
        s_hat = self.predictor(h_c, context_idx, target_idx[:, None, :])   # (B, 1, Kt, D)
        prediction = jepa_loss(s_hat, layer_normed(h_t.detach())[:, None])
        z = self.projector(ops.concatenate([h_c.mean(axis=1), h_t.mean(axis=1)], axis=0))
        lejepa = lejepa_terms(z.reshape(2, b, -1), lam=self.lam, directions=directions,
                              num_directions=self.num_directions, distributed=self.distributed)
        return {"loss": prediction + lejepa["loss"], "prediction": prediction,
                "invariance": lejepa["prediction"], "sigreg": lejepa["sigreg"]}

    def embed(self, images):
        """(B, D): the encoder on whole images, average-pooled over patches."""
        return self.encoder(images).mean(axis=1)
