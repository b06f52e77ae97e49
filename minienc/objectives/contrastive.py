"""Contrastive objectives: InfoNCE, SimCLR's NT-Xent, MoCo v2 (the triplet loss before them:
minienc/objectives/triplet.py).

InfoNCE (van den Oord et al. 2018; the form MoCo and SimCLR use). For a query q, its positive key
k+ and negative keys k-_1..k-_M, all L2-normalised, and a temperature tau:

    l(q) = -log  exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_j exp(q.k-_j / tau))
         = cross_entropy([q.k+, q.k-_1, ..., q.k-_M] / tau, target 0)

averaged over the N queries, so dl/dlogits = (softmax(logits) - onehot(0)) / N. Negatives that
must not count (a view against itself) get the logit -1e9: a large FINITE number, so softmax gives
them exactly 0 and backward stays finite, where -inf would make 0 * inf = NaN.

NT-Xent (Chen et al. 2020, SimCLR) is InfoNCE over 2N views: view i's positive is its pair, its
negatives the other 2N - 2 views (both augmentations of every other image), with cosine
similarity and temperature tau. Normalisation: the mean over all 2N views, the paper's
L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)] (also lightly's NTXentLoss). The TensorFlow code
adds the mean of each direction, loss_a + loss_b, which is exactly twice this value.

MoCo v2 (He et al. 2020, Chen et al. 2020): InfoNCE with q from the query encoder and k+ from a
momentum key encoder, theta_k <- m theta_k + (1 - m) theta_q after each step (no gradient ever
reaches theta_k); the negatives are a FIFO queue of the K most recent keys, tau = 0.2, an MLP head.

Across processes (minienc.distributed, `distributed=True`): SimCLR's negatives are the views of
the GLOBAL batch, gathered from every process with a gradient (the TensorFlow code's
tpu_cross_replica_concat); each process keeps the loss of its own views, and the gradient
average makes the step that of the global batch's loss. MoCo enqueues the keys of the global
batch in rank order and computes them with the batch shuffled across processes (its released
code's shuffling BN); the queue is then the same on every process.
"""

from .. import backend, checks, ops
from .. import distributed as dist
from ..nn import BatchNorm1d, Linear, ReLU, Sequential
from ..optim import EMA
from ..engine import as_array, no_grad
from .protocol import ViewObjective, head_width

LARGE_NUM = 1e9  # the logit of an excluded entry (finite on purpose: see the module docstring)


def _check_embeddings(name, *arrays):
    shapes = [tuple(a.shape) for a in arrays]
    if any(len(s) != 2 for s in shapes) or len({s for s in shapes}) != 1:
        raise ValueError(f"{name}: expected embeddings of one shape (N, D), got shapes {shapes}")


# ----- InfoNCE and NT-Xent ------------------------------------------------------------------------

def info_nce_logits(queries, positive_keys, negative_keys=None, temperature=0.1,
                    negative_mask=None, normalize=True, distributed=False):
    """The logits (N, 1 + M) of InfoNCE, the positive in column 0.

    queries, positive_keys: (N, D). negative_keys: (M, D) shared by every query (MoCo's queue),
    (N, M, D) one set per query, or None: the other queries' positive keys (in-batch negatives;
    with `distributed`, every process's positive keys, gathered with a gradient).
    negative_mask: (N, M) booleans, True where a negative must not count (its logit is -1e9)."""
    _check_embeddings("info_nce", queries, positive_keys)
    checks.temperature("info_nce", "temperature", temperature)
    n, dim = queries.shape
    if negative_keys is None and n < 2:
        raise ValueError(f"info_nce: in-batch negatives need at least 2 queries, got {n}")
    if normalize:
        queries, positive_keys = ops.normalize(queries), ops.normalize(positive_keys)
    positive = (queries * positive_keys).sum(axis=1, keepdims=True)
    xp = backend.get_xp(as_array(queries))
    if negative_keys is None:
        negative_keys = dist.all_gather(positive_keys) if distributed else positive_keys
        offset = n * dist.rank() if distributed else 0   # where this process's keys landed
        # a query's own key is its positive, not a negative
        own = xp.eye(n, negative_keys.shape[0], k=offset, dtype=bool)
        negative_mask = own if negative_mask is None else (as_array(negative_mask) | own)
    elif normalize:
        negative_keys = ops.normalize(negative_keys)
    if negative_keys.ndim == 2 and negative_keys.shape[1] == dim:
        negative = queries @ negative_keys.T
    elif negative_keys.ndim == 3 and negative_keys.shape[0] == n and negative_keys.shape[2] == dim:
        negative = (queries.reshape(n, 1, dim) * negative_keys).sum(axis=2)
    else:
        raise ValueError(f"info_nce: queries {queries.shape} need negative keys (M, {dim}) or "
                         f"({n}, M, {dim}), got {tuple(negative_keys.shape)}")
    logits = ops.concatenate([positive, negative], axis=1) * (1.0 / temperature)
    if negative_mask is None:
        return logits
    mask = as_array(negative_mask)
    if mask.shape != negative.shape:
        raise ValueError(f"info_nce: negative_mask has shape {tuple(mask.shape)}, the negative "
                         f"logits {negative.shape}")
    keep_positive = xp.zeros((n, 1), dtype=bool)
    return ops.where(xp.concatenate([keep_positive, mask], axis=1), -LARGE_NUM, logits)


def info_nce(queries, positive_keys, negative_keys=None, temperature=0.1, negative_mask=None,
             normalize=True, distributed=False):
    """InfoNCE: cross_entropy(info_nce_logits(...), 0), the mean over the N queries."""
    logits = info_nce_logits(queries, positive_keys, negative_keys, temperature, negative_mask,
                             normalize, distributed)
    xp = backend.get_xp(logits.data)
    return ops.cross_entropy(logits, xp.zeros(logits.shape[0], dtype=xp.int64))


def nt_xent(view1, view2, temperature=0.5, distributed=False):
    """SimCLR's NT-Xent on the embeddings of two views (N, D) of the same N images: InfoNCE
    over the 2N views with every view as a candidate negative, minus itself and its positive
    (already in column 0). The mean over the 2N views (half the TensorFlow code's sum).
    distributed: the candidates are the 2N views of every process (module docstring)."""
    _check_embeddings("nt_xent", view1, view2)
    n = view1.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent: a batch of {n} image has no negatives; NT-Xent needs at least 2")
    views = ops.concatenate([view1, view2])
    pairs = ops.concatenate([view2, view1])
    candidates = dist.all_gather(views) if distributed else views
    offset = 2 * n * dist.rank() if distributed else 0   # where this process's views landed
    xp = backend.get_xp(views.data)
    i = xp.arange(2 * n)
    excluded = xp.zeros((2 * n, candidates.shape[0]), dtype=bool)
    excluded[i, offset + i] = True                    # a view against itself
    excluded[i, offset + (i + n) % (2 * n)] = True    # its positive, counted once in column 0
    return info_nce(views, pairs, candidates, temperature, negative_mask=excluded)


# ----- models -------------------------------------------------------------------------------------

def check_head(owner, in_features, hidden_features, out_features, num_layers):
    """An MLP head's sizes, positive integers, checked under the name of whoever was given them
    (each builder below checks its own before it calls projection_head, so the error names the
    builder the user called), the hidden width even with one layer, where none is built."""
    for name, value in (("in_features", in_features), ("hidden_features", hidden_features),
                        ("out_features", out_features), ("num_layers", num_layers)):
        checks.positive_int(owner, name, value)


def projection_head(in_features, hidden_features=256, out_features=64, num_layers=2,
                    batch_norm=True, last_bias=True):
    """The MLP between representation and loss. SimCLR: Linear-BN-ReLU for every hidden layer
    (no bias before BN) and a last Linear without ReLU. batch_norm=False gives MoCo v2's head,
    Linear-ReLU-Linear. last_bias=False: the last Linear without bias (BYOL, VICReg, Barlow)."""
    check_head("projection_head", in_features, hidden_features, out_features, num_layers)
    layers, width = [], in_features
    for _ in range(num_layers - 1):
        layers.append(Linear(width, hidden_features, bias=not batch_norm))
        if batch_norm:
            layers.append(BatchNorm1d(hidden_features))
        layers.append(ReLU())
        width = hidden_features
    layers.append(Linear(width, out_features, bias=last_bias))
    return Sequential(*layers)


class SimCLR(ViewObjective):
    """An encoder f and a projection head g: the loss sees z = g(f(x)) of two views, the probe
    h = f(x).

    model = SimCLR(encoder, projection_head(64, 256, 64), augment=contrastive_augment())
    terms = model.loss(images)                       # NT-Xent of two augmented views
    features = model.embed(images)                   # the representation (before the head)

    distributed=True: the negatives are every process's views (minienc.distributed); for the
    paper's global batch norm too, `nn.SyncBatchNorm.convert(model)`.
    """

    def __init__(self, encoder, head, augment=None, temperature=0.5, distributed=False):
        checks.temperature("SimCLR", "temperature", temperature)
        checks.callable_or_none("SimCLR", "augment", augment)
        self.encoder, self.head, self.augment = encoder, head, augment
        self.temperature, self.distributed = temperature, distributed

    def loss_of_views(self, view1, view2):
        n = view1.shape[0]
        # both views in one batch, so batch norm sees all 2N views (SimCLR's global BN)
        z = self.head(self.encoder(ops.concatenate([view1, view2])))
        return {"loss": nt_xent(z[:n], z[n:], self.temperature, self.distributed)}


def _in_groups(module, images, groups, order=None):
    """module(images) run on `groups` equal sub-batches, as `groups` devices would each run on
    their share, so batch norm sees only a sub-batch. `order`: a permutation of the batch that
    decides which images share a sub-batch; outputs come back in the original order."""
    if groups == 1:
        return module(images)
    if images.shape[0] % groups:
        raise ValueError(f"MoCo: a batch of {images.shape[0]} does not split into {groups} "
                         f"batch-norm groups")
    if order is not None:
        images = images[order]
    size = images.shape[0] // groups
    out = ops.concatenate([module(images[g * size:(g + 1) * size]) for g in range(groups)])
    if order is None:
        return out
    xp = backend.get_xp(order)
    return out[xp.argsort(order)]


class MoCo(ViewObjective):
    """MoCo v2: a query encoder (encoder + head) trained by the optimizer, a key encoder that is
    its momentum average, and a queue of the last `queue_size` keys as negatives.

    moco = MoCo(encoder, projection_head(64, 256, 64, batch_norm=False), augment,
                queue_size=1024)
    opt = SGD(moco.param_groups(), ...)              # the query encoder: the trained part
    terms = moco.loss(images)                        # keys under no_grad, then enqueued
    moco.after_step(progress)                        # the key encoder follows, momentum m

    Batch-norm leakage (MoCo's shuffle-BN), single process. With batch norm, the positive key and
    its query could share batch statistics, a signature that finds the pair without learning
    anything. MoCo runs 8 GPUs, each normalising over its own sub-batch, and shuffles the keys'
    images across GPUs. Here `bn_groups` emulates that: the query encoder runs on `bn_groups`
    sub-batches in order, the key encoder on `bn_groups` sub-batches of a random permutation of
    the batch (drawn on the device), unshuffled afterwards; a query and its key then share a
    batch-norm group only by chance (1 / bn_groups of them). bn_groups=1 turns this off.

    distributed=True (minienc.distributed): the keys' images are shuffled across processes
    instead (each process then normalises its share in `bn_groups` sub-batches), and the keys
    of the global batch join the queue in rank order, so the queue is the same everywhere.

    State. The key encoder is an `optim.EMA` target: a deep copy of the query encoder whose
    parameters have requires_grad=False (no gradient ever reaches them; `param_groups` leaves
    them out). It is a child module, as in MoCo's code, so
    `state_dict()`, `to()` and `astype()` include it; it stays in training mode (batch
    statistics) as in MoCo. The queue is a buffer with the newest keys last: enqueueing drops the
    oldest rows and appends, which is what MoCo's write pointer does, with no pointer to save.
    """

    def __init__(self, encoder, head, augment=None, queue_size=1024, momentum=0.99,
                 temperature=0.2, bn_groups=4, seed=None, distributed=False):
        checks.positive_int("MoCo", "queue_size", queue_size)
        checks.in_range("MoCo", "momentum", momentum, 0.0, 1.0)
        checks.temperature("MoCo", "temperature", temperature)
        checks.positive_int("MoCo", "bn_groups", bn_groups)
        if seed is not None:   # (-1 was NumPy's "expected non-negative integer", naming nothing)
            checks.non_negative_int("MoCo", "seed", seed)
        checks.callable_or_none("MoCo", "augment", augment)
        self.encoder, self.head, self.augment = encoder, head, augment
        self.temperature, self.momentum, self.bn_groups = temperature, momentum, bn_groups
        self.distributed = distributed
        self.query_encoder = Sequential(encoder, head)
        self._ema = EMA(self.query_encoder, momentum=momentum)
        self.key_encoder = self._ema.target
        device = encoder.device
        xp = backend.xp_for(device)
        out_features = head_width("MoCo", head, "the width of the keys in the queue")
        gen = backend.rng(device) if seed is None else xp.random.default_rng(seed)
        queue = gen.standard_normal((queue_size, out_features), dtype=backend.DEFAULT_DTYPE)
        queue /= xp.linalg.norm(queue, axis=1, keepdims=True)
        self.register_buffer("queue", queue)   # (K, D) normalised keys, the newest last

    def named_children(self):
        # the encoder and head are reached through query_encoder; list them once
        yield "query_encoder", self.query_encoder
        yield "key_encoder", self.key_encoder

    def loss_of_views(self, view_q, view_k):
        """InfoNCE of the queries of view_q against the keys of view_k and the queue; then the
        keys join the queue."""
        q = _in_groups(self.query_encoder, view_q, self.bn_groups)
        with no_grad():
            if self.distributed:
                k = dist.shuffled_forward(
                    lambda images: _in_groups(self.key_encoder, images, self.bn_groups), view_k)
            else:
                xp = backend.get_xp(as_array(view_k))
                order = None
                if self.bn_groups > 1:
                    order = xp.argsort(backend.rng(backend.device_of(as_array(view_k))).random(
                        view_k.shape[0], dtype=backend.DEFAULT_DTYPE))
                k = _in_groups(self.key_encoder, view_k, self.bn_groups, order)
            k = ops.normalize(k)
        loss = info_nce(q, k, self.queue, self.temperature)
        # the keys of the global batch join in rank order; enqueue makes a new queue array, so
        # the loss's graph keeps the one it used
        self.enqueue((dist.all_gather(k) if self.distributed else k).data)
        return {"loss": loss}

    def enqueue(self, keys):
        """Drop the oldest len(keys) rows of the queue and append `keys` (FIFO)."""
        size = self.queue.shape[0]
        if not 1 <= keys.shape[0] <= size:
            raise ValueError(f"MoCo.enqueue: {keys.shape[0]} keys for a queue of {size}: a batch "
                             f"must be between 1 and the queue size")
        if tuple(keys.shape[1:]) != tuple(self.queue.shape[1:]):
            raise ValueError(f"MoCo.enqueue: keys of shape {tuple(keys.shape)} for a queue of "
                             f"shape {tuple(self.queue.shape)}")
        queue = self.queue
        self._buffers["queue"] = backend.get_xp(queue).concatenate([queue[keys.shape[0]:], keys])

    def after_step(self, progress):
        """theta_k <- m theta_k + (1 - m) theta_q, in place, no graph (m constant, as MoCo)."""
        self._ema.update(self.momentum)
