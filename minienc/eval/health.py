"""Label-free health checks for self-supervised embeddings: is it collapsing?

- `embedding_std`: the standard deviation of each dimension of the L2-normalised embeddings,
  averaged over dimensions (SimSiam, Chen & He 2021, section 4.1). Collapse to a constant vector
  sends it to 0; embeddings spread uniformly on the sphere give about 1/sqrt(D).
- `rankme`: the effective rank of the embedding matrix (Garrido et al. 2023, "RankMe"):
  with singular values s_k of Z (N, D), p_k = s_k / sum(s) + eps, RankMe = exp(-sum p_k log p_k).
  It lies between 1 (all variance in one direction) and min(N, D) (all directions equal).
"""
from .. import backend
from .features import as_features


def embedding_std(embeddings, per_dim=False):
    """Mean (or, with per_dim, the array) over dimensions of the std of L2-normalised embeddings."""
    z = as_features(embeddings, "embeddings")
    xp = backend.get_xp(z)
    z = z / xp.maximum(xp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    std = z.std(axis=0)
    return std if per_dim else float(std.mean())


def singular_values(z):
    """Singular values of z (N, D), from the eigenvalues of the smaller Gram matrix in float64:
    one matmul and a min(N, D)-sized symmetric eigensolve, much cheaper than an SVD of a tall
    matrix, and float64 keeps the small ones accurate enough for an entropy."""
    xp = backend.get_xp(z)
    z = z.astype("float64")
    gram = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
    return xp.sqrt(xp.clip(xp.linalg.eigvalsh(gram), 0.0, None))


def rankme(embeddings, eps=1e-7):
    """RankMe effective rank (a float) of embeddings (N, D), as in the paper: not centred."""
    z = as_features(embeddings, "embeddings")
    xp = backend.get_xp(z)
    s = singular_values(z)
    p = s / xp.maximum(s.sum(), 1e-12) + eps
    return float(xp.exp(-(p * xp.log(p)).sum()))
