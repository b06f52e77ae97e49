"""SimSiam: the negative cosine against its formula, the stop-gradient (the gradient is exactly
that of a loss whose targets are constants; without it, the full derivative), gradchecks on every
backend, the released code's projector and predictor shapes, and a short run."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc.engine import no_grad
from minienc.objectives.simsiam import (SimSiam, negative_cosine, simsiam_loss, simsiam_predictor,
                                        simsiam_projector)

from ssl_check import (gradcheck_objective, host, images, layer_names, on_device, short_run, t64,
                       tiny_encoder, two_views)


def tiny_simsiam(device, stop_gradient=True):
    return on_device(device, lambda: SimSiam(tiny_encoder(), simsiam_projector(6, 8, 6),
                                             simsiam_predictor(6, 3), stop_gradient=stop_gradient))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_negative_cosine_matches_its_formula(b, d, seed):
    rng = np.random.default_rng(seed)
    p, z = rng.standard_normal((b, d)) + 0.1, rng.standard_normal((b, d)) - 0.1
    cos = np.sum(p * z, axis=1) / np.linalg.norm(p, axis=1) / np.linalg.norm(z, axis=1)
    assert negative_cosine(t64(p, "cpu"), t64(z, "cpu")).item() == pytest.approx(-cos.mean(), rel=1e-9, abs=1e-12)
    assert negative_cosine(t64(2 * z, "cpu"), t64(z, "cpu")).item() == pytest.approx(-1.0)


def test_stop_gradient_leaves_the_targets_without_gradient(device):
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (t64(rng.standard_normal((5, 4)), device) for _ in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None
    # the gradient w.r.t. the predictions is the full one (the targets are constants)
    assert minienc.gradcheck(lambda a, b: simsiam_loss(a, b, z1, z2), p1, p2)
    # without the stop-gradient every input gets its full derivative
    assert minienc.gradcheck(lambda *t: simsiam_loss(*t, stop_gradient=False), p1, p2, z1, z2)


def test_model_gradient_is_that_of_constant_targets(device):
    model = tiny_simsiam(device)
    v1, v2 = images(6, device, 1), images(6, device, 2)
    model.loss_of_views(v1, v2)["loss"].backward()
    stopped = [host(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    with no_grad():   # the same targets (batch statistics: same batch, same values), no graph
        z1, z2 = model.projector(model.encoder(v1)), model.projector(model.encoder(v2))
    p1 = model.predictor(model.projector(model.encoder(v1)))
    p2 = model.predictor(model.projector(model.encoder(v2)))
    (0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))).backward()
    for a, p in zip(stopped, model.parameters()):
        np.testing.assert_allclose(a, host(p.grad), rtol=1e-5, atol=1e-6)
    # and it is not the full derivative: without the stop-gradient the encoder's gradient differs
    model.zero_grad()
    model.stop_gradient = False
    model.loss_of_views(v1, v2)["loss"].backward()
    assert not np.allclose(stopped[0], host(model.parameters()[0].grad), atol=1e-6)


def test_whole_objective_gradcheck_without_stop_gradient(device):
    model = tiny_simsiam(device, stop_gradient=False)
    assert gradcheck_objective(model, model.loss_of_views, *two_views(device), directions=2)


def test_projector_and_predictor_are_the_released_ones(device):
    model = tiny_simsiam(device)
    assert layer_names(model.projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d",
                                            "ReLU", "Linear", "BatchNorm1d"]
    assert model.projector.layers[-1].weight is None            # the output BN has no affine
    assert [m.out_features for m in model.predictor.layers if type(m).__name__ == "Linear"] == [3, 6]
    x = images(4, device, 1)
    np.testing.assert_array_equal(host(model.embed(x)), host(model.encoder(x)))


def test_a_short_run_lowers_the_loss():
    from minienc import nn
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (64,), 16, batch_norm=True))
    model = SimSiam(encoder, simsiam_projector(16, 64, 32), simsiam_predictor(32, 8))
    losses = short_run(model, epochs=4, lr=0.5)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2     # the loss lies in [-1, 1]
