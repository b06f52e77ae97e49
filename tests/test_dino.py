"""DINO: the weight-normalised prototype layer and the head (gradchecks on every backend, unit
rows), the cross-entropy over crop pairs against NumPy, the teacher's centred and sharpened
distribution, a teacher that gets no gradient and follows m * old + (1 - m) * student exactly,
a centre that follows its EMA after the loss used the old one, the gauges, state_dict and exact
resume, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import nn
from minienc.data import MultiCrop, contrastive_augment
from minienc.engine import no_grad
from minienc.objectives.dino import (DINO, WeightNormLinear, batch_center, dino_cross_entropy,
                                     dino_head, entropy, teacher_distribution)
from minienc.optim import SGD

from nn_check import gradcheck_module
from ssl_check import gradcheck_objective, host, images, on_device, resume_matches, t64, tiny_encoder


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def tiny_dino(device, **options):
    return on_device(device, lambda: DINO(tiny_encoder(), dino_head(6, 7, 8, 4, batch_norm=True), **options))


def crops(n, device, count=4):
    return [images(n, device, seed) for seed in range(count)]


# ----- the head -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fixed_norm", [True, False])
def test_weight_norm_linear_gradcheck_and_row_norms(device, fixed_norm):
    layer = on_device(device, lambda: WeightNormLinear(5, 3, fixed_norm=fixed_norm))
    if not fixed_norm:
        layer.weight_g.data[:] = backend_array([[0.5], [2.0], [1.5]], device)
    norms = np.linalg.norm(host(layer.weight), axis=1)
    np.testing.assert_allclose(norms, [1, 1, 1] if fixed_norm else [0.5, 2.0, 1.5], rtol=1e-5)
    x = t64(np.random.default_rng(0).standard_normal((4, 5)), device)
    np.testing.assert_allclose(host(layer(x.astype("float32"))), host(x) @ host(layer.weight).T, rtol=1e-4, atol=1e-5)
    assert gradcheck_module(layer, x)
    names = [name for name, _ in layer.named_parameters()]
    assert names == (["weight_v"] if fixed_norm else ["weight_v", "weight_g"])


def backend_array(values, device):
    from minienc import backend
    return backend.to_device(np.asarray(values, dtype=np.float32), device)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_head_gradcheck_and_shape(device, batch_norm):
    head = on_device(device, lambda: dino_head(6, 7, 8, 4, batch_norm=batch_norm))
    kinds = [type(m).__name__ for m in head.layers]
    hidden = ["Linear", "BatchNorm1d", "GELU"] if batch_norm else ["Linear", "GELU"]
    assert kinds == hidden * 2 + ["Linear", "L2Normalize", "WeightNormLinear"]
    x = t64(np.random.default_rng(1).standard_normal((5, 6)), device)
    out = head(x.astype("float32"))
    assert out.shape == (5, 7) and np.all(np.abs(host(out)) <= 1 + 1e-5)   # cosines
    # trunc_normal(0.02) leaves the bottleneck ~1e-3 long, where normalising it is so curved that
    # central differences are off by ~1%: check the gradient at well-scaled weights
    for layer in head.layers:
        if isinstance(layer, nn.Linear):
            nn.init.normal(layer.weight, std=0.5)
            nn.init.normal(layer.bias, std=0.1)
    assert gradcheck_module(head, x, directions=2)


# ----- the loss -----------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 5), k=st.integers(2, 6), views=st.integers(2, 5), globals_=st.integers(1, 2),
       tau=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_cross_entropy_over_crop_pairs_matches_numpy(b, k, views, globals_, tau, seed):
    globals_ = min(globals_, views)
    rng = np.random.default_rng(seed)
    teacher = [softmax(rng.standard_normal((b, k))) for _ in range(globals_)]
    student = [rng.standard_normal((b, k)) for _ in range(views)]
    expected, pairs = 0.0, 0
    for g in range(globals_):
        for v in range(views):
            if v != g:
                log_q = np.log(softmax(student[v] / tau))
                expected += -(teacher[g] * log_q).sum(axis=1).mean()
                pairs += 1
    got = dino_cross_entropy([t64(t, "cpu", False) for t in teacher], [t64(s, "cpu") for s in student], tau)
    assert got.item() == pytest.approx(expected / pairs, rel=1e-9)


def test_cross_entropy_gradcheck(device):
    rng = np.random.default_rng(2)
    teacher = [t64(softmax(rng.standard_normal((3, 5))), device, False) for _ in range(2)]
    student = [t64(rng.standard_normal((3, 5)), device) for _ in range(3)]
    assert minienc.gradcheck(lambda *s: dino_cross_entropy(teacher, list(s), 0.1), *student)


def test_teacher_distribution_centres_and_sharpens(device):
    rng = np.random.default_rng(3)
    logits, center = rng.standard_normal((4, 6)), rng.standard_normal((1, 6))
    p = host(teacher_distribution(t64(logits, device, False), backend_array(center, device), 0.04))
    np.testing.assert_allclose(p, softmax((logits - center) / 0.04), rtol=1e-6, atol=1e-9)
    sharper = host(teacher_distribution(t64(logits, device, False), backend_array(center, device), 0.01))
    assert float(entropy(sharper)) < float(entropy(p))
    # a centre equal to every row leaves the uniform distribution: entropy log K
    same = np.repeat(center, 4, axis=0)
    flat = teacher_distribution(t64(same, device, False), backend_array(center, device), 0.04)
    assert float(entropy(flat)) == pytest.approx(np.log(6), rel=1e-6)
    with pytest.raises(ValueError, match="teacher temperature must be > 0"):
        teacher_distribution(t64(logits, device, False), backend_array(center, device), 0.0)


def test_bad_views_are_named():
    p = [t64(np.full((2, 3), 1 / 3), "cpu", False)]
    with pytest.raises(ValueError, match="at least two"):
        dino_cross_entropy(p, [t64(np.zeros((2, 3)), "cpu")])
    with pytest.raises(ValueError, match=r"one shape.*\(2, 4\)"):
        dino_cross_entropy(p, [t64(np.zeros((2, 3)), "cpu"), t64(np.zeros((2, 4)), "cpu")])
    with pytest.raises(ValueError, match="student temperature"):
        dino_cross_entropy(p, [t64(np.zeros((2, 3)), "cpu")] * 2, student_temperature=0.0)
    with pytest.raises(ValueError, match="at least two crops"):
        tiny_dino("cpu").loss_of_views(*[images(4, "cpu", 0)] * 1)


# ----- the model: teacher, centre, state ----------------------------------------------------------
def test_student_gradcheck(device):
    dino = tiny_dino(device, centering=False, teacher_temperature=0.05)   # a fixed centre: the
    dino.center[:] = backend_array(np.random.default_rng(4).standard_normal((1, 7)) * 0.1, device)
    assert gradcheck_objective(dino, dino.loss_of_views, *crops(4, device, 3),   # function stays
                               trained=("student",), directions=2)


def test_teacher_gets_no_gradient_and_follows_the_ema_exactly(device):
    dino = tiny_dino(device)
    opt = SGD(dino.param_groups(), lr=0.5, momentum=0.9)
    trained = {id(p) for g in dino.param_groups() for p in g["params"]}
    assert trained == {id(p) for p in dino.student.parameters()}
    assert not trained & {id(p) for p in dino.teacher.parameters()}
    # (momentum, progress) -> lambda = 1 - (1 - momentum) (cos(pi progress) + 1) / 2
    for base, progress, m in ((0.9, 0.0, 0.9), (0.0, 0.5, 0.5), (0.3, 1.0, 1.0)):
        old = [host(p).copy() for p in dino.teacher.parameters()]
        opt.zero_grad()
        dino.loss_of_views(*crops(6, device))["loss"].backward()
        assert all(p.grad is None and not p.requires_grad for p in dino.teacher.parameters())
        opt.step()
        dino.momentum = base
        dino.after_step(progress)
        for p_old, t, s in zip(old, dino.teacher.parameters(), dino.student.parameters()):
            np.testing.assert_allclose(host(t), p_old * np.float32(m) + host(s) * np.float32(1 - m),
                                       rtol=0, atol=1e-7)


def test_centre_follows_its_ema_after_the_loss_used_the_old_one(device):
    dino = tiny_dino(device, center_momentum=0.8)
    views = crops(5, device)
    for _ in range(3):
        old = host(dino.center).copy()
        with no_grad():   # the teacher in training mode: the same batch gives the same logits
            logits = host(dino.teacher(minienc.ops.concatenate(views[:2])))
        dino.teacher_temperature = 0.05
        terms = dino.loss_of_views(*views)
        np.testing.assert_allclose(host(dino.center), 0.8 * old + 0.2 * logits.mean(0, keepdims=True),
                                   rtol=1e-5, atol=1e-7)
        # the loss is the cross-entropy against the teacher centred with the OLD centre
        p_t = softmax((logits - old) / 0.05)
        with no_grad():   # every crop in one batch (one resolution: one batch-norm group)
            student = np.split(host(dino.student(minienc.ops.concatenate(views))), 4)
        pairs = [-(p_t[g * 5:(g + 1) * 5] * np.log(softmax(student[v] / 0.1))).sum(1).mean()
                 for g in range(2) for v in range(4) if v != g]
        assert terms["loss"].item() == pytest.approx(np.mean(pairs), rel=1e-4)
        assert terms["teacher_entropy"].item() == pytest.approx(float(entropy(p_t)), rel=1e-4)
        assert terms["center_norm"].item() == pytest.approx(np.linalg.norm(host(dino.center)), rel=1e-5)
        assert terms["kl"].item() == pytest.approx(terms["loss"].item() - terms["teacher_entropy"].item(), abs=1e-5)
        assert terms["kl"].item() >= -1e-5
    np.testing.assert_allclose(host(batch_center(t64(logits, device, False))), logits.mean(0, keepdims=True),
                               rtol=1e-5, atol=1e-7)
    # without centring the centre stays at 0
    plain = tiny_dino(device, centering=False)
    plain.loss_of_views(*views)
    assert not np.any(host(plain.center))


def test_student_sees_crops_of_one_resolution_together(device):
    dino = tiny_dino(device)
    views = crops(4, device, 3)
    with no_grad():
        together = host(dino.student(minienc.ops.concatenate(views)))
        logits = [host(t) for t in dino._student_logits(views)]
    np.testing.assert_allclose(np.concatenate(logits), together, rtol=1e-5, atol=1e-6)


def test_state_dict_holds_teacher_and_centre_and_embed_is_the_teacher(device):
    dino = tiny_dino(device)
    dino.loss_of_views(*crops(4, device))
    state = dino.state_dict()
    assert "center" in state and any(k.startswith("teacher.") for k in state)
    other = tiny_dino(device).load_state_dict(state)
    np.testing.assert_array_equal(host(other.center), host(dino.center))
    other.loss_of_views(*crops(4, device))   # the loaded centre is the one that moves
    assert not np.array_equal(host(other.center), host(dino.center))
    x = images(4, device, 9)
    np.testing.assert_array_equal(host(dino.embed(x)), host(dino.teacher_encoder(x)))


def test_exact_resume_restores_teacher_and_centre(tmp_path):
    augment = contrastive_augment()
    multicrop = MultiCrop(2, 2, global_scale=(0.5, 1.0), local_scale=(0.2, 0.5), transform=augment)

    def build():
        return DINO(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8, batch_norm=True)),
                    dino_head(8, 12, 16, 4, batch_norm=True), multicrop, teacher_temperature=0.05,
                    momentum=0.8)

    uninterrupted, resumed = resume_matches(tmp_path, build, steps=3)
    assert list(uninterrupted) == list(resumed) and "center" in uninterrupted
    assert np.any(uninterrupted["center"])
    for key in uninterrupted:
        np.testing.assert_array_equal(uninterrupted[key], resumed[key], err_msg=key)


def test_a_head_that_does_not_say_its_prototypes_is_refused_by_name():
    """Regression (issue 28): a head that is not a Sequential gave a bare AttributeError."""
    from minienc import nn
    from minienc.objectives import DINO

    class Head(nn.Module):
        def forward(self, x):
            return x

    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with pytest.raises(TypeError, match=r"^DINO: the head must end in a layer with out_features"):
        DINO(encoder, Head())
    assert DINO(encoder, nn.Linear(8, 4)).center.shape[-1] == 4   # a bare layer says it
