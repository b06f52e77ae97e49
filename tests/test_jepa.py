"""IJEPA and MaskedViewsJEPA (minienc/objectives/jepa.py) on the Objective protocol: the loss
matches its formula, gradchecks in float64 on every backend, the target encoder is never
trained nor among the param_groups, after_step moves it by the EMA (not at all with momentum 1),
the masks have the sizes asked, the predictor follows target positions, and a short run
lowers the loss. The study's variants: tests/test_jepa_study.py; the sampler:
tests/test_multiblock.py."""
import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.objectives import IJEPA, MaskedViewsJEPA
from minienc.objectives.protocol import Objective
from minienc.objectives.jepa import JEPAPredictor, jepa_loss
from minienc.objectives.lejepa import lejepa_terms
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.optim import AdamW
from nn_check import gradcheck_module, rand

HOST = minienc.backend.to_host


def _vit(device, dim=16):
    with_device = minienc.get_device()
    minienc.set_device(device)
    try:
        return nn.VisionTransformer(image_size=8, patch_size=2, dim=dim, depth=1, num_heads=2)
    finally:
        minienc.set_device(with_device)


def _sampler(**options):
    return MultiBlockMaskSampler(4, **dict(dict(num_targets=2, context_scale=(1.0, 1.0),
                                                min_context=4, cut="random"), **options))


def _ijepa(device, **options):
    with_device = minienc.get_device()
    minienc.set_device(device)
    try:
        return IJEPA(_vit(device), **dict(dict(predictor_dim=8, predictor_depth=1, masks=_sampler()),
                                           **options))
    finally:
        minienc.set_device(with_device)


def _images(device, b=4, seed=0, dtype="float32"):
    return minienc.tensor(np.random.default_rng(seed).random((b, 1, 8, 8)), dtype=dtype, device=device)


def _trained(objective):
    return {id(p) for g in objective.param_groups(0.04) for p in g["params"]}


# ----- IJEPA ---------------------------------------------------------------------------------------

def test_ijepa_speaks_the_protocol_and_never_trains_its_target(device):
    jepa = _ijepa(device)
    assert isinstance(jepa, Objective)
    terms = jepa.loss(_images(device))
    assert set(terms) == {"loss"} and terms["loss"].ndim == 0
    terms["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in jepa.target_encoder.parameters())
    assert all(p.grad is not None for p in jepa.predictor.parameters())
    assert all(p.grad is not None for p in jepa.context_encoder.parameters())
    assert not _trained(jepa) & {id(p) for p in jepa.target_encoder.parameters()}
    assert _trained(jepa) == {id(p) for m in (jepa.context_encoder, jepa.predictor) for p in m.parameters()}
    no_decay = [g for g in jepa.param_groups(0.04) if g["weight_decay"] == 0.0][0]["params"]
    assert no_decay and all(p.ndim == 1 for p in no_decay), "biases and norms are not decayed"
    assert jepa.embed(_images(device)).shape == (4, 16)


def test_ijepa_loss_is_its_formula():
    """s_y = LN(target encoder(whole image)) at the target patches, s_hat = g(f(x_C), pos(B_i)),
    L = mean smooth_l1(s_hat - s_y), recomputed here by hand."""
    jepa = _ijepa("cpu")
    images = _images("cpu")
    context, targets = _sampler()(4, np.random.default_rng(0))
    got = jepa.loss(images, masks=(context, targets))["loss"].item()
    with minienc.no_grad():
        s_y = minienc.layer_norm(jepa.target_encoder(images), eps=1e-5).data      # (B, N, D)
        s_y = s_y[np.arange(4)[:, None, None], targets]                             # (B, T, Kt, D)
        s_hat = jepa.predictor(jepa.context_encoder(images, context), context, targets).data
    d = s_hat - s_y
    assert got == pytest.approx(np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).mean(), rel=1e-5)


def test_ijepa_draws_its_masks_with_the_sizes_asked():
    jepa = _ijepa("cpu", masks=_sampler(num_targets=3, target_scale=(0.25, 0.25), target_aspect=(1, 1)))
    drawn = []
    sampler = jepa.masks
    jepa.masks = lambda b: drawn.append(sampler(b)) or drawn[-1]
    jepa.loss(_images("cpu", b=5))
    context, targets = drawn[0]
    assert targets.shape == (5, 3, 4)            # 3 blocks of 2x2 = 25% of the 4x4 grid
    assert context.shape[0] == 5 and 4 <= context.shape[1] <= 16 - 4
    for c, t in zip(context, targets):
        assert not set(c.tolist()) & set(t.ravel().tolist()), "no target patch is context"
    default = IJEPA(_vit("cpu"), predictor_dim=8, predictor_depth=1)
    assert default.masks.num_targets == 4 and default.masks.target_scale == (0.15, 0.2)


def test_after_step_is_the_ema_with_a_linear_momentum(device):
    jepa = _ijepa(device, momentum=(0.9, 1.0))
    opt = AdamW(jepa.param_groups(0.04), lr=1e-2)
    images = _images(device)
    for progress, m in ((0.0, 0.9), (0.5, 0.95), (1.0, 1.0)):
        old = [HOST(p.data).copy() for p in jepa.target_encoder.parameters()]
        opt.zero_grad()
        jepa.loss(images)["loss"].backward()
        opt.step()
        jepa.after_step(progress)
        for p_old, t, o in zip(old, jepa.target_encoder.parameters(), jepa.context_encoder.parameters()):
            expected = p_old * np.float32(m) + HOST(o.data) * np.float32(1.0 - m)
            np.testing.assert_allclose(HOST(t.data), expected, rtol=0, atol=1e-7)
            if m == 1.0:   # momentum 1: the target stays exactly where it was
                np.testing.assert_array_equal(HOST(t.data), p_old)
    assert any(not np.array_equal(HOST(t.data), HOST(o.data)) for t, o in
               zip(jepa.target_encoder.parameters(), jepa.context_encoder.parameters()))


def test_ijepa_gradcheck(device):
    """Float64, with respect to every trained parameter (context encoder and predictor)."""
    jepa = _ijepa(device)
    jepa.astype("float64")
    images = _images(device, b=2, dtype="float64")
    masks = _sampler()(2, np.random.default_rng(1))
    trained = dict(list(jepa.context_encoder.named_parameters("context_encoder."))
                   + list(jepa.predictor.named_parameters("predictor.")))
    names = list(trained)
    jepa.forward = lambda x: jepa.loss(x, masks=masks)["loss"]

    def fn(*params):
        return nn.functional_call(jepa, dict(zip(names, params)), images)

    assert minienc.gradcheck(fn, *trained.values(), directions=2)


def test_given_masks_are_checked_once_with_clear_errors():
    jepa = _ijepa("cpu")
    images = _images("cpu")
    context, targets = _sampler()(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"IJEPA target_idx: expected \(B, T, K\) patch indices, got shape \(4, 1\)"):
        jepa.loss(images, masks=(context, targets[:, 0]))
    with pytest.raises(IndexError, match=r"IJEPA context_idx: patch indices must lie in \[0, 16\)"):
        jepa.loss(images, masks=(context + 100, targets))
    with pytest.raises(ValueError, match=r"IJEPA target_idx: patch indices must be \(B, K\) = \(4, K\)"):
        jepa.loss(images, masks=(context, targets[:3]))
    with pytest.raises(ValueError, match="jepa_loss"):
        jepa_loss(rand("cpu", 2, 3), rand("cpu", 3, 2))
    with pytest.raises(ValueError, match="IJEPA: the encoder must be a VisionTransformer without a CLS"):
        IJEPA(nn.VisionTransformer(8, 2, dim=16, depth=1, num_heads=2, cls_token=True))
    with pytest.raises(ValueError, match="JEPAPredictor"):
        jepa.predictor(jepa.encoder(images, context), context[:, :2], targets)


def test_a_short_ijepa_run_lowers_the_loss():
    jepa = _ijepa("cpu")
    opt = AdamW(jepa.param_groups(0.04), lr=3e-3)
    images = _images("cpu", b=16)
    masks = _sampler()(16, np.random.default_rng(0))
    losses = []
    for step in range(30):
        opt.zero_grad()
        loss = jepa.loss(images, masks=masks)["loss"]
        loss.backward()
        opt.step()
        jepa.after_step(step / 30)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ----- the predictor -------------------------------------------------------------------------------

def test_predictions_follow_the_target_positions(device):
    jepa = _ijepa(device)
    images = _images(device)
    context, targets = _sampler()(4, np.random.default_rng(0))
    ctx, tgt = (minienc.backend.to_device(a, device) for a in (context, targets))
    tokens = jepa.context_encoder(images, ctx)
    with minienc.no_grad():
        base = HOST(jepa.predictor(tokens, ctx, tgt).data)
        perm = np.random.default_rng(3).permutation(targets.shape[2])
        permuted = HOST(jepa.predictor(tokens, ctx, tgt[:, :, perm]).data)
        swapped = HOST(jepa.predictor(tokens, ctx, tgt[:, ::-1]).data)
        other = targets.copy()
        other[:, 1] = (other[:, 1] + 1) % 16   # move block 1 only
        moved = HOST(jepa.predictor(tokens, ctx, minienc.backend.to_device(other, device)).data)
    np.testing.assert_allclose(permuted, base[:, :, perm], atol=1e-5)
    np.testing.assert_allclose(swapped, base[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(moved[:, 0], base[:, 0], atol=1e-5,
                               err_msg="blocks of one image must not see each other")
    assert not np.allclose(moved[:, 1], base[:, 1]), "position changes the prediction"


def test_predictor_gradcheck(device):
    minienc.set_device(device)
    try:
        predictor = JEPAPredictor((3, 3), embed_dim=8, dim=4, depth=1, num_heads=2)
    finally:
        minienc.set_device("cpu")
    context_idx = minienc.backend.to_device(np.array([[0, 2, 4], [1, 5, 8]]), device)
    target_idx = minienc.backend.to_device(np.array([[[6, 7], [3, 7]], [[0, 3], [4, 7]]]), device)
    assert gradcheck_module(predictor, rand(device, 2, 3, 8), context_idx, target_idx)


def test_jepa_loss_gradcheck_and_values(device):
    pred, target = rand(device, 2, 2, 3, 4, seed=1, scale=1.5), rand(device, 2, 2, 3, 4, seed=2,
                                                                      requires_grad=False)
    assert minienc.gradcheck(lambda p: jepa_loss(p, target), pred)
    d = HOST(pred.data - target.data)
    expected = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)
    assert jepa_loss(pred, target).item() == pytest.approx(expected.mean(), rel=1e-9)


# ----- MaskedViewsJEPA -----------------------------------------------------------------------------

def _masked_views(device, **options):
    minienc.set_device(device)
    try:
        return MaskedViewsJEPA(_vit(device), **dict(dict(predictor_dim=8, predictor_depth=1, proj_dim=4,
                                                          hidden=8, num_directions=6), **options))
    finally:
        minienc.set_device("cpu")


def _halves(b, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(np.argsort(rng.random((b, 16)), axis=1)[:, :8] for _ in range(2))


def _directions(d, m=6, seed=0):
    a = np.random.default_rng(seed).standard_normal((d, m))
    return a / np.linalg.norm(a, axis=0)


def test_masked_views_loss_is_its_formula():
    """prediction = smooth_l1(g(f(x1_C), pos(T)), sg(LN(f(x2_T)))); LeJEPA between the pooled,
    projected views; loss = prediction + LeJEPA's loss. Without augment both views are x."""
    jepa = _masked_views("cpu")
    images = _images("cpu", b=6)
    context, target = _halves(6)
    a = _directions(4)
    terms = jepa.loss(images, masks=(context, target), directions=a)
    with minienc.no_grad():
        h_t = jepa.encoder(images, target)
        h_c = jepa.encoder(images, context)
        s_y = minienc.layer_norm(h_t, eps=1e-5).data[:, None]
        s_hat = jepa.predictor(h_c, context, target[:, None]).data
        z = jepa.projector(minienc.ops.concatenate([h_c.mean(axis=1), h_t.mean(axis=1)])).reshape(2, 6, 4)
        want = lejepa_terms(z, lam=0.02, directions=a)
    d = s_hat - s_y
    prediction = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).mean()
    assert terms["prediction"].item() == pytest.approx(prediction, rel=1e-5)
    assert terms["invariance"].item() == pytest.approx(want["prediction"].item(), rel=1e-4)
    assert terms["sigreg"].item() == pytest.approx(want["sigreg"].item(), rel=1e-4)
    assert terms["loss"].item() == pytest.approx(prediction + want["loss"].item(), rel=1e-4)


def test_masked_views_draw_two_halves_of_two_views():
    seen = []

    def augment(x):
        seen.append(x)
        return x
    jepa = _masked_views("cpu", augment=augment, keep=0.25)
    calls = []
    encoder = jepa.encoder.forward
    jepa.encoder.forward = lambda x, idx=None: calls.append(idx) or encoder(x, idx)
    jepa.loss(_images("cpu", b=3))
    assert len(seen) == 2, "two views per batch"
    assert [HOST(idx).shape for idx in calls] == [(3, 4), (3, 4)]   # a quarter of 16 patches each
    assert isinstance(jepa, Objective) and not [p for g in jepa.param_groups(0.1) for p in g["params"]
                                                if not p.requires_grad]


def test_masked_views_targets_are_constants():
    """The prediction term's gradient reaches the encoder through the context view alone: it
    equals the gradient of the same term with the target view's tokens computed beforehand."""
    jepa = _masked_views("cpu")
    images = _images("cpu", b=4)
    context, target = _halves(4, seed=1)
    with minienc.no_grad():
        s_y = minienc.layer_norm(jepa.encoder(images, target), eps=1e-5)
    h_c = jepa.encoder(images, context)
    jepa_loss(jepa.predictor(h_c, context, target[:, None]), s_y.reshape(4, 1, 8, 16)).backward()
    want = [p.grad.copy() for p in jepa.encoder.parameters()]
    for p in jepa.parameters():
        p.grad = None
    jepa.loss(images, masks=(context, target), directions=_directions(4))["prediction"].backward()
    for w, p in zip(want, jepa.encoder.parameters()):
        np.testing.assert_allclose(p.grad, w, rtol=1e-5, atol=1e-7)


def test_masked_views_gradcheck(device):
    """Float64. The whole loss with respect to the predictor and the projector (the stop-gradient
    path holds none of them); LeJEPA's terms with respect to every parameter. (Finite differences
    of the whole loss in the encoder would also move the stop-gradient targets, which the
    gradient rightly ignores: test_masked_views_targets_are_constants checks that path.)"""
    jepa = _masked_views(device)
    jepa.astype("float64")
    images = _images(device, b=4, dtype="float64")
    masks = _halves(4, seed=2)
    a = minienc.backend.to_device(_directions(4), device)
    for parts, term in ((("predictor", "projector"), "loss"), (("encoder", "projector"), "lejepa")):
        trained = dict(n_p for name in parts for n_p in getattr(jepa, name).named_parameters(name + "."))
        names = list(trained)

        def forward(x, term=term):
            terms = jepa.loss(x, masks=masks, directions=a)
            return terms["loss"] if term == "loss" else \
                (1 - jepa.lam) * terms["invariance"] + jepa.lam * terms["sigreg"]
        jepa.forward = forward

        def fn(*params):
            return nn.functional_call(jepa, dict(zip(names, params)), images)
        assert minienc.gradcheck(fn, *trained.values(), directions=2, atol=1e-4), (parts, term)
