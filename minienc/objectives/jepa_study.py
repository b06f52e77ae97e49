"""The JEPA study's bench: every variant docs/jepa_study.md and the collapse lab (demos/collapse.py)
train, assembled from the parts of jepa.py, lejepa.py, sigreg.py and vicreg.py. It is a lab,
not a method: IJEPA and MaskedViewsJEPA (jepa.py) are the two that read as their formulas; this
file keeps every guard against collapse as a setting so that each can be removed in turn.

A StudyJEPA is composed of
    masks(batch) -> (context (B, Kc), targets (B, T, Kt))   multi-block blocks (multiblock.py),
                                                            two random halves, or a random half
                                                            and the whole grid (`halves`, `whole`)
    views(images) -> (context images, target images or None)  the same image, a crop, or two
                                                            augmentations (`image_views`,
                                                            `augmented_views`)
a target pass ("ema": I-JEPA's EMA copy; "shared": the context encoder itself, behind a
stop-gradient or not), a predictor (or none: the pooled context predicts the pooled targets),
and the guards the study tried, each a term added to the prediction loss:

    variance_weight, covariance_weight   VICReg's hinge on each pooled feature's std and its
                                         off-diagonal covariance (C-JEPA), on the pooled context
    sigreg_weight, sigreg_on             SIGReg on "context" / "target" / "tokens" (optionally
                                         through a BatchNorm-MLP projector, sigreg_proj_dim);
                                         "projection": the prediction itself measured in the
                                         projector's space; "views": LeJEPA's loss between the
                                         two pooled, projected views (MaskedViewsJEPA's guard)
    target_norm "layer+batch"            targets also standardised per position over the batch

StudyJEPA(encoder, **IJEPA_SETTINGS) with multi-block masks is IJEPA; with DEFAULT_SETTINGS,
`halves` masks and `augmented_views` it is MaskedViewsJEPA (tests/test_jepa_study.py checks both
loss for loss). VARIANTS and `collapse_variant` build the collapse lab's twelve rows.
"""
from .. import backend, checks, ops
from .. import distributed as dist
from ..engine import no_grad
from ..nn.vit import gather_tokens
from ..optim.ema import EMA
from .contrastive import projection_head
from .jepa import IJEPA, _vit, build_predictor, layer_normed, patch_indices
from .lejepa import LeJEPA, lejepa_terms
from .masked_image import check_keep, random_masking
from .multiblock import MultiBlockMaskSampler
from .protocol import Objective
from .sigreg import shared_directions, sigreg
from .vicreg import variance_covariance  # the one implementation, shared with VICReg

LOSSES = ("smooth_l1", "l2")
TARGET_NORMS = ("layer", "layer+batch", None)
TARGET_ENCODERS = ("ema", "shared")
SIGREG_INPUTS = ("context", "target", "tokens", "projection", "views")
TARGET_VIEWS = ("image", "targets")
PREDICTION_LEVELS = ("tokens", "image")

# I-JEPA's own guards: an EMA target on the whole image, its stop-gradient, the predictor
IJEPA_SETTINGS = dict(target_encoder="ema", stop_gradient=True, target_sees="image")
# The guards the predictor study found best at small scale (docs/jepa_study.md, run 2.G8):
DEFAULT_SETTINGS = dict(
    target_encoder="shared",   # no EMA copy: the encoder is its own target...
    stop_gradient=True,        # ...but the predictor's targets are constants (without: the
                               # per-patch targets collapse onto position, run 2.G1)
    sigreg_on="views",         # LeJEPA between the two views, pooled and projected, keeps the
    sigreg_weight=0.02,        # embeddings spread (lambda, the authors' 0.02)
    sigreg_proj_dim=32,        # through its BatchNorm-MLP projector (256 -> 32)
    target_sees="targets",     # the target pass sees only the target view's patches
)


# ----- the parts: masks and views ---------------------------------------------------------------

def halves(num_patches, keep=0.5):
    """masks(batch): a random `keep` of the patches as context, another (independent) random
    `keep` as the one target block (host arrays)."""
    check_keep("halves", "keep", keep, num_patches)

    def masks(batch):
        context = random_masking(batch, num_patches, 1 - keep, device="cpu")[0]
        return context, random_masking(batch, num_patches, 1 - keep, device="cpu")[0][:, None, :]
    return masks


def whole(num_patches, keep=0.5):
    """masks(batch): a random `keep` of the patches as context, the whole grid as target."""
    check_keep("whole", "keep", keep, num_patches)

    def masks(batch):
        np = backend.numpy
        context = random_masking(batch, num_patches, 1 - keep, device="cpu")[0]
        return context, np.broadcast_to(np.arange(num_patches), (batch, 1, num_patches))
    return masks


def image_views(normalise=None, crop=None):
    """views(images): the (cropped, normalised) images for both passes."""
    checks.callable_or_none("image_views", "normalise", normalise)
    checks.callable_or_none("image_views", "crop", crop)

    def views(images):
        images = crop(images) if crop is not None else images
        return (normalise(images) if normalise else images), None
    return views


def augmented_views(augment, normalise=None, first="target"):
    """views(images): two augmentations. first: which is drawn first ("target": demos/jepa.py
    and docs/jepa_study.md's runs; "context": the collapse lab's), so their numbers reproduce."""
    checks.callable_or_none("augmented_views", "augment", augment)
    checks.callable_or_none("augmented_views", "normalise", normalise)
    checks.one_of("augmented_views", "first", first, ("target", "context"))
    normalise = normalise or (lambda x: x)

    def views(images):
        if first == "context":
            context = augment(images)
            return normalise(context), normalise(augment(images))
        target = normalise(augment(images))
        return normalise(augment(images)), target
    return views


# ----- the bench --------------------------------------------------------------------------------

class StudyJEPA(Objective):
    """A JEPA with every studied guard as a setting (the module docstring).

    masks, views: the parts above (views default: the image as it is; without masks only
        `terms`, which takes them, can be called).
    predictor_depth=0: no predictor; the pooled context predicts the pooled targets (with
        sigreg_on="views": no prediction term, LeJEPA between the views alone).
    target_encoder "ema" | "shared"; stop_gradient: with "shared", whether the targets are
        constants; target_sees "image" | "targets" (only the target patches: a second view).
    loss "smooth_l1" | "l2"; target_norm "layer" | "layer+batch" | None; prediction_level
        "tokens" | "image" (predictions and targets pooled per image before the loss).
    variance_weight, covariance_weight, sigreg_weight, sigreg_on, sigreg_proj_dim,
        sigreg_hidden, num_directions: the guards (module docstring).
    momentum: (start, end) of the EMA momentum over the run (after_step).
    distributed: the batch statistics over every process's batch (SIGReg's along rank 0's
        directions; the projector's batch norm: nn.SyncBatchNorm.convert).
    """

    def __init__(self, encoder, predictor_dim=None, predictor_depth=6, predictor_heads=None,
                 masks=None, views=None, loss="smooth_l1", target_norm="layer",
                 variance_weight=0.0, covariance_weight=0.0, target_encoder="ema",
                 stop_gradient=True, sigreg_weight=0.0, sigreg_on="context", target_sees="image",
                 sigreg_proj_dim=0, sigreg_hidden=256, num_directions=256,
                 prediction_level="tokens", momentum=(0.996, 1.0), distributed=False):
        encoder = _vit("StudyJEPA", encoder)
        for name, value, choices in (("target_norm", target_norm, TARGET_NORMS), ("loss", loss, LOSSES),
                                     ("target_encoder", target_encoder, TARGET_ENCODERS),
                                     ("sigreg_on", sigreg_on, SIGREG_INPUTS),
                                     ("target_sees", target_sees, TARGET_VIEWS),
                                     ("prediction_level", prediction_level, PREDICTION_LEVELS)):
            checks.one_of("StudyJEPA", name, value, choices)
        for name, value in (("variance_weight", variance_weight),
                            ("covariance_weight", covariance_weight), ("sigreg_weight", sigreg_weight)):
            checks.non_negative("StudyJEPA", name, value)
        checks.non_negative_int("StudyJEPA", "sigreg_proj_dim", sigreg_proj_dim)
        checks.positive_int("StudyJEPA", "sigreg_hidden", sigreg_hidden)
        checks.positive_int("StudyJEPA", "num_directions", num_directions)
        checks.non_negative_int("StudyJEPA", "predictor_depth", predictor_depth)   # 0: none
        checks.callable_or_none("StudyJEPA", "masks", masks)
        checks.callable_or_none("StudyJEPA", "views", views)
        if target_encoder == "ema" and not stop_gradient:
            raise ValueError("StudyJEPA: an EMA target encoder never gets a gradient; "
                             "stop_gradient=False needs target_encoder='shared'")
        if sigreg_weight and sigreg_on == "target" and target_encoder == "ema":
            raise ValueError("StudyJEPA: SIGReg on the target pass needs target_encoder='shared' "
                             "(an EMA target gets no gradient)")
        if sigreg_weight and sigreg_on in ("projection", "views") and not sigreg_proj_dim:
            raise ValueError(f"StudyJEPA: sigreg_on={sigreg_on!r} needs a projector (sigreg_proj_dim > 0)")
        if sigreg_weight and sigreg_on == "views" and target_encoder != "shared":
            raise ValueError("StudyJEPA: sigreg_on='views' trains both views: it needs "
                             "target_encoder='shared'")
        self.context_encoder = encoder
        self.shared = target_encoder == "shared"
        self._ema = None if self.shared else EMA(encoder)   # a frozen deep copy
        self.target_encoder = encoder if self.shared else self._ema.target
        self.predictor = build_predictor("StudyJEPA", encoder, predictor_dim, predictor_depth,
                                         predictor_heads) if predictor_depth else None
        self.projector = projection_head(encoder.dim, sigreg_hidden, sigreg_proj_dim, num_layers=3) \
            if sigreg_weight and sigreg_proj_dim else None
        self.masks, self.views = masks, views or image_views()
        self.loss_name, self.target_norm = loss, target_norm
        self.variance_weight, self.covariance_weight = float(variance_weight), float(covariance_weight)
        self.stop_gradient, self.target_sees = bool(stop_gradient), target_sees
        self.sigreg_weight, self.sigreg_on = float(sigreg_weight), sigreg_on
        self.projector_dim, self.num_directions = sigreg_proj_dim, int(num_directions)
        self.prediction_level, self.distributed = prediction_level, distributed
        self.momentum = checks.span("StudyJEPA", "momentum", momentum, high=1.0)

    @property
    def encoder(self):
        return self.context_encoder

    # ----- the protocol -----
    def loss(self, images):
        """The views and masks of this batch, then `terms`."""
        if self.masks is None:
            raise ValueError("StudyJEPA: loss(images) draws its masks with `masks` (none given: "
                             "pass a MultiBlockMaskSampler, halves(...) or whole(...), or call terms)")
        images, target_images = self.views(images)
        context_idx, target_idx = self.masks(images.shape[0])
        return self.terms(images, context_idx, target_idx, target_images)

    def update_target(self, momentum):
        """theta_bar <- m theta_bar + (1 - m) theta (nothing with a shared encoder)."""
        if self._ema is not None:
            self._ema.update(momentum)

    # as I-JEPA's: the EMA step on its linear schedule, and the target encoder, pooled, embeds
    after_step, embed, embed_module = IJEPA.after_step, IJEPA.embed, IJEPA.embed_module

    # ----- the terms -----
    def terms(self, images, context_idx, target_idx, target_images=None, directions=None):
        """{"loss", "prediction", and per guard "variance", "covariance", "invariance", "sigreg"}
        for given masks (checked here, once). target_images: what the target pass sees (default
        the same images). directions: SIGReg's, fixed (else drawn)."""
        b, n, device = images.shape[0], self.encoder.num_patches, self.encoder.device
        context_idx = patch_indices("StudyJEPA context_idx", context_idx, 2, b, n, device)
        target_idx = patch_indices("StudyJEPA target_idx", target_idx, 3, b, n, device)
        target_images = images if target_images is None else target_images
        pooled_target = None
        if self.shared and (not self.stop_gradient or (self.sigreg_weight and self.sigreg_on in ("target", "views"))):
            h = self._target_tokens(target_images, target_idx)               # with a graph
            pooled_target = h.mean(axis=1)
            h = h.detach() if self.stop_gradient else h
            targets = self._gather(self._normalise(h), target_idx)
        else:
            targets = self.targets(target_images, target_idx)
        context = self.encoder(images, context_idx)                         # (B, Kc, D)
        views_only = self.predictor is None and self.sigreg_weight and self.sigreg_on == "views"
        if self.predictor is not None:
            predictions = self.predictor(context, context_idx, target_idx)  # (B, T, Kt, D)
            if self.prediction_level == "image":
                predictions, targets = predictions.mean(axis=(1, 2)), targets.mean(axis=(1, 2))
        else:   # no predictor: the pooled context must match the pooled targets
            predictions, targets = context.mean(axis=1), targets.mean(axis=(1, 2))
        out = {}
        if self.sigreg_weight and self.distributed and directions is None:
            # every process tests the gathered batch along rank 0's directions
            directions = shared_directions(self.projector_dim if self.projector is not None
                                           else context.shape[-1], self.num_directions, device,
                                           context.dtype)
        if views_only:
            loss = 0.0
        elif self.sigreg_weight and self.sigreg_on == "projection":
            prediction, out["sigreg"] = self._in_projection(predictions, targets, directions)
            loss = prediction + self.sigreg_weight * out["sigreg"]
            out["prediction"] = prediction
        else:
            out["prediction"] = loss = self._distance(predictions, targets)
        if self.variance_weight or self.covariance_weight:
            out["variance"], out["covariance"] = variance_covariance(self._batch(context.mean(axis=1)))
            loss = loss + self.variance_weight * out["variance"] + self.covariance_weight * out["covariance"]
        if self.sigreg_weight and self.sigreg_on == "views":
            # LeJEPA's loss between the two pooled, projected views, beside the predictor's
            views = self.projector(ops.concatenate([context.mean(axis=1), pooled_target], axis=0))
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

    def targets(self, images, target_idx):
        """(B, T, Kt, D): the target pass's (normalised) embeddings of the target patches, as
        constants."""
        with no_grad():
            return self._gather(self._normalise(self._target_tokens(images, target_idx)), target_idx)

    def _distance(self, predictions, targets):
        if self.loss_name == "l2":
            return ops.mse_loss(predictions, targets)
        return ops.smooth_l1_loss(predictions, targets, beta=1.0)

    def _target_tokens(self, images, target_idx):
        """(B, N, D) tokens of the whole image, or (B, T*Kt, D) of the target patches alone."""
        b, t, kt = target_idx.shape
        if self.target_sees == "targets":
            return self.target_encoder(images, target_idx.reshape(b, t * kt))
        return self.target_encoder(images)

    def _normalise(self, h):
        if self.target_norm is not None:
            h = layer_normed(h)
        if self.target_norm == "layer+batch":
            # on small images the position embeddings dominate every token: standardising each
            # position's feature over the batch leaves only what varies between images
            if self.distributed and not h.requires_grad:
                # constants: the global mean and variance by two all-reduces of (1, N, D)
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

    def _in_projection(self, predictions, targets, directions):
        """Predictions and targets through ONE projector pass, the loss between them there, and
        SIGReg on each image's projections pooled (the predictions', and the targets' when they
        carry a gradient)."""
        b, d = predictions.shape[0], predictions.shape[-1]
        flat = ops.concatenate([predictions.reshape(-1, d), targets.reshape(-1, d)], axis=0)
        z = self.projector(flat).reshape(2, b, -1, self.projector_dim)      # (2, B, tokens or 1, K)
        predicted, target = z[0], z[1]
        if self.stop_gradient:
            target = target.detach()
        prediction = self._distance(predicted, target)
        pooled = z.mean(axis=2)                                             # (2, B, K)
        pooled = pooled if not self.stop_gradient else pooled[:1]
        return prediction, sigreg(self._views(pooled), directions, self.num_directions)

    def _views(self, z):
        """z (V, B, K), or with distributed=True every process's samples gathered, view by view."""
        return dist.all_gather(z.transpose(1, 0, 2)).transpose(1, 0, 2) if self.distributed else z

    def _batch(self, z):
        return dist.all_gather(z) if self.distributed else z


# ----- the collapse lab (demos/collapse.py) ------------------------------------------------------

# every "jepa" variant is the default (DEFAULT_SETTINGS, halves, augmented views) with the named
# change; the multi-block sampler of the lab: two targets on a full-grid context, cut at random
LAB_SAMPLER = dict(num_targets=2, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                   context_scale=(1.0, 1.0), min_context=4, cut="random")
RELEASED = dict(IJEPA_SETTINGS, sigreg_weight=0.0, masks="multiblock", views="mask")
VARIANTS = {
    # name: (label, family, changes)
    "default": ("JEPA default: predictor + LeJEPA views", "jepa", {}),
    "no-lejepa": ("default - LeJEPA terms", "jepa", dict(sigreg_weight=0.0)),
    "no-predictor": ("default - predictor", "jepa", dict(predictor_depth=0)),
    "no-sg": ("default - stop-gradient", "jepa", dict(stop_gradient=False)),
    "masks": ("default, masks only (no augmentation)", "jepa", dict(views="mask")),
    "ijepa": ("I-JEPA: EMA + stop-grad + predictor", "jepa", RELEASED),
    "ijepa-no-ema": ("I-JEPA - EMA", "jepa", dict(RELEASED, target_encoder="shared")),
    "ijepa-no-sg": ("I-JEPA - EMA - stop-grad", "jepa", dict(RELEASED, target_encoder="shared",
                                                             stop_gradient=False)),
    "ijepa-no-predictor": ("I-JEPA - predictor", "jepa", dict(RELEASED, predictor_depth=0)),
    "ijepa-vicreg": ("I-JEPA + VICReg var/cov", "jepa", dict(RELEASED, variance_weight=0.01,
                                                              covariance_weight=0.01)),
    "lejepa": ("LeJEPA, masked views", "lejepa", dict(lam=0.02)),
    "lejepa-no-sigreg": ("LeJEPA - SIGReg", "lejepa", dict(lam=0.0)),
}


def collapse_variant(name, vit, normalise, augment, predictor_depth):
    """The collapse lab's variant `name` on `vit`: (objective, AdamW parameter groups, weight
    decay schedule or None). normalise: the pixels' standardisation; augment: the views'."""
    _, family, changes = VARIANTS[name]
    if family == "lejepa":   # two masked views of each image, every parameter decayed
        model = LeJEPA(vit, proj_dim=32, hidden=256, augment=normalise, num_views=2, mask_keep=0.5,
                       **changes)
        return model, [{"params": model.parameters(), "weight_decay": 0.05}], None
    settings = dict(DEFAULT_SETTINGS, masks="halves", views="augment", predictor_depth=None)
    settings.update(changes)
    masks, views = settings.pop("masks"), settings.pop("views")
    depth = settings.pop("predictor_depth")
    objective = StudyJEPA(
        vit, predictor_dim=vit.dim // 2, predictor_depth=predictor_depth if depth is None else depth,
        masks=MultiBlockMaskSampler(vit.grid_size, **LAB_SAMPLER) if masks == "multiblock"
        else halves(vit.num_patches),
        views=augmented_views(augment, normalise, first="context") if views == "augment" else image_views(normalise),
        momentum=(0.99, 1.0), **settings)
    return objective, objective.param_groups(0.04), (0.04, 0.4)
