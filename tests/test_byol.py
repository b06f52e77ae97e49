"""BYOL: the regression loss against its formula, gradchecks of the loss and of the trained
parts on every backend, a target that gets no gradient, is never optimised and follows
m * old + (1 - m) * online exactly, its state in state_dict, exact resume, and a short run."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc.data import contrastive_augment
from minienc.objectives.byol import BYOL, byol_loss, byol_mlp, mean_cosine_similarity
from minienc.optim import SGD

from ssl_check import (gradcheck_objective, host, images, on_device, resume_matches, short_run, t64,
                       tiny_encoder, two_views, unit)


def tiny_byol(device):
    return on_device(device, lambda: BYOL(tiny_encoder(), byol_mlp(6, 8, 5), byol_mlp(5, 8, 5)))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_loss_is_the_squared_distance_of_unit_vectors(b, d, seed):
    rng = np.random.default_rng(seed)
    p, z = rng.standard_normal((b, d)) + 0.1, rng.standard_normal((b, d)) - 0.1
    expected = np.mean(np.sum((unit(p) - unit(z)) ** 2, axis=1))
    value = byol_loss(t64(p, "cpu"), t64(z, "cpu")).item()
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0.0 <= value <= 4.0 + 1e-12
    # a prediction along its target (any positive scale) costs nothing
    assert byol_loss(t64(z * 3.0, "cpu"), t64(z, "cpu")).item() == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine_similarity(t64(-z, "cpu"), t64(z, "cpu")).item() == pytest.approx(-1.0)


def test_loss_gradcheck(device):
    rng = np.random.default_rng(1)
    p, z = t64(rng.standard_normal((5, 4)), device), t64(rng.standard_normal((5, 4)), device)
    assert minienc.gradcheck(byol_loss, p, z)


def test_trained_parts_gradcheck(device):
    byol = tiny_byol(device)
    assert gradcheck_objective(byol, byol.loss_of_views, *two_views(device),
                               trained=("online_network", "predictor"), directions=2)


def test_target_gets_no_gradient_and_is_never_optimised(device):
    byol = tiny_byol(device)
    byol.loss_of_views(images(6, device, 1), images(6, device, 2))["loss"].backward()
    target = byol.target_network.parameters()
    assert target and all(p.grad is None and not p.requires_grad for p in target)
    online = byol.online_network.parameters() + byol.predictor.parameters()
    assert all(p.grad is not None for p in online)
    trained = {id(p) for g in byol.param_groups(1e-6) for p in g["params"]}
    assert trained == {id(p) for p in online}
    assert not trained & {id(p) for p in target}
    assert trained == {id(p) for p in byol.parameters() if p.requires_grad}
    # the target starts as a copy: same values, different arrays
    byol = tiny_byol(device)
    for t, o in zip(byol.target_network.parameters(), byol.online_network.parameters()):
        assert t is not o and np.array_equal(host(t), host(o))


def test_target_follows_the_ema_exactly(device):
    byol = tiny_byol(device)
    byol.augment = contrastive_augment()
    opt = SGD(byol.param_groups(), lr=0.1, momentum=0.9)
    x = images(8, device, 3)
    # (tau_base, progress) -> tau = 1 - (1 - tau_base) (cos(pi progress) + 1) / 2
    for base, progress, m in ((0.9, 0.0, 0.9), (0.0, 0.5, 0.5), (0.3, 1.0, 1.0), (0.0, 0.0, 0.0)):
        old = [host(p).copy() for p in byol.target_network.parameters()]
        opt.zero_grad()
        byol.loss(x)["loss"].backward()
        opt.step()
        byol.momentum = base
        byol.after_step(progress)
        for p_old, t, o in zip(old, byol.target_network.parameters(), byol.online_network.parameters()):
            expected = p_old * np.float32(m) + host(o) * np.float32(1.0 - m)
            np.testing.assert_allclose(host(t), expected, rtol=0, atol=1e-7)
        if m == 1.0:
            assert all(np.array_equal(a, host(t)) for a, t in zip(old, byol.target_network.parameters()))
    # m = 0 copied the online network
    for t, o in zip(byol.target_network.parameters(), byol.online_network.parameters()):
        np.testing.assert_array_equal(host(t), host(o))


def test_embed_is_the_online_encoder_and_the_target_is_in_state_dict(device):
    byol = tiny_byol(device)
    x = images(4, device, 1)
    np.testing.assert_array_equal(host(byol.embed(x)), host(byol.encoder(x)))
    state = byol.state_dict()
    assert any(k.startswith("target_network.") for k in state)
    assert any(k.startswith("online_network.") for k in state) and any(k.startswith("predictor.") for k in state)
    assert len(state) == len(set(state))
    # a second BYOL loads the first's target exactly
    byol.momentum = 0.0
    byol.after_step(0.0)
    other = tiny_byol(device).load_state_dict(state)
    for a, b in zip(other.target_network.parameters(), byol.target_network.parameters()):
        np.testing.assert_array_equal(host(a), host(b))


def test_exact_resume_restores_the_target(tmp_path):
    augment = contrastive_augment()

    def build():
        from minienc import nn
        return BYOL(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8, batch_norm=True)),
                    byol_mlp(8, 16, 8), byol_mlp(8, 16, 8), augment, momentum=0.8)

    uninterrupted, resumed = resume_matches(tmp_path, build, steps=3)
    assert list(uninterrupted) == list(resumed)
    for key in uninterrupted:
        np.testing.assert_array_equal(uninterrupted[key], resumed[key], err_msg=key)


def test_a_short_run_lowers_the_loss():
    from minienc import nn
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (64,), 16, batch_norm=True))
    byol = BYOL(encoder, byol_mlp(16, 64, 16), byol_mlp(16, 64, 16), momentum=0.9)
    losses = short_run(byol, epochs=4)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
