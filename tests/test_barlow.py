"""Barlow Twins: the cross-correlation against NumPy, the loss 0 exactly at the identity (and for
whitened identical views), both terms against their formula, gradchecks of the loss and of the
whole objective on every backend, errors, and a short run."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc.objectives.barlow import (BarlowTwins, barlow_projector, barlow_twins_loss,
                                       barlow_twins_terms, cross_correlation, redundancy_reduction)

from ssl_check import (assert_loss_of_projected_views, gradcheck_objective, host, layer_names,
                       on_device, short_run, t64, tiny_encoder, two_views)


def numpy_correlation(z1, z2, eps=1e-5):
    def standardise(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)
    return standardise(z1).T @ standardise(z2) / len(z1)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(2, 9), d=st.integers(1, 6), lambd=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_terms_match_their_formula(b, d, lambd, seed):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((b, d)) * 2 + 1, rng.standard_normal((b, d))
    c = numpy_correlation(z1, z2)
    np.testing.assert_allclose(host(cross_correlation(t64(z1, "cpu"), t64(z2, "cpu"))), c, rtol=1e-9, atol=1e-12)
    on = ((1 - np.diag(c)) ** 2).sum()
    off = (c ** 2).sum() - (np.diag(c) ** 2).sum()
    terms = barlow_twins_terms(t64(z1, "cpu"), t64(z2, "cpu"), lambd=lambd)
    assert terms["on_diagonal"].item() == pytest.approx(on, rel=1e-9, abs=1e-12)
    assert terms["off_diagonal"].item() == pytest.approx(off, rel=1e-9, abs=1e-12)
    assert terms["loss"].item() == pytest.approx(on + lambd * off, rel=1e-9, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 8), lambd=st.floats(0.0, 10.0))
def test_loss_is_zero_at_the_identity_and_positive_elsewhere(d, lambd):
    on, off = redundancy_reduction(t64(np.eye(d), "cpu"))
    assert on.item() == 0.0 and off.item() == 0.0
    c = np.eye(d)
    c[0, 0] = 0.5
    on, off = redundancy_reduction(t64(c, "cpu"))
    assert on.item() == pytest.approx(0.25)
    if d > 1:
        c = np.eye(d)
        c[0, 1] = 0.3
        on, off = redundancy_reduction(t64(c, "cpu"))
        assert on.item() == 0.0 and off.item() == pytest.approx(0.09)


def test_identical_whitened_views_cost_nothing(device):
    # orthogonal, centred columns with unit (biased) variance: C = I up to batch norm's eps
    x = np.random.default_rng(0).standard_normal((16, 5))
    x -= x.mean(0)
    white = np.linalg.qr(x)[0] * np.sqrt(16.0)
    loss = barlow_twins_loss(t64(white, device), t64(white, device), eps=0.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    # a constant embedding standardises to 0: C = 0 costs D
    constant = t64(np.ones((8, 5)), device)
    assert barlow_twins_loss(constant, constant).item() == pytest.approx(5.0)


def test_loss_gradcheck(device):
    rng = np.random.default_rng(1)
    z1, z2 = (t64(rng.standard_normal((6, 4)), device) for _ in range(2))
    assert minienc.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambd=0.3), z1, z2)
    c = t64(rng.standard_normal((4, 4)), device)
    assert minienc.gradcheck(lambda m: sum(redundancy_reduction(m)), c)


def test_whole_objective_gradcheck(device):
    model = on_device(device, lambda: BarlowTwins(tiny_encoder(), barlow_projector(6, 8, 5), lambd=0.1))
    assert gradcheck_objective(model, model.loss_of_views, *two_views(device), directions=2)


def test_forward_is_the_representation_and_the_projector_is_the_papers(device):
    model = on_device(device, lambda: BarlowTwins(tiny_encoder(), barlow_projector(6, 8, 5)))
    assert_loss_of_projected_views(model, model.projector, barlow_twins_loss, *two_views(device))
    head = barlow_projector(6, 8, 5)
    assert layer_names(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                 "Linear"]
    assert all(m.bias is None for m in head.layers if type(m).__name__ == "Linear")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"cross_correlation.*\(4, 3\).*\(4, 2\)"):
        barlow_twins_loss(t64(np.zeros((4, 3)), "cpu"), t64(np.zeros((4, 2)), "cpu"))
    with pytest.raises(ValueError, match=r"cross_correlation.*B >= 2.*\(1, 3\)"):
        barlow_twins_loss(t64(np.zeros((1, 3)), "cpu"), t64(np.zeros((1, 3)), "cpu"))
    with pytest.raises(ValueError, match=r"redundancy_reduction.*\(2, 3\)"):
        redundancy_reduction(t64(np.zeros((2, 3)), "cpu"))


def test_a_short_run_lowers_the_loss():
    from minienc import nn
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (64,), 16, batch_norm=True))
    model = BarlowTwins(encoder, barlow_projector(16, 64, 32))
    losses = short_run(model, epochs=4, lr=0.02)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
