"""Numerics that cancel or are undefined at the edges (issue 28): the off-diagonal terms of
VICReg and Barlow Twins summed over the off-diagonal entries themselves, and smooth_l1 at
beta = 0 as PyTorch defines it (the L1 loss)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import ops
from minienc.objectives.barlow import redundancy_reduction
from minienc.objectives.vicreg import variance_covariance


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
