"""SIGReg: Sketched Isotropic Gaussian Regularisation (Balestriero & LeCun 2025, "LeJEPA: Provable
and Scalable Self-Supervised Learning Without the Heuristics", arXiv 2511.08544; the authors' code:
rbalestr-lab/lejepa, MINIMAL.md and lejepa/univariate/epps_pulley.py).

The idea. Collapse means the embeddings stop filling their space: they shrink to a point, to a
few directions, or drift. LeJEPA's answer is to ask for one specific, well-spread distribution --
the isotropic Gaussian N(0, I), which the paper shows minimises the downstream risk of linear
and k-NN probes -- and to test for it cheaply. A distribution in D dimensions is isotropic
Gaussian exactly when EVERY 1-D projection of it is N(0, 1) (Cramer-Wold), so SIGReg tests a
few hundred random projections against N(0, 1) and averages the test statistics.

The test is Epps-Pulley's, on the characteristic function. For embeddings z_1..z_N (N, D) and
a unit direction a (D,), the projections x_n = a . z_n have the empirical characteristic function

    phi_N(t) = (1 / N) sum_n exp(i t x_n)    = mean_n cos(t x_n) + i mean_n sin(t x_n)

and N(0, 1) has phi(t) = exp(-t^2 / 2). The statistic compares them under a Gaussian window:

    EP(x) = N * integral_{-t_max}^{t_max} |phi_N(t) - phi(t)|^2 exp(-t^2 / 2) dt
          = N * sum_k w_k [ (mean_n cos(t_k x_n) - phi(t_k))^2 + (mean_n sin(t_k x_n))^2 ]

|phi_N(-t) - phi(-t)| = |phi_N(t) - phi(t)| (a real variable's CF is Hermitian), so the integral
is taken on [0, t_max] and doubled, by the trapezoid rule on K knots t_k = k t_max / (K - 1):

    w_k = exp(-t_k^2 / 2) * dt * (1 at t_0 and t_{K-1}, 2 between),   dt = t_max / (K - 1)

(the authors' defaults: K = 17 knots, t_max = 3). Bounded cos/sin make every sample's gradient
bounded, unlike moment-matching tests, and the statistic costs O(N * M * K).

    SIGReg(z) = mean over M random unit directions a_m of EP(z a_m)

with a_m = g_m / ||g_m||, g_m ~ N(0, I_D), drawn afresh on every call (the authors: 256 of
them per step, on the device). For embeddings (V, N, D) -- V views of the same N images, as
LeJEPA feeds them -- each view is tested on its own N samples and the statistics are averaged
over views and directions, as in the authors' minimal code.

Scale. For N samples of exactly N(0, 1) each |phi_N - phi|^2 has expectation (1 - phi(t)^2) / N,
so E[EP] = integral (1 - exp(-t^2)) exp(-t^2 / 2) dt ~ 1.06 whatever N: under the null the
statistic stays O(1), while any fixed departure from N(0, 1) grows it in proportion to N.
"""
import functools

from .. import backend
from ..engine import Function, Tensor, as_array, as_tensor

KNOTS = 17             # the authors' quadrature: 17 knots on [0, 3]
T_MAX = 3.0
NUM_DIRECTIONS = 256   # random projections per call (MINIMAL.md)


@functools.lru_cache(maxsize=None)
def _host_quadrature(knots, t_max):
    np = backend.numpy
    t = np.linspace(0.0, t_max, knots)
    phi = np.exp(-t * t / 2)                     # N(0, 1)'s CF, also the integration window
    dt = t_max / (knots - 1)
    trapezoid = np.full(knots, 2 * dt)           # doubled: the integral on [-t_max, t_max]
    trapezoid[[0, -1]] = dt
    return t, phi, trapezoid * phi


def quadrature(knots=KNOTS, t_max=T_MAX, device="cpu", dtype="float32"):
    """(t, phi, weights), each (knots,) on `device`: the knots on [0, t_max], exp(-t^2/2) at
    them, and the trapezoid weights (doubled for the symmetric half) times the window."""
    if int(knots) != knots or knots < 2:
        raise ValueError(f"sigreg: knots must be an integer >= 2, got {knots}")
    if not t_max > 0:
        raise ValueError(f"sigreg: t_max must be > 0, got {t_max}")
    return tuple(backend.to_device(a.astype(dtype), device)
                 for a in _host_quadrature(int(knots), float(t_max)))


class EppsPulley(Function):
    """Projections x (..., N, M) -> the Epps-Pulley statistic of each column (..., M).

    Backward, per sample n and direction m (c_k, s_k: the means of cos and sin at t_k):
        d EP / d x_n = 2 sum_k w_k t_k [ s_k cos(t_k x_n) - (c_k - phi_k) sin(t_k x_n) ]
    (the factor N of EP cancels the 1/N of each mean)."""

    def __init__(self, t, phi, weights):
        self.t, self.phi, self.weights = t, phi, weights

    def forward(self, x):
        xp = backend.get_xp(x)
        tx = x[..., None] * self.t                         # (..., N, M, K)
        self.cos, self.sin = xp.cos(tx), xp.sin(tx)
        self.real = self.cos.mean(axis=-3) - self.phi      # (..., M, K)
        self.imag = self.sin.mean(axis=-3)
        n = x.shape[-2]
        return (self.real * self.real + self.imag * self.imag) @ self.weights * x.dtype.type(n)

    def backward(self, g):
        wt = 2 * self.weights * self.t                      # (K,)
        along_cos = (g[..., None] * wt * self.imag)[..., None, :, :]   # (..., 1, M, K)
        along_sin = (g[..., None] * wt * self.real)[..., None, :, :]
        return (self.cos * along_cos).sum(axis=-1) - (self.sin * along_sin).sum(axis=-1)


def epps_pulley(projections, knots=KNOTS, t_max=T_MAX):
    """The Epps-Pulley statistic of each column of `projections` (..., N, M) against N(0, 1),
    over the N samples: a tensor (..., M)."""
    if not isinstance(projections, Tensor):
        projections = as_tensor(projections)
    if projections.ndim < 2 or projections.shape[-2] < 2 or projections.shape[-1] < 1:
        raise ValueError(f"epps_pulley: expected projections (..., N >= 2, M >= 1), got shape "
                         f"{tuple(projections.shape)}")
    if not backend.is_floating(projections.dtype):
        raise TypeError(f"epps_pulley: projections must be floating point, got {projections.dtype}")
    t, phi, weights = quadrature(knots, t_max, projections.device, projections.dtype)
    return EppsPulley(t, phi, weights)(projections)


def random_directions(dim, num=NUM_DIRECTIONS, device=None, dtype="float32"):
    """(dim, num) unit columns, uniform on the sphere, from minienc's seeded generator of
    `device` (no host round trip on a GPU)."""
    if dim < 1 or num < 1:
        raise ValueError(f"random_directions: dim and num must be >= 1, got dim={dim}, num={num}")
    device = device or backend.get_device()
    xp = backend.xp_for(device)
    g = backend.rng(device).standard_normal((dim, num), dtype=backend.dtype(dtype))
    return g / xp.sqrt((g * g).sum(axis=0, keepdims=True))


def shared_directions(dim, num=NUM_DIRECTIONS, device=None, dtype="float32"):
    """random_directions drawn on rank 0 and broadcast (minienc.distributed; at world size 1
    the draw itself): every process then tests its gathered batch along the directions one
    process with the whole batch would draw."""
    from .. import distributed  # pure Python; mpi4py only comes with distributed.init()
    return distributed.engine().broadcast_(random_directions(dim, num, device, dtype))


def sigreg(embeddings, directions=None, num_directions=NUM_DIRECTIONS, knots=KNOTS, t_max=T_MAX):
    """SIGReg of embeddings (N, D), or (V, N, D) tested view by view: the Epps-Pulley statistic
    of their projections on unit directions (D, M), averaged over directions (and views).

    directions: None draws `num_directions` fresh ones from the seeded generator of the
    embeddings' device (every call differs, as in the authors' code); pass an array or tensor
    (D, M) to fix them (gradient checks, reproducible evaluations). They are used as given."""
    if not isinstance(embeddings, Tensor):
        embeddings = as_tensor(embeddings)
    if embeddings.ndim not in (2, 3) or embeddings.shape[-2] < 2 or embeddings.shape[-1] < 1:
        raise ValueError(f"sigreg: expected embeddings (N >= 2, D) or (V, N >= 2, D), got shape "
                         f"{tuple(embeddings.shape)}")
    dim = embeddings.shape[-1]
    if directions is None:
        directions = random_directions(dim, num_directions, embeddings.device, embeddings.dtype)
    else:
        data = as_array(directions)
        if data.ndim != 2 or data.shape[0] != dim or data.shape[1] < 1:
            raise ValueError(f"sigreg: directions must be (D, M) with D = {dim} (the embeddings "
                             f"{tuple(embeddings.shape)}), got shape {tuple(data.shape)}")
        if backend.device_of(data) != embeddings.device:
            raise ValueError(f"sigreg: directions are on {backend.device_of(data)}, the embeddings "
                             f"on {embeddings.device}")
        directions = data.astype(embeddings.dtype, copy=False)
    return epps_pulley(embeddings @ as_tensor(directions), knots, t_max).mean()
