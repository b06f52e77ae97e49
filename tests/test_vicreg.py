"""VICReg: every term against its formula written in NumPy, the variance hinge at zero whenever
every std reaches gamma, gradchecks of the loss and of the whole objective on every backend,
I-JEPA's option sharing the one implementation, errors, and a short run."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc.objectives import jepa_study, vicreg
from minienc.objectives.vicreg import (VICReg, variance_covariance, vicreg_expander, vicreg_loss,
                                       vicreg_terms)

from ssl_check import (assert_loss_of_projected_views, gradcheck_objective, layer_names, on_device,
                       short_run, t64, tiny_encoder, two_views)


def numpy_terms(z1, z2, gamma=1.0, eps=1e-4):
    def var_cov(z):
        b, d = z.shape
        x = z - z.mean(0)
        cov = x.T @ x / (b - 1)
        variance = np.maximum(0.0, gamma - np.sqrt(np.diag(cov) + eps)).mean()
        off = cov - np.diag(np.diag(cov))
        return variance, (off ** 2).sum() / d

    v1, c1 = var_cov(z1)
    v2, c2 = var_cov(z2)
    return ((z1 - z2) ** 2).mean(), (v1 + v2) / 2, c1 + c2


@settings(max_examples=25, deadline=None)
@given(b=st.integers(2, 9), d=st.integers(1, 7), gamma=st.floats(0.1, 2.0),
       scale=st.floats(0.05, 3.0), seed=st.integers(0, 2**16))
def test_terms_match_their_formula(b, d, gamma, scale, seed):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((b, d)) * scale, rng.standard_normal((b, d)) * scale
    terms = vicreg_terms(t64(z1, "cpu"), t64(z2, "cpu"), gamma=gamma)
    invariance, variance, covariance = numpy_terms(z1, z2, gamma)
    assert terms["invariance"].item() == pytest.approx(invariance, rel=1e-9, abs=1e-12)
    assert terms["variance"].item() == pytest.approx(variance, rel=1e-9, abs=1e-12)
    assert terms["covariance"].item() == pytest.approx(covariance, rel=1e-9, abs=1e-12)
    assert terms["loss"].item() == pytest.approx(25 * invariance + 25 * variance + covariance,
                                                 rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(2, 9), d=st.integers(1, 6), gamma=st.floats(0.05, 3.0),
       extra=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_variance_term_is_zero_when_every_std_reaches_gamma(b, d, gamma, extra, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((b, d))
    z = z - z.mean(0)
    std = z.std(0, ddof=1)
    if np.any(std < 1e-6):
        return
    target = gamma + extra * rng.random(d)            # every feature's std is >= gamma
    z = z / std * target
    variance, _ = variance_covariance(t64(z, "cpu"), gamma=gamma)
    assert variance.item() == 0.0
    # and a feature below gamma (by more than eps can hide) makes it positive
    z[:, 0] *= 0.5 * gamma / target[0]
    variance, _ = variance_covariance(t64(z, "cpu"), gamma=gamma)
    assert variance.item() > 0.0


def test_identical_views_cost_no_invariance_and_the_loss_is_symmetric():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    same = vicreg_terms(t64(z1, "cpu"), t64(z1, "cpu"))
    assert same["invariance"].item() == 0.0
    a = vicreg_loss(t64(z1, "cpu"), t64(z2, "cpu")).item()
    b = vicreg_loss(t64(z2, "cpu"), t64(z1, "cpu")).item()
    assert a == pytest.approx(b, rel=1e-12)


def test_the_jepa_study_uses_the_same_variance_covariance():
    assert jepa_study.variance_covariance is vicreg.variance_covariance


def test_loss_gradcheck(device):
    rng = np.random.default_rng(1)
    # stds well away from gamma = 1 (the hinge's kink): some below, some above
    scale = np.array([0.3, 0.5, 2.0, 3.0])
    z1, z2 = (t64(rng.standard_normal((6, 4)) * scale, device) for _ in range(2))
    assert minienc.gradcheck(lambda a, b: vicreg_loss(a, b), z1, z2)
    assert minienc.gradcheck(lambda a: sum(variance_covariance(a, gamma=1.5)), z1)


def test_whole_objective_gradcheck(device):
    model = on_device(device, lambda: VICReg(tiny_encoder(), vicreg_expander(6, 8, 5)))
    assert gradcheck_objective(model, model.loss_of_views, *two_views(device), directions=2)


def test_forward_is_the_representation_and_each_view_runs_alone(device):
    model = on_device(device, lambda: VICReg(tiny_encoder(), vicreg_expander(6, 8, 5)))
    assert_loss_of_projected_views(model, model.expander, vicreg_loss, *two_views(device))
    head = vicreg_expander(6, 8, 5)
    assert layer_names(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                 "Linear"]
    assert head.layers[-1].bias is None


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"vicreg.*\(4, 3\).*\(4, 2\)"):
        vicreg_terms(t64(np.zeros((4, 3)), "cpu"), t64(np.zeros((4, 2)), "cpu"))
    with pytest.raises(ValueError, match=r"variance_covariance.*\(1, 3\)"):
        vicreg_terms(t64(np.zeros((1, 3)), "cpu"), t64(np.zeros((1, 3)), "cpu"))


def test_a_short_run_lowers_the_loss():
    from minienc import nn
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (64,), 16, batch_norm=True))
    model = VICReg(encoder, vicreg_expander(16, 64, 32))
    losses = short_run(model, epochs=4, lr=0.02)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
