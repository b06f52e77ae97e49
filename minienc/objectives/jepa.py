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
from .. import backend, checks, ops
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
from .contrastive import projection_head
from .lejepa import lejepa_terms
from .sigreg import shared_directions, sigreg
from .vicreg import variance_covariance  # the one implementation, shared with VICReg

LOSSES = ("smooth_l1", "l2")
TARGET_NORMS = ("layer", "layer+batch", None)
TARGET_ENCODERS = ("ema", "shared")
SIGREG_INPUTS = ("context", "target", "tokens", "projection", "views")
TARGET_VIEWS = ("image", "targets")
PREDICTION_LEVELS = ("tokens", "image")


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
        self.grid_size = checks.pair("JEPAPredictor", "grid_size", grid_size, minimum=1)
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


# The guards against collapse that docs/jepa_study.md found best at small scale (run 2.G8), the
# default of demos/jepa.py, the collapse lab and the keep demo: IJEPA(vit, **LEJEPA_VIEWS).
LEJEPA_VIEWS = dict(
    target_encoder="shared",   # no EMA copy: the encoder is its own target...
    stop_gradient=True,        # ...but the predictor's targets are constants (without: the
                               # per-patch targets collapse onto position, run 2.G1)
    sigreg_on="views",         # LeJEPA between the two views, pooled and projected, keeps the
    sigreg_weight=0.02,        # embeddings spread (lambda, the authors' 0.02)
    sigreg_proj_dim=32,        # through its BatchNorm-MLP projector (256 -> 32)
    target_sees="targets",     # the target pass sees only the target view's patches
)


class IJEPA(Module):
    """Context encoder + target encoder + predictor, and the loss between them.

    jepa = IJEPA(VisionTransformer(...), predictor_dim=32, predictor_depth=2)
    opt = AdamW(jepa.param_groups(weight_decay=0.04), lr=1e-3)   # never the target encoder
    loss = jepa(images, context_idx, target_idx)                  # indices from the sampler
    loss.backward(); opt.step(); jepa.update_target(momentum)

    target_norm: "layer" (the released code): layer-norm the target encoder's output over
    features, no affine, before gathering; "layer+batch": then also standardise every
    (patch position, feature) over the batch's images (NOT in I-JEPA; see `targets`); None:
    the raw outputs. loss: "smooth_l1" (code) or "l2" (paper). variance_weight,
    covariance_weight: the VICReg terms on the pooled context embeddings (module docstring;
    0 = I-JEPA as released). distributed: the batch statistics over every process's batch
    (SIGReg's along rank 0's directions; for the projector's batch norm, nn.SyncBatchNorm).

    The guards against collapse, each a switch (the module docstring's last section; 
    demos/collapse.py removes them one at a time):
    target_encoder: "ema" (I-JEPA: a frozen EMA copy) or "shared" (the context encoder itself).
    stop_gradient: with a shared encoder, whether the targets are constants (True) or carry
        a gradient into the encoder (False). An EMA target never gets one.
    predictor_depth=0: no predictor; the pooled context embedding predicts the pooled targets
        (with sigreg_on="views": no prediction term at all, LeJEPA between the views alone).
    sigreg_weight, sigreg_on: SIGReg (objectives/sigreg.py) on "context" (the context
        encoder's tokens pooled per image), "target" (the pooled embeddings of the target
        pass, the representation evaluated; needs a shared encoder), or "tokens" (every
        context token, not pooled); sigreg_proj_dim > 0 puts LeJEPA's BatchNorm-MLP projector
        (width sigreg_hidden) between them and SIGReg. prediction_level "image": each image's
        predictions and targets are pooled over its target patches before the loss (and the
        projector), so the position of a patch is no longer part of what is predicted.
        target_sees: "image" (I-JEPA: the target encoder sees
        the whole image) or "targets" (only the target patches: a second masked view).
    """

    def __init__(self, encoder, predictor_dim=None, predictor_depth=6, predictor_heads=None,
                 loss="smooth_l1", target_norm="layer", variance_weight=0.0, covariance_weight=0.0,
                 target_encoder="ema", stop_gradient=True, sigreg_weight=0.0, sigreg_on="context",
                 target_sees="image", sigreg_proj_dim=0, sigreg_hidden=256, num_directions=256,
                 prediction_level="tokens", distributed=False):
        if not isinstance(encoder, VisionTransformer) or encoder.cls_token is not None:
            raise ValueError("IJEPA: the encoder must be a VisionTransformer without a CLS token")
        for name, value, choices in (("target_norm", target_norm, TARGET_NORMS), ("loss", loss, LOSSES),
                                     ("target_encoder", target_encoder, TARGET_ENCODERS),
                                     ("sigreg_on", sigreg_on, SIGREG_INPUTS),
                                     ("target_sees", target_sees, TARGET_VIEWS),
                                     ("prediction_level", prediction_level, PREDICTION_LEVELS)):
            checks.one_of("IJEPA", name, value, choices)
        if target_encoder == "ema" and not stop_gradient:
            raise ValueError("IJEPA: an EMA target encoder never gets a gradient; stop_gradient=False "
                             "needs target_encoder='shared'")
        if sigreg_weight and sigreg_on == "target" and (target_encoder == "ema"):
            raise ValueError("IJEPA: SIGReg on the target pass needs target_encoder='shared' (an EMA "
                             "target gets no gradient)")
        self.context_encoder = encoder
        self.shared = target_encoder == "shared"
        if self.shared:
            self._ema = None
            self.target_encoder = encoder   # the same module: listed once among the parameters
        else:
            self._ema = EMA(encoder)   # a deep copy, frozen: no gradient, never in the optimizer
            self.target_encoder = self._ema.target
        self.predictor = JEPAPredictor(encoder.grid_size, encoder.dim, predictor_dim, predictor_depth,
                                       predictor_heads or encoder.num_heads) if predictor_depth else None
        self.loss_name, self.target_norm = loss, target_norm
        self.variance_weight, self.covariance_weight = float(variance_weight), float(covariance_weight)
        self.stop_gradient, self.target_sees = bool(stop_gradient), target_sees
        self.sigreg_weight, self.sigreg_on = float(sigreg_weight), sigreg_on
        self.num_directions = int(num_directions)
        self.prediction_level = prediction_level
        self.distributed = distributed
        # LeJEPA's BatchNorm-MLP projector between the embeddings and SIGReg (0: none)
        self.projector = projection_head(encoder.dim, sigreg_hidden, sigreg_proj_dim, num_layers=3) \
            if sigreg_weight and sigreg_proj_dim else None
        self.projector_dim = sigreg_proj_dim
        if sigreg_weight and sigreg_on in ("projection", "views") and not sigreg_proj_dim:
            raise ValueError(f"IJEPA: sigreg_on={sigreg_on!r} needs a projector (sigreg_proj_dim > 0)")
        if sigreg_weight and sigreg_on == "views" and not self.shared:
            # (stop_gradient then applies to the predictor's targets alone)
            raise ValueError("IJEPA: sigreg_on='views' trains both views: it needs "
                             "target_encoder='shared'")

    def param_groups(self, weight_decay):
        """AdamW groups of the TRAINED parts (context encoder, predictor, projector): weights with
        `weight_decay`, biases and norm parameters without, as I-JEPA's init_opt."""
        trained = [m for m in (self.context_encoder, self.predictor, self.projector) if m is not None]
        return param_groups_without_decay(trained, weight_decay)

    def _target_tokens(self, images, target_idx):
        """The target pass: (B, N, D) tokens of the whole image, or (B, T*Kt, D) of the target
        patches alone (target_sees="targets")."""
        b, t, kt = target_idx.shape
        if self.target_sees == "targets":
            return self.target_encoder(images, target_idx.reshape(b, t * kt))
        return self.target_encoder(images)

    def _normalise(self, h):
        if self.target_norm is not None:
            h = ops.layer_norm(h, eps=1e-5)  # F.layer_norm(h, (D,)) in the released code
        if self.target_norm == "layer+batch":
            # On small images the fixed position embeddings dominate every token, so most of
            # a target is predictable from its position alone and the encoder lowers the
            # loss by shrinking what varies between images. Standardising each position's
            # feature over the batch leaves only that variation, at unit scale.
            if self.distributed and not h.requires_grad:
                # constants (an EMA or stop-gradient target): the global mean and variance by two
                # all-reduces of (1, N, D), not the whole batch's tokens gathered
                mean = dist.batch_mean(h)
                std = backend.get_xp(mean).sqrt(dist.batch_mean((h - mean) ** 2) + 1e-5)
                return (h - mean) / std
            batch = dist.all_gather(h) if self.distributed else h
            h = (h - batch.mean(axis=0, keepdims=True)) / (batch.var(axis=0, keepdims=True) + 1e-5).sqrt()
        return h

    def _gather(self, h, target_idx):
        b, t, kt = target_idx.shape
        if self.target_sees == "image":
            h = gather_tokens(h, target_idx.reshape(b, t * kt))
        return h.reshape(b, t, kt, h.shape[-1])

    def targets(self, images, target_idx):
        """(B, T, Kt, D): the target encoder's (layer-normed) embeddings of the target patches;
        no graph, so no gradient can reach the target encoder."""
        with no_grad():
            return self._gather(self._normalise(self._target_tokens(images, target_idx)), target_idx)

    def forward(self, images, context_idx, target_idx, target_images=None):
        """The scalar loss for one batch and its masks (host or device index arrays)."""
        return self.terms(images, context_idx, target_idx, target_images)["loss"]

    def terms(self, images, context_idx, target_idx, target_images=None, directions=None):
        """{"loss": the total, "prediction": the JEPA loss, and with nonzero weights "variance"
        and "covariance" (unweighted) and "sigreg"}: a Trainer step_fn may return this dict to
        log each. target_images: what the target pass sees (default: the same images; another
        augmentation of them for augmented views). directions: SIGReg's, fixed (else drawn)."""
        device = self.context_encoder.device
        b = images.shape[0]
        n = self.context_encoder.num_patches
        context_idx = _indices("IJEPA context_idx", context_idx, b, 2, n, device)
        target_idx = _indices("IJEPA target_idx", target_idx, b, 3, n, device)
        target_images = images if target_images is None else target_images
        pooled_target = None
        if self.shared and (not self.stop_gradient or (self.sigreg_weight and self.sigreg_on in ("target", "views"))):
            h = self._target_tokens(target_images, target_idx)               # with a graph
            pooled_target = h.mean(axis=1)
            h = h.detach() if self.stop_gradient else h
            targets = self._gather(self._normalise(h), target_idx)
        else:
            targets = self.targets(target_images, target_idx)
        context = self.context_encoder(images, context_idx)                 # (B, Kc, D)
        views_only = self.predictor is None and self.sigreg_weight and self.sigreg_on == "views"
        if self.predictor is not None:
            predictions = self.predictor(context, context_idx, target_idx)  # (B, T, Kt, D)
            if self.prediction_level == "image":   # each image's predictions and targets pooled
                predictions, targets = predictions.mean(axis=(1, 2)), targets.mean(axis=(1, 2))
        else:   # no predictor: the pooled context must match the pooled targets
            predictions, targets = context.mean(axis=1), targets.mean(axis=(1, 2))
        out = {}
        if self.sigreg_weight and self.distributed and directions is None:
            # every process tests the gathered batch along rank 0's directions
            directions = shared_directions(self.projector_dim if self.projector is not None
                                           else context.shape[-1], self.num_directions, device,
                                           context.dtype)
        if views_only:   # no predictor beside LeJEPA's views: LeJEPA between the two views alone
            loss = 0.0
        elif self.sigreg_weight and self.sigreg_on == "projection":
            prediction, out["sigreg"] = self._in_projection(predictions, targets, directions)
            loss = prediction + self.sigreg_weight * out["sigreg"]
            out["prediction"] = prediction
        else:
            out["prediction"] = loss = jepa_loss(predictions, targets, self.loss_name)
        if self.variance_weight or self.covariance_weight:
            out["variance"], out["covariance"] = variance_covariance(self._batch(context.mean(axis=1)))
            loss = loss + self.variance_weight * out["variance"] + self.covariance_weight * out["covariance"]
        if self.sigreg_weight and self.sigreg_on == "views":
            # LeJEPA's loss between the two views, pooled and projected: the context view and
            # the target pass; beside it the predictor's own loss (I-JEPA's) as it is
            views = self.projector(ops.concatenate([context.mean(axis=1), pooled_target], axis=0))
            # (lejepa_terms gathers the batch for SIGReg itself; the invariance stays per process)
            lejepa = lejepa_terms(views.reshape(2, b, self.projector_dim), lam=self.sigreg_weight,
                                  directions=directions, num_directions=self.num_directions,
                                  distributed=self.distributed)
            out["invariance"], out["sigreg"] = lejepa["prediction"], lejepa["sigreg"]
            loss = loss + lejepa["loss"]
        if self.sigreg_weight and self.sigreg_on not in ("projection", "views"):
            z = {"context": lambda: context.mean(axis=1), "target": lambda: pooled_target,
                 "tokens": lambda: context.reshape(-1, context.shape[-1])}[self.sigreg_on]()
            z = self.projector(z) if self.projector is not None else z
            out["sigreg"] = sigreg(self._batch(z), directions, self.num_directions)
            loss = loss + self.sigreg_weight * out["sigreg"]
        out["loss"] = loss
        return out

    def _in_projection(self, predictions, targets, directions):
        """LeJEPA's structure with a predictor: predictions and targets (B, ..., D) through ONE
        projector pass (its BatchNorm sees both), the loss between them there, and SIGReg on
        each image's projections pooled -- the predictions', and the targets' when they carry
        a gradient -- so the term that spreads the embeddings acts where the prediction is
        measured (through a projector of its own, the projector alone would be spread)."""
        b, d = predictions.shape[0], predictions.shape[-1]
        flat = ops.concatenate([predictions.reshape(-1, d), targets.reshape(-1, d)], axis=0)
        z = self.projector(flat).reshape(2, b, -1, self.projector_dim)      # (2, B, tokens or 1, K)
        predicted, target = z[0], z[1]
        if self.stop_gradient:
            target = target.detach()
        prediction = jepa_loss(predicted, target, self.loss_name)
        pooled = z.mean(axis=2)                                             # (2, B, K)
        pooled = pooled if not self.stop_gradient else pooled[:1]
        return prediction, sigreg(self._views(pooled), directions, self.num_directions)

    def _views(self, z):
        """z (V, B, K), or with distributed=True every process's samples gathered, view by view."""
        return dist.all_gather(z.transpose(1, 0, 2)).transpose(1, 0, 2) if self.distributed else z

    def _batch(self, z):
        """z, or with distributed=True every process's z gathered (with a gradient)."""
        return dist.all_gather(z) if self.distributed else z

    def update_target(self, momentum):
        """theta_target <- m * theta_target + (1 - m) * theta_context, in place (after a step);
        nothing with a shared encoder (it is its own target)."""
        if self._ema is not None:
            self._ema.update(momentum)

    def embed(self, images):
        """(B, D): the target encoder on whole images, average-pooled over patches."""
        return self.target_encoder(images).mean(axis=1)
