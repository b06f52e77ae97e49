"""VICReg: variance, invariance and covariance terms on the embeddings of two views.

Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning" (ICLR); the released code is facebookresearch/vicreg, main_vicreg.py.

Two augmented views x, x' of a batch of B images go through the same encoder f and expander h
(an MLP, Linear-BN-ReLU per hidden layer, a last Linear without bias): z = h(f(x)), z' = h(f(x')),
both (B, D). With z_bd the d-th feature of image b:

    invariance  s(z, z') = 1/(B D) sum_b ||z_b - z'_b||^2                  (mean squared error)
    variance    v(z) = 1/D sum_d relu(gamma - sqrt(Var_b z_bd + eps))      (gamma = 1, eps = 1e-4;
                                                                            Var unbiased, 1/(B-1))
    covariance  c(z) = 1/D sum_{d != e} C(z)_de^2,
                C(z) = 1/(B-1) sum_b (z_b - mean z)(z_b - mean z)^T      (the off-diagonal of the
                                                                            covariance matrix)
    L = lambda s(z, z') + mu (v(z) + v(z')) / 2 + nu (c(z) + c(z'))     lambda = mu = 25, nu = 1

The invariance term alone is minimised by a constant embedding; the variance hinge forbids that
(each feature must keep a std of at least gamma over the batch), and the covariance term stops
the features from all carrying the same information (it decorrelates them). The hinge acts on
the std, not the variance: its gradient does not vanish as a feature shrinks towards a constant.

Normalisations follow the released code, which the 25 / 25 / 1 weights were tuned with: the
invariance term is F.mse_loss (a mean over B and D; the paper writes a mean over B only), the two
variance terms are averaged, the two covariance terms summed (the paper sums both pairs).

`variance_covariance` is the ONE implementation of the variance and covariance terms in minienc:
I-JEPA's optional anti-collapse terms (objectives/jepa.py) import it from here. It is also where
statistics over the batch are taken (the released code all-gathers z from every GPU before it;
`distributed=True` does the same with minienc.distributed.all_gather, whose gradient reaches
every process's embeddings; the invariance term stays each process's own mean).
"""
from .. import distributed as dist
from .. import checks, ops
from .contrastive import _check_embeddings, check_head, projection_head
from .protocol import ViewObjective


def variance_covariance(embeddings, gamma=1.0, eps=1e-4):
    """VICReg's two anti-collapse terms of embeddings (B, D) over the batch:
    variance = mean_d relu(gamma - sqrt(Var_b z_d + eps)),
    covariance = sum_{d != e} Cov(z)_de^2 / D.   Returns (variance, covariance)."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"variance_covariance: expected embeddings (B >= 2, D), got "
                         f"{tuple(embeddings.shape)}")
    checks.non_negative("variance_covariance", "gamma", gamma)
    # eps > 0: at a collapsed dimension (what the term is there for) Var = 0, and the gradient
    # of sqrt(0) is infinite: times the zero deviations, NaN in every gradient
    checks.positive("variance_covariance", "eps", eps)
    b, d = embeddings.shape
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    var = centred.var(axis=0, ddof=1)
    variance = (gamma - (var + eps).sqrt()).relu().mean()
    cov = (centred.T @ centred) / (b - 1)
    covariance = ops.off_diagonal_square_sum(cov) / d
    return variance, covariance


def vicreg_terms(z1, z2, invariance_weight=25.0, variance_weight=25.0, covariance_weight=1.0,
                 gamma=1.0, eps=1e-4, distributed=False):
    """{"loss", "invariance", "variance", "covariance"} of the embeddings (B, D) of two views;
    the terms unweighted (variance: the mean of the two views', covariance: their sum).
    distributed: variance and covariance over every process's embeddings."""
    _check_embeddings("vicreg", z1, z2)
    for name, weight in (("invariance_weight", invariance_weight),
                         ("variance_weight", variance_weight),
                         ("covariance_weight", covariance_weight)):
        checks.non_negative("vicreg", name, weight)
    invariance = ops.mse_loss(z1, z2)
    if distributed:
        z1, z2 = dist.all_gather(z1), dist.all_gather(z2)
    variance1, covariance1 = variance_covariance(z1, gamma, eps)
    variance2, covariance2 = variance_covariance(z2, gamma, eps)
    variance = (variance1 + variance2) * 0.5
    covariance = covariance1 + covariance2
    loss = (invariance_weight * invariance + variance_weight * variance
            + covariance_weight * covariance)
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg_loss(z1, z2, **weights):
    """The scalar VICReg loss (see `vicreg_terms` for the keyword arguments)."""
    return vicreg_terms(z1, z2, **weights)["loss"]


def vicreg_expander(in_features, hidden_features=256, out_features=256, num_layers=3):
    """VICReg's expander: Linear-BN-ReLU for each hidden layer, then a Linear without bias (its
    bias would cancel in every term). The paper's is 8192-8192-8192 on a ResNet-50."""
    check_head("vicreg_expander", in_features, hidden_features, out_features, num_layers)
    return projection_head(in_features, hidden_features, out_features, num_layers,
                           batch_norm=True, last_bias=False)


class VICReg(ViewObjective):
    """An encoder f and an expander h; the loss sees z = h(f(x)) of two views, the probe f(x).

    model = VICReg(encoder, vicreg_expander(64, 256, 256), augment)
    terms = model.loss(images)   # {"loss", "invariance", "variance", "covariance"}

    distributed=True: the batch statistics over every process's batch (minienc.distributed);
    for the expander's too, `nn.SyncBatchNorm.convert(model)`.
    """

    def __init__(self, encoder, expander, augment=None, invariance_weight=25.0,
                 variance_weight=25.0, covariance_weight=1.0, gamma=1.0, eps=1e-4,
                 distributed=False):
        for name, value in (("invariance_weight", invariance_weight),
                            ("variance_weight", variance_weight),
                            ("covariance_weight", covariance_weight), ("gamma", gamma)):
            checks.non_negative("VICReg", name, value)
        checks.positive("VICReg", "eps", eps)   # (variance_covariance says why)
        checks.callable_or_none("VICReg", "augment", augment)
        self.encoder, self.expander, self.augment = encoder, expander, augment
        self.weights = dict(invariance_weight=float(invariance_weight),
                            variance_weight=float(variance_weight),
                            covariance_weight=float(covariance_weight), gamma=float(gamma),
                            eps=float(eps), distributed=bool(distributed))

    def loss_of_views(self, view1, view2):
        # each view its own forward pass, as the released code (batch norm sees one view)
        z1 = self.expander(self.encoder(view1))
        z2 = self.expander(self.encoder(view2))
        return vicreg_terms(z1, z2, **self.weights)
