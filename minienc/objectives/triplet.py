"""The triplet loss with its miners, and the Triplet objective (views or labels).

The triplet loss (Schroff et al. 2015, FaceNet). For an anchor a, a positive p (same identity) and a
negative n (another identity), with d Euclidean or squared Euclidean, on L2-normalised embeddings
or on the raw ones:

    l(a, p, n) = max(0, d(a, p) - d(a, n) + margin)

averaged over all triplets, or over the non-zero ones only (Hermans et al. 2017's "BA!=0": easy
triplets then do not dilute the mean). Miners pick triplets inside a labelled batch from the
pairwise distance matrix D:
  batch-all   every valid (a, p, n): label(p) = label(a), p != a, label(n) != label(a)
              (an (N, N, N) tensor: fine for small batches, heavy past a few hundred);
  batch-hard  per anchor, the farthest positive and the closest negative (Hermans et al. 2017);
  semi-hard   per positive pair (a, p), the closest negative that is still farther than p:
              min {D[a,n] : D[a,n] > D[a,p]}; where none is, the farthest negative (as the
              TensorFlow `triplet_semihard_loss` that implements FaceNet's rule).
Without labels, the positive is an augmented view of the anchor: the 2N views of N images are
labelled by image index and the same miners apply (`view_triplet_loss`).
"""
from collections import namedtuple

from .. import backend, checks, ops
from ..engine import as_array
from .contrastive import _check_embeddings
from .protocol import ViewObjective

REDUCTIONS = ("mean", "mean_nonzero", "sum", "none")


# ----- the loss and its miners -------------------------------------------------------------------

def _distance(squared_distance, squared):
    """d from d^2. The square root is taken of max(d^2, 1e-12): coincident points (the diagonal
    of a distance matrix) then get a zero gradient instead of 0 * inf = NaN."""
    return squared_distance if squared else ops.sqrt(ops.maximum(squared_distance, 1e-12))


def pairwise_distances(embeddings, squared=False, normalize=True):
    """D (N, N): Euclidean (or squared) distances between the rows of `embeddings` (N, D), on
    the L2-normalised rows if `normalize`. Uses ||x||^2 + ||y||^2 - 2 x.y (one matmul); its
    rounding error can make d^2 slightly negative, so it is clipped at 0."""
    if embeddings.ndim != 2:
        raise ValueError(f"pairwise_distances: expected embeddings (N, D), got shape {embeddings.shape}")
    x = ops.normalize(embeddings) if normalize else embeddings
    sq = (x * x).sum(axis=1, keepdims=True)
    d2 = ops.maximum(sq + sq.T - 2.0 * (x @ x.T), 0.0)
    return _distance(d2, squared)


def _hinge_mean(d_ap, d_an, margin, valid, reduction):
    """max(0, d(a,p) - d(a,n) + margin) over the triplets where `valid`, reduced."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"triplet loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    checks.finite("triplet loss", "margin", margin)
    losses = ops.relu(d_ap - d_an + margin)
    if valid is not None:
        losses = losses * valid.astype(losses.dtype)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    xp = losses.xp
    # the count stays a device array: dividing by it needs no host read
    counted = losses.data > 0 if reduction == "mean_nonzero" else (
        valid if valid is not None else xp.ones(losses.shape, dtype=bool))
    return total / xp.maximum(counted.sum(), 1).astype(losses.dtype)


def triplet_loss(anchor, positive, negative, margin=0.2, squared=False, normalize=True,
                 reduction="mean"):
    """The triplet loss of explicit triplets: row i of each (N, D) input is one (a, p, n).
    reduction: "mean" (over all N), "mean_nonzero" (over the triplets with a positive loss),
    "sum" or "none" (the N losses)."""
    _check_embeddings("triplet_loss", anchor, positive, negative)
    if normalize:
        anchor, positive, negative = (ops.normalize(t) for t in (anchor, positive, negative))
    d_ap = _distance(((anchor - positive) ** 2).sum(axis=1), squared)
    d_an = _distance(((anchor - negative) ** 2).sum(axis=1), squared)
    return _hinge_mean(d_ap, d_an, margin, None, reduction)


# Index arrays that broadcast together, plus a mask of the triplets that exist.
Triplets = namedtuple("Triplets", "anchor positive negative valid")


def _label_masks(labels):
    xp = backend.get_xp(labels)
    if labels.ndim != 1:
        raise ValueError(f"triplet miner: expected labels of shape (N,), got {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    positive = same & ~xp.eye(len(labels), dtype=bool)
    return positive, ~same


def mine_batch_all(labels):
    """Every valid triplet: anchor (N,1,1), positive (1,N,1), negative (1,1,N), valid (N,N,N)."""
    labels = as_array(labels)
    xp = backend.get_xp(labels)
    positive, negative = _label_masks(labels)
    i = xp.arange(len(labels))
    return Triplets(i[:, None, None], i[None, :, None], i[None, None, :],
                    positive[:, :, None] & negative[:, None, :])


def mine_batch_hard(distances, labels):
    """Per anchor: the farthest positive and the closest negative; all (N,). An anchor without a
    positive or without a negative in the batch is not valid."""
    d, labels = as_array(distances), as_array(labels)
    xp = backend.get_xp(d)
    positive, negative = _label_masks(labels)
    hardest_positive = xp.argmax(xp.where(positive, d, -xp.inf), axis=1)
    hardest_negative = xp.argmin(xp.where(negative, d, xp.inf), axis=1)
    valid = positive.any(axis=1) & negative.any(axis=1)
    return Triplets(xp.arange(len(labels)), hardest_positive, hardest_negative, valid)


def _count_at_most(values, queries):
    """counts[i, j] = #{k : values[i, k] <= queries[i, j]}, row by row, with one stable sort of
    each row's values and queries merged (values first, so a tie counts as <=) and a running
    count of the values seen: O(N^2 log N), where comparing all pairs would be O(N^3)."""
    xp = backend.get_xp(values)
    n = values.shape[1]
    order = xp.argsort(xp.concatenate([values, queries], axis=1), axis=1, kind="stable")
    seen = xp.cumsum(order < n, axis=1)          # values at or before each sorted position
    landed = xp.argsort(order, axis=1)           # where each merged entry ended up
    return xp.take_along_axis(seen, landed[:, n:], axis=1)


def mine_semi_hard(distances, labels):
    """Per positive pair (a, p): the closest negative farther than p, or else the farthest
    negative. anchor (N,1), positive (1,N), negative (N,N), valid (N,N)."""
    d, labels = as_array(distances), as_array(labels)
    xp = backend.get_xp(d)
    positive, negative = _label_masks(labels)
    negative_d = xp.where(negative, d, xp.inf)   # non-negatives sort last
    closest_first = xp.argsort(negative_d, axis=1)
    within = _count_at_most(negative_d, d)       # negatives no farther than p: (N, N)
    count = negative.sum(axis=1, keepdims=True)
    # the (within + 1)-th closest negative is the closest one beyond p; if none is, the farthest
    rank = xp.maximum(xp.where(within < count, within, count - 1), 0)
    chosen = xp.take_along_axis(closest_first, rank, axis=1)
    i = xp.arange(len(labels))
    return Triplets(i[:, None], i[None, :], chosen, positive & (count > 0))


MINERS = {"batch_all": mine_batch_all, "batch_hard": mine_batch_hard, "semi_hard": mine_semi_hard}


def batch_triplet_loss(embeddings, labels, miner="batch_hard", margin=0.2, squared=False,
                       normalize=True, reduction="mean"):
    """Triplet loss over the triplets `miner` ("batch_all", "batch_hard", "semi_hard") finds in a
    labelled batch. The miner sees the distances without a graph; the loss then reads the chosen
    entries of the differentiable distance matrix, so gradients reach every embedding used."""
    if miner not in MINERS:
        raise ValueError(f"batch_triplet_loss: miner must be one of {sorted(MINERS)}, got {miner!r}")
    labels = as_array(labels)
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"batch_triplet_loss: embeddings {embeddings.shape} need labels of shape "
                         f"({embeddings.shape[0]},), got {tuple(labels.shape)}")
    distances = pairwise_distances(embeddings, squared, normalize)
    t = mine_batch_all(labels) if miner == "batch_all" else MINERS[miner](distances.data, labels)
    return _hinge_mean(distances[t.anchor, t.positive], distances[t.anchor, t.negative], margin,
                       t.valid, reduction)


def view_labels(n, xp):
    """The instance labels of 2N views stacked as [view 1 of images 0..N-1; view 2 of the same]."""
    i = xp.arange(n)
    return xp.concatenate([i, i])


def view_triplet_loss(view1, view2, miner="batch_hard", **options):
    """The unsupervised triplet loss: the positive of a view is the other view of the same image,
    the negatives are the views of the other images (labels = image index)."""
    _check_embeddings("view_triplet_loss", view1, view2)
    if view1.shape[0] < 2:   # every triplet needs another image: the loss would be 0, always
        raise ValueError(f"view_triplet_loss: a batch of {view1.shape[0]} image has no negatives; "
                         f"the triplet loss needs at least 2")
    labels = view_labels(view1.shape[0], backend.get_xp(as_array(view1)))
    return batch_triplet_loss(ops.concatenate([view1, view2]), labels, miner, **options)


class Triplet(ViewObjective):
    """The triplet loss on an encoder's embeddings (FaceNet trains the embedding itself, no head).

    Triplet(encoder, augment): loss(images) -- the positive of a view is the other view of the
        same image, the negatives the other images' views (`view_triplet_loss`).
    Triplet(encoder, augment, labels=True): loss((images, labels)) -- the positives are the
        other views of the same class (FaceNet's supervised form, `batch_triplet_loss`).
    miner, margin, squared, normalize, reduction: as `batch_triplet_loss`.
    """

    def __init__(self, encoder, augment=None, labels=False, miner="batch_hard", margin=0.2,
                 squared=False, normalize=True, reduction="mean"):
        checks.one_of("Triplet", "miner", miner, MINERS)
        checks.finite("Triplet", "margin", margin)   # (the loss checks it only at its first call)
        checks.one_of("Triplet", "reduction", reduction, REDUCTIONS)
        checks.callable_or_none("Triplet", "augment", augment)
        self.encoder, self.augment, self.labels = encoder, augment, bool(labels)
        self.options = dict(miner=miner, margin=margin, squared=squared, normalize=normalize,
                            reduction=reduction)

    def loss(self, batch):
        if not self.labels:
            return super().loss(batch)
        images, labels = batch
        return self.loss_of_views(*self.views(images), labels=labels)

    def loss_of_views(self, view1, view2, labels=None):
        n = view1.shape[0]
        # one batch through the encoder, so batch norm sees both views
        z = self.encoder(ops.concatenate([view1, view2]))
        if labels is None:
            return {"loss": view_triplet_loss(z[:n], z[n:], **self.options)}
        if n < 2:   # the two views of one image share its label: no negative, a loss of 0
            raise ValueError(f"Triplet: a batch of {n} image has no negatives; the triplet loss "
                             f"needs at least 2")
        labels = as_array(labels)
        both = backend.get_xp(labels).concatenate([labels, labels])
        return {"loss": batch_triplet_loss(z, both, **self.options)}
