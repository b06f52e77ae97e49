"""Label-free health checks for self-supervised embeddings: is it collapsing?

- `embedding_std`: the standard deviation of each dimension of the L2-normalised embeddings,
  averaged over dimensions (SimSiam, Chen & He 2021, section 4.1). Collapse to a constant vector
  sends it to 0; embeddings spread uniformly on the sphere give about 1/sqrt(D).
- `rankme`: the effective rank of the embedding matrix (Garrido et al. 2023, "RankMe"):
  with singular values s_k of Z (N, D), p_k = s_k / sum(s) + eps, RankMe = exp(-sum p_k log p_k).
  It lies between 1 (all variance in one direction) and min(N, D) (all directions equal).
- `alignment` and `uniformity` (Wang & Isola 2020, "Understanding Contrastive Representation
  Learning through Alignment and Uniformity on the Hypersphere"), on L2-normalised embeddings f:
      alignment  = E_(x, y) positive pair  ||f(x) - f(y)||^alpha          (alpha = 2; 0 is best)
      uniformity = log E_(x, y) distinct   exp(-t ||f(x) - f(y)||^2)      (t = 2; lower is better)
  Two views of an image should land together (low alignment), and the embeddings of different
  images should spread over the sphere (low uniformity). A collapsed encoder aligns perfectly
  (0) and is as non-uniform as it gets (0: every pair at distance 0): the two numbers are read
  together. On the unit sphere ||a - b||^2 = 2 - 2 a.b, so uniformity lies in
  [-4t, 0]. The pairs are all i < j of a set (torch.pdist in the paper's code); the evaluation
  row reports the mean of the two views' uniformity, as the paper's training loss does.
"""
import math

from .. import backend, checks
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
    checks.positive("rankme", "eps", eps)   # (p log p of a zero singular value is NaN at eps 0)
    z = as_features(embeddings, "embeddings")
    xp = backend.get_xp(z)
    s = singular_values(z)
    p = s / xp.maximum(s.sum(), 1e-12) + eps
    return float(xp.exp(-(p * xp.log(p)).sum()))


def _unit_rows(z):
    xp = backend.get_xp(z)
    return z / xp.maximum(xp.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def alignment(view1, view2, alpha=2.0):
    """Wang & Isola's alignment (a float) of the embeddings of two views (N, D), row i of each
    being a positive pair: the mean of ||f(x_i) - f(y_i)||^alpha on L2-normalised rows."""
    checks.positive("alignment", "alpha", alpha)
    z1, z2 = as_features(view1, "view1"), as_features(view2, "view2")
    if z1.shape != z2.shape:
        raise ValueError(f"alignment: the two views' embeddings differ in shape: {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    xp = backend.get_xp(z1)
    difference = _unit_rows(z1).astype("float64") - _unit_rows(z2).astype("float64")
    distance = xp.linalg.norm(difference, axis=1)
    return float((distance ** alpha).mean())


def uniformity(embeddings, t=2.0, chunk=1024):
    """Wang & Isola's uniformity (a float) of embeddings (N >= 2, D): the log of the mean of
    exp(-t ||f(x_i) - f(x_j)||^2) over the pairs i != j, on L2-normalised rows. Rows are taken
    `chunk` at a time, so memory stays O(chunk * N), and summed in float64 relative to the
    closest pair (a log-sum-exp: at a large t every exp(-t d^2) underflows to 0, and log 0)."""
    checks.positive("uniformity", "t", t)
    checks.positive_int("uniformity", "chunk", chunk)
    z = as_features(embeddings, "embeddings")
    if z.shape[0] < 2:
        raise ValueError(f"uniformity: needs at least two embeddings, got shape {tuple(z.shape)}")
    xp = backend.get_xp(z)
    z = _unit_rows(z).astype("float64")
    n = z.shape[0]
    total, nearest = 0.0, None   # device scalars after the first chunk: one host read at the end
    for start in range(0, n, chunk):
        block = z[start:start + chunk]
        squared = xp.maximum(2.0 - 2.0 * (block @ z.T), 0.0)     # ||a - b||^2 of unit rows
        rows = xp.arange(block.shape[0])
        squared[rows, rows + start] = xp.inf                      # a point and itself: no pair
        # sum of exp(-t (d^2 - nearest)), nearest the smallest d^2 so far, rescaled as it falls
        closest = squared.min() if nearest is None else xp.minimum(nearest, squared.min())
        if nearest is not None:
            total = total * xp.exp(-t * (nearest - closest))
        total, nearest = total + xp.exp(-t * (squared - closest)).sum(), closest
    return math.log(float(total) / (n * (n - 1))) - t * float(nearest)
