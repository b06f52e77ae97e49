"""Numerics that cancel or are undefined at the edges (issue 28): the off-diagonal terms of
VICReg and Barlow Twins summed over the off-diagonal entries themselves, and smooth_l1 at
beta = 0 as PyTorch defines it (the L1 loss); temperatures too small for float32 and VICReg's
eps = 0 at a collapsed batch refused rather than NaN (round 4)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import ops
from minienc import nn
from minienc.eval.knn import knn_accuracy
from minienc.objectives import DINO, MoCo, SimCLR, dino_head
from minienc.objectives.barlow import barlow_twins_terms, redundancy_reduction
from minienc.objectives.contrastive import info_nce, nt_xent
from minienc.objectives.dino import dino_cross_entropy, teacher_distribution
from minienc.objectives.vicreg import variance_covariance, vicreg_terms


def decorrelated_batch(b=256, d=32, seed=0):
    """A float32 batch whose features are uncorrelated to float precision (a whitened one):
    what VICReg and Barlow Twins drive their embeddings towards."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((b, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)
    return (q * np.sqrt(b - 1)).astype(np.float32)


def test_vicreg_covariance_of_a_decorrelated_batch_is_tiny_and_never_negative():
    """Regression: the whole sum of squares minus the diagonal's gave -9.5e-08 where the exact
    value is ~1e-13: the logged term was float32 noise, of either sign."""
    z = decorrelated_batch()
    _, covariance = variance_covariance(minienc.tensor(z))
    centred = z.astype(np.float64) - z.astype(np.float64).mean(axis=0)
    cov = centred.T @ centred / (len(z) - 1)
    exact = (cov ** 2).sum() - (np.diag(cov) ** 2).sum()
    assert 0.0 <= covariance.item() < 1e-9
    assert exact / z.shape[1] < 1e-9


def test_barlow_off_diagonal_of_a_decorrelated_cross_correlation_is_never_negative():
    c = np.eye(32, dtype=np.float32) + np.float32(1e-5) * np.random.default_rng(1).standard_normal(
        (32, 32)).astype(np.float32)
    _, off = redundancy_reduction(minienc.tensor(c))
    exact = ((c.astype(np.float64) ** 2).sum() - (np.diag(c).astype(np.float64) ** 2).sum())
    assert off.item() >= 0.0
    np.testing.assert_allclose(off.item(), exact, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), seed=st.integers(0, 100))
def test_off_diagonal_square_sum_is_the_sum_over_i_ne_j(d, seed):
    m = np.random.default_rng(seed).standard_normal((d, d))
    expected = sum(m[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    got = ops.off_diagonal_square_sum(minienc.tensor(m, dtype="float64")).item()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    x = minienc.tensor(m, dtype="float64", requires_grad=True)
    assert minienc.gradcheck(ops.off_diagonal_square_sum, x)


def test_off_diagonal_square_sum_refuses_a_matrix_that_is_not_square():
    with pytest.raises(ValueError, match=r"off_diagonal_square_sum: .* \(2, 3\)"):
        ops.off_diagonal_square_sum(minienc.zeros((2, 3)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smooth_l1_at_beta_0_is_the_l1_loss_as_in_pytorch(reduction):
    """Regression: beta = 0 was refused; PyTorch defines it as the L1 loss."""
    rng = np.random.default_rng(0)
    pred, target = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    got = minienc.smooth_l1_loss(minienc.tensor(pred), minienc.tensor(target), beta=0.0,
                                 reduction=reduction).numpy()
    l1 = np.abs(pred - target)
    expected = {"mean": l1.mean(), "sum": l1.sum(), "none": l1}[reduction]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    p = minienc.tensor(pred, dtype="float64", requires_grad=True)
    t = minienc.tensor(target, dtype="float64", requires_grad=True)
    assert minienc.gradcheck(lambda a, b: minienc.smooth_l1_loss(a, b, beta=0.0, reduction=reduction), p, t)


def _views(n=4, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return [minienc.tensor(rng.standard_normal((n, d)).astype(np.float32), requires_grad=True)
            for _ in range(2)]


TEMPERATURE_USERS = {
    "nt_xent": lambda t: nt_xent(*_views(), temperature=t),
    "info_nce": lambda t: info_nce(*_views(), temperature=t),
    "teacher_distribution": lambda t: teacher_distribution(_views()[0], np.zeros((1, 3), np.float32), t),
    "dino_cross_entropy": lambda t: dino_cross_entropy([minienc.tensor(np.full((4, 3), 1 / 3, np.float32))],
                                                       _views(), t),
    "knn": lambda t: knn_accuracy(*_blobs(), *_blobs(), k=3, temperature=t),
    "SimCLR": lambda t: SimCLR(nn.Linear(4, 8), nn.Linear(8, 8), temperature=t),
    "MoCo": lambda t: MoCo(nn.Linear(4, 8), nn.Linear(8, 8), temperature=t),
    "DINO": lambda t: DINO(nn.Linear(4, 8), dino_head(8, 16, 8, 4, num_layers=2), teacher_temperature=t),
}


def _blobs():
    rng = np.random.default_rng(1)
    return rng.standard_normal((20, 5)).astype(np.float32), np.arange(20) % 2


@pytest.mark.parametrize("user", list(TEMPERATURE_USERS))
@pytest.mark.parametrize("temperature", [1e-39, 1e-46, 5e-324])
def test_a_temperature_too_small_for_float32_is_refused_not_nan(user, temperature):
    """Similarities / 1e-39 overflow float32 (the loss NaN, every gradient NaN); 1e-46 is 0 in
    float32 and the k-NN's votes became 0 / 0 (accuracy 0.5 on points that are their own
    neighbours). A temperature of 1e-30 still computes: the floor sits there."""
    with pytest.raises(ValueError, match=r"temperature must be at least 1e-30, got .*: logits are "
                                         r"similarities / .*temperature in float32"):
        TEMPERATURE_USERS[user](temperature)


def test_the_smallest_temperature_allowed_still_gives_finite_gradients():
    z1, z2 = _views()
    loss = nt_xent(z1, z2, temperature=1e-30)
    loss.backward()
    assert np.isfinite(float(loss.data)) and np.isfinite(z1.grad).all()
    x, y = _blobs()
    assert knn_accuracy(x, y, x, y, k=3, temperature=1e-30) == 1.0


def test_vicreg_eps_0_is_refused_as_it_gives_nan_gradients_at_collapse():
    """At a collapsed dimension (what the variance term is there to undo) Var = 0: the gradient
    of sqrt(0 + eps) is infinite at eps = 0, times zero deviations, NaN in every gradient."""
    z = minienc.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    terms = vicreg_terms(z, z * 1.0, eps=1e-4)
    terms["loss"].backward()
    assert np.isfinite(z.grad).all()
    with pytest.raises(ValueError, match=r"^variance_covariance: eps must be a finite number > 0, got 0.0"):
        vicreg_terms(z, z * 1.0, eps=0.0)


@pytest.mark.parametrize("call, message", [
    (lambda z1, z2: vicreg_terms(z1, z2, variance_weight=-1.0), r"^vicreg: variance_weight must be a finite number >= 0"),
    (lambda z1, z2: vicreg_terms(z1, z2, gamma=float("nan")), r"^variance_covariance: gamma must be a finite number >= 0"),
    (lambda z1, z2: variance_covariance(z1, eps=-5.0), r"^variance_covariance: eps must be a finite number > 0"),
    (lambda z1, z2: barlow_twins_terms(z1, z2, lambd=-1.0), r"^barlow_twins: lambd must be a finite number >= 0"),
    (lambda z1, z2: barlow_twins_terms(z1, z2, lambd=float("nan")), r"^barlow_twins: lambd must be a finite number >= 0"),
])
def test_the_functional_losses_check_their_settings_as_the_objectives_do(call, message):
    """The constructors refused these (issue 28), the functions they call did not: a negative
    weight or lambd made the loss unbounded below, NaN or a negative eps made it NaN."""
    with pytest.raises(ValueError, match=message):
        call(*_views())
