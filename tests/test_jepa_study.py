"""The JEPA study's bench (minienc/objectives/jepa_study.py): StudyJEPA is IJEPA and
MaskedViewsJEPA loss for loss where its settings say so, every guard against collapse as a
setting (VICReg's terms, SIGReg on each input, the projector, a shared encoder with or without
stop-gradient, no predictor, image-level prediction, layer+batch targets), gradchecks of the
switched objectives on every backend, and every collapse-lab variant built and trained 2 steps.
IJEPA and MaskedViewsJEPA themselves: tests/test_jepa.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import nn
from minienc.objectives.jepa import IJEPA, MaskedViewsJEPA, jepa_loss
from minienc.objectives.jepa_study import (DEFAULT_SETTINGS, IJEPA_SETTINGS, VARIANTS, StudyJEPA,
                                           augmented_views, collapse_variant, halves,
                                           variance_covariance)
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.objectives.sigreg import sigreg
from minienc.optim import AdamW
from nn_check import rand


# ----- the model --------------------------------------------------------------------------------

def _tiny_jepa(device, **options):
    with_device = minienc.get_device()
    minienc.set_device(device)
    try:
        vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=16, depth=1, num_heads=2)
        return StudyJEPA(vit, **dict(dict(predictor_dim=8, predictor_depth=1), **options))
    finally:
        minienc.set_device(with_device)


def _batch(device, b=4, seed=0):
    images = np.random.default_rng(seed).random((b, 1, 8, 8), dtype=np.float32)
    sampler = MultiBlockMaskSampler(4, num_targets=2, target_scale=(0.15, 0.2),
                                    context_scale=(1.0, 1.0), min_context=4, cut="random")
    context, targets = sampler(b, np.random.default_rng(seed))
    return minienc.tensor(images, device=device), context, targets


def _loss(jepa, images, context, targets):
    return jepa.terms(images, context, targets)["loss"]


def test_the_l2_distance_is_the_papers_squared_error(device):
    jepa = _tiny_jepa("cpu", loss="l2")
    pred, target = rand(device, 2, 2, 3, 4, seed=1, scale=1.5), rand(device, 2, 2, 3, 4, seed=2,
                                                                      requires_grad=False)
    assert minienc.gradcheck(lambda p: jepa._distance(p, target), pred)
    d = minienc.backend.to_host(pred.data - target.data)
    assert jepa._distance(pred, target).item() == pytest.approx((d * d).mean(), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(2, 9), d=st.integers(1, 7), scale=st.floats(0.01, 3.0), seed=st.integers(0, 2**16))
def test_variance_covariance_matches_its_formula_and_gradcheck(b, d, scale, seed):
    z = rand("cpu", b, d, seed=seed, scale=scale)
    variance, covariance = variance_covariance(z)
    x = z.data - z.data.mean(0)
    cov = x.T @ x / (b - 1)
    expected_var = np.maximum(0.0, 1.0 - np.sqrt(np.diag(cov) + 1e-4)).mean()
    expected_cov = ((cov ** 2).sum() - (np.diag(cov) ** 2).sum()) / d
    assert variance.item() == pytest.approx(expected_var, rel=1e-9, abs=1e-12)
    assert covariance.item() == pytest.approx(expected_cov, rel=1e-9, abs=1e-12)
    # away from the hinge's kink (std = 1) the finite differences are exact enough
    if np.all(np.abs(np.sqrt(np.diag(cov) + 1e-4) - 1.0) > 1e-3):
        assert minienc.gradcheck(lambda t: sum(variance_covariance(t)), z)


def test_variance_covariance_gradcheck_on_every_backend(device):
    z = rand(device, 6, 4, seed=5, scale=0.3)   # every std below 1: the variance hinge is active
    assert minienc.gradcheck(lambda t: variance_covariance(t)[0] + 0.5 * variance_covariance(t)[1], z)
    # whitened embeddings with unit std cost nothing
    centred = np.random.default_rng(0).standard_normal((8, 3))
    centred -= centred.mean(0)
    white = np.linalg.qr(centred)[0] * np.sqrt(7.0)   # orthonormal, centred columns: Var = 1, Cov = 0
    variance, covariance = variance_covariance(minienc.tensor(white, dtype="float64", device=device))
    assert variance.item() == 0.0 and abs(covariance.item()) < 1e-12
    with pytest.raises(ValueError, match=r"variance_covariance.*\(1, 4\)"):
        variance_covariance(rand(device, 1, 4))


def test_variance_covariance_terms_join_the_loss():
    images, context, targets = _batch("cpu", b=6)
    minienc.manual_seed(0)
    plain = _tiny_jepa("cpu")
    minienc.manual_seed(0)
    regularised = _tiny_jepa("cpu", variance_weight=0.3, covariance_weight=0.2)
    pooled = plain.context_encoder(images, context).mean(axis=1)
    variance, covariance = variance_covariance(pooled)
    expected = _loss(plain, images, context, targets).item() + 0.3 * variance.item() + 0.2 * covariance.item()
    assert _loss(regularised, images, context, targets).item() == pytest.approx(expected, rel=1e-5)
    terms = regularised.terms(images, context, targets)
    assert terms["variance"].item() == pytest.approx(variance.item(), rel=1e-5)
    assert terms["covariance"].item() == pytest.approx(covariance.item(), rel=1e-5)
    assert terms["prediction"].item() == pytest.approx(_loss(plain, images, context, targets).item(), rel=1e-5)
    assert set(plain.terms(images, context, targets)) == {"loss", "prediction"}


def test_whole_objective_gradcheck(device):
    jepa = _tiny_jepa(device, variance_weight=0.5, covariance_weight=0.5)
    images, context, targets = _batch(device, b=2)
    jepa.astype("float64")
    trained = dict(list(jepa.context_encoder.named_parameters("context_encoder."))
                   + list(jepa.predictor.named_parameters("predictor.")))
    names, params = list(trained), list(trained.values())
    images = images.astype("float64") if hasattr(images, "astype") else images

    def fn(*args):
        return nn.functional_call(jepa, dict(zip(names, args)), images, context, targets)

    jepa.forward = lambda images, c, t: jepa.terms(images, c, t)["loss"]
    assert minienc.gradcheck(fn, *params, directions=2)


def test_bad_masks_are_named():
    jepa = _tiny_jepa("cpu")
    images, context, targets = _batch("cpu")
    with pytest.raises(ValueError, match=r"StudyJEPA target_idx: expected \(B, T, K\) patch indices"):
        _loss(jepa, images, context, targets[:, 0])
    with pytest.raises(IndexError, match="StudyJEPA context_idx: patch indices must lie in"):
        _loss(jepa, images, context + 100, targets)
    with pytest.raises(ValueError, match="CLS"):
        StudyJEPA(nn.VisionTransformer(8, 2, dim=16, depth=1, num_heads=2, cls_token=True))


def test_a_short_run_lowers_the_loss():
    minienc.manual_seed(0)
    jepa = _tiny_jepa("cpu")
    opt = AdamW(jepa.param_groups(0.04), lr=3e-3)
    images, context, targets = _batch("cpu", b=16)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = _loss(jepa, images, context, targets)
        loss.backward()
        opt.step()
        jepa.after_step(0.0)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert jepa.embed(images).shape == (16, 16)


def _pooled_std_after_training(seed, weight, steps=40):
    minienc.manual_seed(seed)
    jepa = _tiny_jepa("cpu", variance_weight=weight, covariance_weight=weight, momentum=(0.9, 1.0))
    opt = AdamW(jepa.param_groups(0.04), lr=3e-3)
    images, context, targets = _batch("cpu", b=32, seed=seed)

    def pooled_std():
        with minienc.no_grad():
            return float(jepa.context_encoder(images).mean(axis=1).data.std(0).mean())

    before = pooled_std()
    for _ in range(steps):
        opt.zero_grad()
        _loss(jepa, images, context, targets).backward()
        opt.step()
        jepa.after_step(0.0)
    return before, pooled_std()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_variance_terms_stop_the_collapse(seed):
    """The failure the terms fix, in miniature: plain I-JEPA leaves what varies between images
    tiny (the pooled embeddings' std), with the terms it grows several-fold."""
    before, plain = _pooled_std_after_training(seed, 0.0)
    _, regularised = _pooled_std_after_training(seed, 0.1)
    assert regularised > 5 * before
    assert regularised > 5 * plain


def test_target_norms():
    images, context, targets = _batch("cpu", b=8)
    layer = _tiny_jepa("cpu").targets(images, targets).data                       # (B, T, Kt, D)
    np.testing.assert_allclose(layer.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(layer.var(-1), 1.0, rtol=1e-3)
    jepa = _tiny_jepa("cpu", target_norm="layer+batch")
    all_patches = np.arange(16).reshape(1, 1, 16).repeat(8, 0)
    every = jepa.targets(images, all_patches).data
    jepa.target_norm = "layer"
    layer = jepa.targets(images, all_patches).data
    # each (position, feature) standardised over the images of the batch
    expected = (layer - layer.mean(0)) / np.sqrt(layer.var(0) + 1e-5)
    np.testing.assert_allclose(every, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(every.mean(0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="target_norm"):
        _tiny_jepa("cpu", target_norm="batch")


# ----- the guards as switches: shared encoder, stop-gradient, no predictor, SIGReg ---------------

def _directions(d, m=6, seed=0):
    a = np.random.default_rng(seed).standard_normal((d, m))
    return a / np.linalg.norm(a, axis=0)


def test_a_shared_target_is_the_context_encoder_listed_once():
    jepa = _tiny_jepa("cpu", target_encoder="shared")
    assert jepa.target_encoder is jepa.context_encoder
    ids = [id(p) for p in jepa.parameters()]
    assert len(ids) == len(set(ids)) == len(jepa.context_encoder.parameters()) + len(jepa.predictor.parameters())
    before = [p.data.copy() for p in jepa.context_encoder.parameters()]
    jepa.after_step(0.0)   # its own target: nothing to average
    assert all(np.array_equal(a, p.data) for a, p in zip(before, jepa.context_encoder.parameters()))


def test_stop_gradient_decides_whether_the_targets_train_the_encoder():
    images, context, targets = _batch("cpu", b=6)
    grads = {}
    for stop in (True, False):
        minienc.manual_seed(0)
        jepa = _tiny_jepa("cpu", target_encoder="shared", stop_gradient=stop)
        _loss(jepa, images, context, targets).backward()
        grads[stop] = [p.grad.copy() for p in jepa.context_encoder.parameters()]
        # the loss itself is the same either way: only the gradient's path differs
        if stop:
            value = _loss(jepa, images, context, targets).item()
        else:
            assert _loss(jepa, images, context, targets).item() == pytest.approx(value, rel=1e-6)
    # the patch embedding of a patch that is only ever a target gets a gradient only through
    # the target pass, so the two gradients differ
    assert any(not np.allclose(a, b) for a, b in zip(grads[True], grads[False]))


@pytest.mark.parametrize("on", ["context", "target", "tokens"])
def test_sigreg_term_is_sigreg_of_the_chosen_embeddings(on):
    images, context, targets = _batch("cpu", b=6)
    a = _directions(16)
    minienc.manual_seed(0)
    jepa = _tiny_jepa("cpu", target_encoder="shared", sigreg_weight=0.3, sigreg_on=on)
    terms = jepa.terms(images, context, targets, directions=a)
    with minienc.no_grad():
        ctx = jepa.context_encoder(images, context)
        z = {"context": ctx.mean(axis=1), "target": jepa.context_encoder(images).mean(axis=1),
             "tokens": ctx.reshape(-1, 16)}[on]
        expected = sigreg(z, a).item()
    assert terms["sigreg"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["prediction"].item() + 0.3 * expected, rel=1e-5)


@pytest.mark.parametrize("options", [
    dict(target_encoder="shared", stop_gradient=False, sigreg_weight=0.5, sigreg_on="target"),
    # (a stop-gradient through SHARED weights is not the loss's gradient, so finite differences
    # cannot check it: test_stop_gradient_decides_... covers that switch)
    dict(target_encoder="shared", stop_gradient=False, sigreg_weight=0.5, sigreg_on="tokens",
         target_sees="targets"),
    dict(predictor_depth=0, sigreg_weight=0.5, sigreg_on="context"),
    dict(target_encoder="shared", stop_gradient=False, sigreg_weight=0.5, sigreg_on="projection",
         sigreg_proj_dim=3, sigreg_hidden=5, loss="l2"),
    dict(target_encoder="shared", stop_gradient=False, sigreg_weight=0.5, sigreg_on="projection",
         sigreg_proj_dim=3, sigreg_hidden=5, prediction_level="image"),
    dict(target_encoder="shared", stop_gradient=False, sigreg_weight=0.3, sigreg_on="views",
         sigreg_proj_dim=3, sigreg_hidden=5, target_sees="targets"),
])
def test_switched_objectives_gradcheck(device, options):
    minienc.set_device(device)
    try:
        vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=8, depth=1, num_heads=2)
        options = dict(dict(predictor_dim=4, predictor_depth=1), **options)
        jepa = StudyJEPA(vit, **options)
    finally:
        minienc.set_device("cpu")
    images, context, targets = _batch(device, b=3)
    jepa.astype("float64")
    a = minienc.backend.to_device(_directions(options.get("sigreg_proj_dim") or 8, 4), device)
    parts = {"context_encoder": jepa.context_encoder, "predictor": jepa.predictor,
             "projector": jepa.projector}
    trained = dict(n_p for name, part in parts.items() if part is not None
                   for n_p in part.named_parameters(name + "."))
    names, params = list(trained), list(trained.values())
    images = images.astype("float64")

    def fn(*args):
        with_params = dict(zip(names, args))
        return nn.functional_call(jepa, with_params, images, context, targets)

    jepa.num_directions = 4   # drawn directions would differ between calls: fix them instead
    jepa.forward = lambda images, c, t: jepa.terms(images, c, t, directions=a)["loss"]
    assert minienc.gradcheck(fn, *params, directions=2, atol=1e-4)


def test_target_sees_only_the_target_patches_when_asked():
    images, context, targets = _batch("cpu", b=4)
    jepa = _tiny_jepa("cpu", target_sees="targets")
    b, t, kt = targets.shape
    got = jepa.targets(images, targets).data
    with minienc.no_grad():
        alone = minienc.layer_norm(jepa.target_encoder(images, targets.reshape(b, t * kt)), eps=1e-5).data
    np.testing.assert_allclose(got, alone.reshape(b, t, kt, -1), rtol=1e-5, atol=1e-6)
    full = _tiny_jepa("cpu").targets(images, targets).data
    assert not np.allclose(got, full, atol=1e-3), "a token seen alone differs from one in the image"


def test_no_predictor_matches_pooled_context_to_pooled_targets():
    images, context, targets = _batch("cpu", b=4)
    jepa = _tiny_jepa("cpu", predictor_depth=0)
    assert jepa.predictor is None and len(jepa.param_groups(0.1)[0]["params"]) > 0
    with minienc.no_grad():
        pooled = jepa.context_encoder(images, context).mean(axis=1).data
        want = jepa.targets(images, targets).data.mean(axis=(1, 2))
    d = pooled - want
    expected = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).mean()
    assert _loss(jepa, images, context, targets).item() == pytest.approx(expected, rel=1e-5)


def test_projection_mode_measures_the_prediction_where_sigreg_acts():
    images, context, targets = _batch("cpu", b=6)
    a = _directions(4)
    jepa = _tiny_jepa("cpu", target_encoder="shared", stop_gradient=False, sigreg_weight=0.2,
                      sigreg_on="projection", sigreg_proj_dim=4, loss="l2")
    terms = jepa.terms(images, context, targets, directions=a)
    terms["loss"].backward()
    assert all(p.grad is not None for p in jepa.projector.parameters()), "the projector is trained"
    assert any(id(p) in {id(q) for g in jepa.param_groups(0.1) for q in g["params"]}
               for p in jepa.projector.parameters())
    with minienc.no_grad():
        jepa.projector.train()
        ctx = jepa.context_encoder(images, context)
        pred = jepa.predictor(ctx, context, targets).data.reshape(-1, 16)
        targ = jepa.targets(images, targets).data.reshape(-1, 16)
        z = jepa.projector(minienc.tensor(np.concatenate([pred, targ]))).data.reshape(2, 6, -1, 4)
    np.testing.assert_allclose(terms["prediction"].item(), ((z[0] - z[1]) ** 2).mean(), rtol=1e-4)
    expected = sigreg(minienc.tensor(z.mean(axis=2)), a).item()
    np.testing.assert_allclose(terms["sigreg"].item(), expected, rtol=1e-4)


def test_views_mode_adds_lejepa_between_the_pooled_views_to_the_prediction_loss():
    from minienc.objectives.lejepa import lejepa_terms
    images, context, targets = _batch("cpu", b=6)
    a = _directions(4)
    minienc.manual_seed(0)
    jepa = _tiny_jepa("cpu", target_encoder="shared", stop_gradient=False, sigreg_weight=0.2,
                      sigreg_on="views", sigreg_proj_dim=4)
    terms = jepa.terms(images, context, targets, directions=a)
    with minienc.no_grad():
        ctx = jepa.context_encoder(images, context)
        full = jepa.context_encoder(images)
        plain = jepa_loss(jepa.predictor(ctx, context, targets), jepa.targets(images, targets)).item()
        z = jepa.projector(minienc.ops.concatenate([ctx.mean(axis=1), full.mean(axis=1)])).reshape(2, 6, 4)
        want = lejepa_terms(z, lam=0.2, directions=a)
    assert terms["prediction"].item() == pytest.approx(plain, rel=1e-5)
    assert terms["invariance"].item() == pytest.approx(want["prediction"].item(), rel=1e-4)
    assert terms["sigreg"].item() == pytest.approx(want["sigreg"].item(), rel=1e-4)
    assert terms["loss"].item() == pytest.approx(plain + want["loss"].item(), rel=1e-4)
    # without a predictor, the views mode is LeJEPA between the two views and nothing else
    minienc.manual_seed(0)
    alone = _tiny_jepa("cpu", target_encoder="shared", stop_gradient=False, sigreg_weight=0.2,
                       sigreg_on="views", sigreg_proj_dim=4, predictor_depth=0)
    alone.context_encoder, alone.target_encoder, alone.projector = (jepa.context_encoder,
                                                                    jepa.context_encoder, jepa.projector)
    terms = alone.terms(images, context, targets, directions=a)
    assert "prediction" not in terms and terms["loss"].item() == pytest.approx(want["loss"].item(), rel=1e-4)
    with pytest.raises(ValueError, match="StudyJEPA: sigreg_on='views' trains both views"):
        _tiny_jepa("cpu", sigreg_weight=0.2, sigreg_on="views", sigreg_proj_dim=4)


def test_image_level_prediction_pools_predictions_and_targets_per_image():
    images, context, targets = _batch("cpu", b=4)
    jepa = _tiny_jepa("cpu", prediction_level="image", loss="l2")
    with minienc.no_grad():
        pred = jepa.predictor(jepa.context_encoder(images, context), context, targets).data
        want = jepa.targets(images, targets).data
    expected = ((pred.mean(axis=(1, 2)) - want.mean(axis=(1, 2))) ** 2).mean()
    assert _loss(jepa, images, context, targets).item() == pytest.approx(expected, rel=1e-5)


def test_switch_errors_are_named():
    with pytest.raises(ValueError, match="EMA target encoder never gets a gradient"):
        _tiny_jepa("cpu", stop_gradient=False)
    with pytest.raises(ValueError, match="SIGReg on the target pass needs"):
        _tiny_jepa("cpu", sigreg_weight=0.1, sigreg_on="target")
    with pytest.raises(ValueError, match="sigreg_on must be one of"):
        _tiny_jepa("cpu", sigreg_on="pixels")
    with pytest.raises(ValueError, match="target_encoder must be one of"):
        _tiny_jepa("cpu", target_encoder="frozen")
    with pytest.raises(ValueError, match="needs a projector"):
        _tiny_jepa("cpu", sigreg_weight=0.1, sigreg_on="projection")


# ----- the bench is the two objectives where its settings say so ----------------------------------

def _vit(dim=16):
    return nn.VisionTransformer(image_size=8, patch_size=2, dim=dim, depth=1, num_heads=2)


def test_the_default_settings_are_masked_views_jepa_loss_for_loss():
    images = minienc.tensor(np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32))

    def augment(x):   # a random brightness: each view its own draw from the seeded stream
        return x * minienc.tensor(minienc.backend.rng("cpu").random((x.shape[0], 1, 1, 1), dtype=np.float32) + 0.5)

    losses = {}
    for kind in ("study", "objective"):
        minienc.manual_seed(0)
        vit = _vit()
        if kind == "study":
            jepa = StudyJEPA(vit, predictor_dim=8, predictor_depth=1, masks=halves(16),
                             views=augmented_views(augment), **DEFAULT_SETTINGS)
        else:
            jepa = MaskedViewsJEPA(vit, predictor_dim=8, predictor_depth=1, augment=augment)
        opt = AdamW(jepa.param_groups(0.04), lr=1e-2)
        losses[kind] = []
        for _ in range(3):
            terms = jepa.loss(images)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            losses[kind].append({k: v.item() for k, v in terms.items()})
    assert losses["study"] == losses["objective"]
    assert set(losses["study"][0]) == {"loss", "prediction", "invariance", "sigreg"}


def test_the_ijepa_settings_are_ijepa_loss_for_loss():
    images = minienc.tensor(np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32))
    sampler = MultiBlockMaskSampler(4, num_targets=2, context_scale=(1.0, 1.0), min_context=4, cut="random")
    losses, embeddings = {}, {}
    for kind, make in (("study", StudyJEPA), ("objective", IJEPA)):
        minienc.manual_seed(0)
        extra = IJEPA_SETTINGS if make is StudyJEPA else {}
        jepa = make(_vit(), predictor_dim=8, predictor_depth=1, masks=sampler, momentum=(0.9, 1.0), **extra)
        opt = AdamW(jepa.param_groups(0.04), lr=1e-2)
        losses[kind] = []
        for step in range(3):
            loss = jepa.loss(images)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            jepa.after_step(step / 3)
            losses[kind].append(loss.item())
        embeddings[kind] = jepa.embed(images).data
    assert losses["study"] == losses["objective"]
    np.testing.assert_array_equal(embeddings["study"], embeddings["objective"])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_collapse_lab_variant_builds_and_trains_two_steps(name):
    """demos/collapse.py's variants, on a tiny ViT: each one's loss is finite, its trained
    parameters move, a target network is never among them, and its embedding keeps its shape."""
    minienc.manual_seed(0)
    vit = _vit()
    images = minienc.tensor(np.random.default_rng(2).random((8, 1, 8, 8), dtype=np.float32))
    model, groups, decay = collapse_variant(name, vit, lambda x: x * 2.0 - 1.0, lambda x: x, 1)
    opt = AdamW(groups, lr=1e-2)
    trained = [p for g in groups for p in g["params"]]
    assert all(p.requires_grad for p in trained) and trained
    target = getattr(model, "target_encoder", vit)
    frozen = [] if target is vit else target.parameters()
    assert not {id(p) for p in frozen} & {id(p) for p in trained}, "a target network is trained"
    before = [p.data.copy() for p in trained]
    for step in range(2):
        terms = model.loss(images)
        assert np.isfinite(terms["loss"].item()), (name, terms)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        model.after_step(step / 2)
    assert any(not np.array_equal(a, p.data) for a, p in zip(before, trained))
    assert model.embed(images).shape == (8, 16)
    assert decay is None or decay == (0.04, 0.4)


def test_without_masks_only_terms_can_be_called():
    jepa = _tiny_jepa("cpu")
    images, context, targets = _batch("cpu")
    assert np.isfinite(_loss(jepa, images, context, targets).item())
    with pytest.raises(ValueError, match="StudyJEPA: loss\\(images\\) draws its masks with `masks`"):
        jepa.loss(images)
