"""LeJEPA: views of an image predict their common centre, and SIGReg keeps the embeddings an
isotropic Gaussian (Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised
Learning Without the Heuristics", arXiv 2511.08544, Algorithm 1; the authors' minimal code:
rbalestr-lab/lejepa, MINIMAL.md).

The idea. Every joint-embedding method asks two things of an encoder: views of the same image
should land close together (so the embedding keeps what the views share), and the embeddings
must not collapse (or "close together" is free). I-JEPA, BYOL and DINO guard against collapse
with heuristics -- an EMA teacher, a stop-gradient, a predictor, centring. LeJEPA replaces them
all with one term that says what the embeddings SHOULD look like: SIGReg
(minienc/objectives/sigreg.py) pulls them towards N(0, I), the distribution the paper proves
best for downstream probes. No teacher, no stop-gradient, no predictor network, one knob lambda.

Per batch of B images, V views x_{v,b}: V_g "global" ones (the first V_g), then optional
"local" ones (smaller crops, or fewer visible patches). Each goes through the encoder f
(a ViT's tokens mean-pooled: the representation h the probes read) and a projector g
(Linear-BatchNorm-ReLU, twice, then Linear: torchvision's MLP with norm_layer=BatchNorm1d):

    h_{v,b} = mean_tokens f(x_{v,b})            (D,)   what evaluation uses
    z_{v,b} = g(h_{v,b})                        (K,)   what the loss sees
    c_b     = (1 / V_g) sum_{v <= V_g} z_{v,b}         the centre: the mean of the GLOBAL views
                                                       (no stop-gradient: it moves with them)
    prediction = mean over v, b, k of (z_{v,b,k} - c_{b,k})^2     every view predicts the centre
    sigreg     = (1 / V) sum_v SIGReg(z_{v,1..B})                 each view's batch tested alone
    loss       = (1 - lambda) * prediction + lambda * sigreg

The squared error is averaged over the K features as well, as in the authors' code
(`(centers - a_emb).square().mean()`), so lambda keeps their meaning; the paper's defaults are
lambda = 0.02 to 0.05, V_g = 2 global views and 6 local ones (V = 8), or V = 4 without local views.
Without local views (V_g = V) the prediction term is the views' spread around their mean.

Views are augmentations (minienc/data/augment.py), or, as I-JEPA intends, masks: each view of
the same image keeps a random subset of its patches (no pixel augmentation at all) and the
encoder sees only those patches (`masks=`). Local views here keep the encoder's input size
(small crops are resized back up, or fewer patches are kept), so one ViT and one position
table serve every view.
"""
from .. import backend, checks
from .. import distributed as dist
from ..engine import Tensor, as_array, as_tensor, tensor
from .contrastive import projection_head
from .masked_image import check_keep, random_masking
from .protocol import Objective
from .sigreg import NUM_DIRECTIONS, shared_directions, sigreg


def lejepa_terms(global_z, local_z=None, lam=0.02, directions=None, num_directions=NUM_DIRECTIONS,
                 distributed=False):
    """{"loss", "prediction", "sigreg"} of projected views: global_z (V_g, B, K) and optional
    local_z (V_l, B, K). `directions` (K, M) fixes SIGReg's projections (else drawn).
    distributed: SIGReg tests every process's batch together, along rank 0's directions."""
    if global_z.ndim != 3 or global_z.shape[0] < 1:
        raise ValueError(f"lejepa: expected global views (V_g >= 1, B, K), got shape "
                         f"{tuple(global_z.shape)}")
    if local_z is not None and (local_z.ndim != 3 or tuple(local_z.shape[1:]) != tuple(global_z.shape[1:])):
        raise ValueError(f"lejepa: local views {tuple(local_z.shape)} must be (V_l, B, K) like the "
                         f"global views {tuple(global_z.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lejepa: lambda must be in [0, 1], got {lam}")
    views = global_z if local_z is None else _concatenate([global_z, local_z])
    centre = global_z.mean(axis=0, keepdims=True)                        # (1, B, K)
    prediction = ((views - centre) ** 2).mean()
    tested = views
    if distributed:   # the batch axis gathered from every process, with a gradient
        tested = dist.all_gather(views.transpose(1, 0, 2)).transpose(1, 0, 2)
        if directions is None:
            directions = shared_directions(views.shape[-1], num_directions, views.device,
                                           views.dtype)
    regulariser = sigreg(tested, directions, num_directions)
    loss = (1.0 - lam) * prediction + lam * regulariser
    return {"loss": loss, "prediction": prediction, "sigreg": regulariser}


def _concatenate(tensors):
    from ..ops import concatenate
    return concatenate(tensors, axis=0)


class LeJEPA(Objective):
    """Encoder + BatchNorm-MLP projector and the LeJEPA loss; the views are its own.

    model = LeJEPA(VisionTransformer(...), augment=lambda x: normalise(augment(x)), num_views=4)
    terms = model.loss(images)      # {"loss", "prediction", "sigreg"}: V = 4 augmented views
    LeJEPA(vit, augment=normalise, num_views=2, mask_keep=0.5)   # 2 masked views of each image
    LeJEPA(vit, augment=..., num_views=2, local_augment=..., num_local_views=6)  # + local crops
    features = model.embed(x)       # (B, D): pooled, before the projector
    distributed=True: SIGReg over every process's batch (minienc.distributed); for the
    projector's batch norm too, `nn.SyncBatchNorm.convert(model)`.

    encoder: a module from images to tokens (B, N, D) (pooled over N) or to features (B, D);
    with masks it must take patch_indices (a VisionTransformer). embed_dim: D (read from a
    ViT's .dim when not given). projector: any module (B, D) -> (B, K) instead of the default
    Linear-BN-ReLU-Linear-BN-ReLU-Linear of width `hidden`.
    The views: augment (images -> one view; default none) drawn num_views times, and
    local_augment num_local_views times; or, with mask_keep, ONE augment of the images seen
    through num_views random masks keeping that share of the patches (and num_local_views
    masks keeping local_keep). `loss_of_views` takes views made elsewhere (a test's fixed ones).
    """

    def __init__(self, encoder, proj_dim=32, hidden=256, lam=0.02, num_directions=NUM_DIRECTIONS,
                 embed_dim=None, projector=None, distributed=False, augment=None, num_views=2,
                 local_augment=None, num_local_views=0, mask_keep=None, local_keep=0.25):
        checks.in_range("LeJEPA", "lam", lam, 0, 1)
        if embed_dim is not None:   # (0 or -1 was passed over for the encoder's width, or
            checks.positive_int("LeJEPA", "embed_dim", embed_dim)   # refused by a Linear)
        embed_dim = embed_dim or getattr(encoder, "dim", None)
        if projector is None and embed_dim is None:
            raise ValueError("LeJEPA: pass embed_dim (the encoder's output width) or a projector")
        checks.positive_int("LeJEPA", "num_views", num_views)
        checks.non_negative_int("LeJEPA", "num_local_views", num_local_views)
        checks.positive_int("LeJEPA", "num_directions", num_directions)
        checks.callable_or_none("LeJEPA", "augment", augment)
        checks.callable_or_none("LeJEPA", "local_augment", local_augment)
        # the shares of patches a masked view keeps: checked where given, used or not yet
        checks.in_range("LeJEPA", "local_keep", local_keep, 0.0, 1.0, include_low=False,
                        include_high=False)
        if mask_keep is not None:
            num_patches = getattr(encoder, "num_patches", None)
            if num_patches is None:
                raise ValueError(f"LeJEPA: mask_keep masks patches: the encoder must cut images "
                                 f"into patches (a VisionTransformer), got {type(encoder).__name__}")
            check_keep("LeJEPA", "mask_keep", mask_keep, num_patches)
            if num_local_views:
                check_keep("LeJEPA", "local_keep", local_keep, num_patches)
        if num_views + num_local_views < 2:   # one view is its own centre: prediction = 0
            raise ValueError(f"LeJEPA: needs at least 2 views in all (num_views + "
                             f"num_local_views), got num_views={num_views}, "
                             f"num_local_views={num_local_views}")
        if num_local_views and mask_keep is None and local_augment is None:
            raise ValueError("LeJEPA: num_local_views augmented views need a local_augment")
        if projector is None:
            checks.positive_int("LeJEPA", "proj_dim", proj_dim)
            checks.positive_int("LeJEPA", "hidden", hidden)
        self.encoder = encoder
        self.projector = projector if projector is not None else projection_head(
            embed_dim, hidden, proj_dim, num_layers=3, batch_norm=True)
        self.lam, self.num_directions = float(lam), int(num_directions)
        self.distributed = distributed
        self.augment, self.num_views = augment or (lambda x: x), num_views
        self.local_augment, self.num_local_views = local_augment, num_local_views
        self.mask_keep, self.local_keep = mask_keep, local_keep

    def loss(self, images):
        """This batch's views (see the class docstring), then `loss_of_views`."""
        if self.mask_keep is None:
            views = [self.augment(images) for _ in range(self.num_views)]
            local = [self.local_augment(images) for _ in range(self.num_local_views)] or None
            return self.loss_of_views(views, local)
        b, n = images.shape[0], self.encoder.num_patches
        masks = [random_masking(b, n, 1 - self.mask_keep)[0] for _ in range(self.num_views)]
        local_masks = [random_masking(b, n, 1 - self.local_keep)[0]
                       for _ in range(self.num_local_views)] or None
        return self.loss_of_views(self.augment(images), None, masks, local_masks)

    def embed(self, images, patch_indices=None):
        """(B, D): the encoder's tokens mean-pooled (or its features as they are)."""
        h = self.encoder(images) if patch_indices is None else self.encoder(images, patch_indices)
        return h.mean(axis=1) if h.ndim == 3 else h

    def project_views(self, views, masks=None):
        """(V, B, K): every view through encoder, pooling and projector in ONE pass of V * B
        images (so the projector's BatchNorm sees all of them, as in the authors' code).

        views: a list of V image batches (B, C, H, W), or an array (V, B, C, H, W); with
        masks (V, B, Kp) of kept patch indices, views may be ONE batch every mask applies to."""
        images = _stack_views(views, None if masks is None else len(masks))
        v, b = images.shape[:2]
        flat = images.reshape(v * b, *images.shape[2:])
        idx = None
        if masks is not None:
            idx = _stack(masks)
            if idx.ndim != 3 or idx.shape[:2] != (v, b):
                raise ValueError(f"LeJEPA: masks must be (V, B, K) = ({v}, {b}, K) index arrays, got "
                                 f"shape {tuple(idx.shape)}")
            idx = idx.reshape(v * b, idx.shape[2])
        z = self.projector(self.embed(tensor_of(flat, self.device), idx))
        return z.reshape(v, b, z.shape[-1])

    def loss_of_views(self, views, local_views=None, masks=None, local_masks=None, directions=None):
        """{"loss", "prediction", "sigreg"} (a Trainer step_fn may return the dict to log each)."""
        global_z = self.project_views(views, masks)
        local_z = None
        if local_views is not None or local_masks is not None:
            local_z = self.project_views(views if local_views is None else local_views, local_masks)
        return lejepa_terms(global_z, local_z, self.lam, directions, self.num_directions,
                            self.distributed)


def tensor_of(images, device):
    """A batch as a tensor on `device` (raw arrays are wrapped; no graph ever reaches images)."""
    if isinstance(images, Tensor):
        return images
    return tensor(images, device=device) if backend.device_of(images) != device else as_tensor(images)


def _stack(arrays):
    """One raw array from a list of arrays or tensors (or an array already stacked)."""
    if not isinstance(arrays, (list, tuple)):
        return as_array(arrays)
    data = [as_array(a) for a in arrays]
    return backend.get_xp(data[0]).stack(data)


def _stack_views(views, num_masks):
    """(V, B, C, H, W) raw array from a list of batches or an array; one batch is repeated
    for `num_masks` masked views."""
    if isinstance(views, (list, tuple)) and not views:
        raise ValueError("LeJEPA: no views given")
    images = _stack(views)
    if images.ndim == 4 and num_masks is not None:
        images = backend.get_xp(images).broadcast_to(images, (num_masks, *images.shape))
    if images.ndim != 5:
        raise ValueError(f"LeJEPA: views must be V image batches (V, B, C, H, W), or one batch "
                         f"(B, C, H, W) with masks, got shape {tuple(images.shape)}")
    return images
