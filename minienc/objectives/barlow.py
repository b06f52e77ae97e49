"""Barlow Twins: make the cross-correlation of two views' embeddings the identity matrix.

Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction" (ICML); the released code is facebookresearch/barlowtwins, main.py.

Two augmented views of a batch of B images go through the same encoder and projector (an MLP,
Linear-BN-ReLU per hidden layer, a last Linear without bias): z^A, z^B, both (B, D). Each feature
is standardised over the batch (batch norm without affine: mean 0, biased variance 1, eps 1e-5),
and the cross-correlation matrix is taken between the two views:

    C_ij = sum_b  zhat^A_bi zhat^B_bj / B                       (D, D); C_ii in [-1, 1]
    L = sum_i (1 - C_ii)^2  +  lambda sum_i sum_{j != i} C_ij^2     lambda = 5e-3 (paper; the
                                                                     code's 0.0051)

The on-diagonal term makes every feature invariant to the augmentations (the two views' i-th
features correlate perfectly); the off-diagonal "redundancy reduction" term decorrelates
different features, so they cannot all carry the same information. A constant embedding cannot
satisfy it: its standardised features are 0 and C = 0 costs D. L = 0 exactly when C = I.

`cross_correlation` is the one place the batch statistics are taken (the released code sums C
over GPUs with an all_reduce, and normalises with the global batch through SyncBatchNorm).
`distributed=True` gathers both views' embeddings from every process first (with a gradient),
so C is that of the global batch; unlike the released code's all_reduce, whose gradient only
reaches the local embeddings, the gradient is then exactly the one-process one.
"""
from .. import distributed as dist
from .. import checks, ops
from .contrastive import _check_embeddings, check_head, projection_head
from .protocol import ViewObjective


def cross_correlation(z1, z2, eps=1e-5):
    """C (D, D): the features of z1 and z2 (B, D) standardised over the batch, then
    C = zhat1^T zhat2 / B."""
    _check_embeddings("cross_correlation", z1, z2)
    b = z1.shape[0]
    if b < 2:
        raise ValueError(f"cross_correlation: batch statistics need B >= 2, got shape "
                         f"{tuple(z1.shape)}")
    return (ops.batch_norm(z1, eps=eps).T @ ops.batch_norm(z2, eps=eps)) * (1.0 / b)


def redundancy_reduction(c, lambd=5e-3):
    """(on_diagonal, off_diagonal) of a cross-correlation matrix c (D, D):
    sum_i (1 - c_ii)^2 and sum_{i != j} c_ij^2 (the loss is on + lambd * off)."""
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"redundancy_reduction: expected a square matrix (D, D), got "
                         f"{tuple(c.shape)}")
    i = c.xp.arange(c.shape[0])
    on_diagonal = ((1.0 - c[i, i]) ** 2).sum()
    return on_diagonal, ops.off_diagonal_square_sum(c)


def barlow_twins_terms(z1, z2, lambd=5e-3, eps=1e-5, distributed=False):
    """{"loss", "on_diagonal", "off_diagonal"} of two views' embeddings (B, D); distributed:
    C over every process's embeddings."""
    checks.non_negative("barlow_twins", "lambd", lambd)   # < 0: unbounded below
    if distributed:
        z1, z2 = dist.all_gather(z1), dist.all_gather(z2)
    on_diagonal, off_diagonal = redundancy_reduction(cross_correlation(z1, z2, eps))
    return {"loss": on_diagonal + lambd * off_diagonal, "on_diagonal": on_diagonal,
            "off_diagonal": off_diagonal}


def barlow_twins_loss(z1, z2, lambd=5e-3, eps=1e-5):
    """The scalar Barlow Twins loss of two views' embeddings (B, D)."""
    return barlow_twins_terms(z1, z2, lambd, eps)["loss"]


def barlow_projector(in_features, hidden_features=256, out_features=256, num_layers=3):
    """Barlow Twins' projector: Linear (no bias) - BN - ReLU per hidden layer, then a Linear
    without bias. The paper's is 8192-8192-8192 on a ResNet-50."""
    check_head("barlow_projector", in_features, hidden_features, out_features, num_layers)
    return projection_head(in_features, hidden_features, out_features, num_layers,
                           batch_norm=True, last_bias=False)


class BarlowTwins(ViewObjective):
    """An encoder and a projector; the loss sees both views' projections, the probe the encoder.

    model = BarlowTwins(encoder, barlow_projector(64, 256, 256), augment, lambd=5e-3)
    terms = model.loss(images)   # {"loss", "on_diagonal", "off_diagonal"}

    distributed=True: C over every process's batch (minienc.distributed); for the projector's
    batch norm too, `nn.SyncBatchNorm.convert(model)`.
    """

    def __init__(self, encoder, projector, augment=None, lambd=5e-3, distributed=False):
        checks.non_negative("BarlowTwins", "lambd", lambd)
        checks.callable_or_none("BarlowTwins", "augment", augment)
        self.encoder, self.projector, self.augment = encoder, projector, augment
        self.lambd, self.distributed = float(lambd), distributed

    def loss_of_views(self, view1, view2):
        # each view its own forward pass, as the released code
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        return barlow_twins_terms(z1, z2, self.lambd, distributed=self.distributed)
