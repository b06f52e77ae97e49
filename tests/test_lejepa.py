"""LeJEPA: the loss against its formula (centre of the global views, SIGReg view by view, the
lambda mix), gradchecks of the loss and of the whole model (ViT + BatchNorm projector) on every
backend with fixed SIGReg directions, masked views, the protocol's loss(images) drawing the
views it is told to, and a short run on digits whose loss falls while the projections' rank
grows."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from minienc.data import load_dataset
from minienc.eval import rankme
from minienc.objectives.lejepa import LeJEPA, lejepa_terms
from minienc.objectives.sigreg import sigreg
from minienc.optim import AdamW
from nn_check import gradcheck_module, rand


def _directions(k, m, seed=0):
    a = np.random.default_rng(seed).standard_normal((k, m))
    return a / np.linalg.norm(a, axis=0)


def _tiny_vit(image=4, patch=2, dim=8):
    return nn.VisionTransformer(image_size=image, patch_size=patch, dim=dim, depth=1, num_heads=2,
                                weight_init="xavier")


@settings(max_examples=15)
@given(vg=st.integers(1, 3), vl=st.integers(0, 3), b=st.integers(2, 6), k=st.integers(1, 4),
       lam=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_terms_match_the_formula(vg, vl, b, k, lam, seed):
    rng = np.random.default_rng(seed)
    g, loc = rng.standard_normal((vg, b, k)), rng.standard_normal((vl, b, k))
    a = _directions(k, 5, seed)
    out = lejepa_terms(minienc.tensor(g, dtype="float64"),
                       minienc.tensor(loc, dtype="float64") if vl else None, lam, a)
    views = np.concatenate([g, loc]) if vl else g
    centre = g.mean(axis=0)                            # the GLOBAL views' mean only
    prediction = ((views - centre) ** 2).mean()
    reg = float(sigreg(minienc.tensor(views, dtype="float64"), a).data)
    np.testing.assert_allclose(float(out["prediction"].data), prediction, rtol=1e-10)
    np.testing.assert_allclose(float(out["sigreg"].data), reg, rtol=1e-10)
    np.testing.assert_allclose(float(out["loss"].data), (1 - lam) * prediction + lam * reg, rtol=1e-10)
    if vl == 0 and vg == 1:
        assert float(out["prediction"].data) == 0.0, "one view is its own centre"


def test_lejepa_terms_gradcheck(device):
    g, loc = rand(device, 2, 5, 3, seed=1), rand(device, 2, 5, 3, seed=2)
    a = backend.to_device(_directions(3, 4), device)
    assert minienc.gradcheck(lambda g, loc: lejepa_terms(g, loc, 0.3, a)["loss"], g, loc)


def test_lejepa_model_gradcheck_with_augmented_and_masked_views(device):
    """The whole model, every parameter (ViT, projector with BatchNorm in train mode)."""
    minienc.set_device(device)
    try:
        model = LeJEPA(_tiny_vit(), proj_dim=3, hidden=6, lam=0.2)
        model.forward = lambda *args: model.loss_of_views(*args)["loss"]   # the loss of given views
        x = np.random.default_rng(0).random((2, 4, 1, 4, 4))        # V = 2 views of B = 4
        views = backend.to_device(x, device)
        a = backend.to_device(_directions(3, 4), device)
        assert gradcheck_module(model, views, None, None, None, a, atol=1e-4)
        masks = backend.to_device(np.array([[[0, 1], [1, 2], [2, 3], [0, 3]],
                                            [[2, 3], [0, 2], [1, 3], [0, 1]]]), device)
        assert gradcheck_module(model, views[0], None, masks, None, a, atol=1e-4)
    finally:
        minienc.set_device("cpu")


def test_masked_views_see_only_their_patches_and_local_views_join_the_loss():
    model = LeJEPA(_tiny_vit(image=4), proj_dim=3, hidden=6)
    model.eval()   # BatchNorm on running stats: each image's projection depends on it alone
    x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    keep = np.array([[0, 1]] * 4)
    z = model.project_views(x, masks=[keep, keep])
    direct = model.projector(model.encoder(x, keep).mean(axis=1))
    np.testing.assert_allclose(z.data[0], direct.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z.data[1], direct.data, rtol=1e-5, atol=1e-6)
    # a masked view differs from the whole image, and a hidden patch's content does not matter
    assert not np.allclose(z.data[0], model.projector(model.embed(x)).data, atol=1e-4)
    y = x.copy()
    y[:, :, 2:, 2:] = 0.0       # patch 3 is never kept
    np.testing.assert_allclose(model.project_views(y, masks=[keep])[0].data, z.data[0], rtol=1e-6)
    a = _directions(3, 8)
    same = model.loss_of_views([x, x], directions=a)
    assert float(same["prediction"].data) < 1e-10, "identical views predict their centre exactly"
    with_local = model.loss_of_views([x, x], local_views=[x[:, :, ::-1].copy()], directions=a)
    assert float(with_local["prediction"].data) > 1e-4


def test_loss_draws_the_views_it_is_told_to():
    """The protocol's loss(images): num_views augmentations (and num_local_views local ones), or
    one augmentation seen through num_views masks keeping mask_keep of the patches."""
    drawn = []

    def augment(tag):
        return lambda x: drawn.append(tag) or x
    x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    model = LeJEPA(_tiny_vit(), proj_dim=3, hidden=6, augment=augment("global"), num_views=3,
                   local_augment=augment("local"), num_local_views=2)
    terms = model.loss(x)
    assert drawn == ["global"] * 3 + ["local"] * 2 and set(terms) == {"loss", "prediction", "sigreg"}
    drawn.clear()
    masked = LeJEPA(_tiny_vit(), proj_dim=3, hidden=6, augment=augment("once"), num_views=4,
                    mask_keep=0.5, num_local_views=1, local_keep=0.25)
    seen = []
    encoder = masked.encoder.forward
    masked.encoder.forward = lambda images, idx=None: seen.append(None if idx is None else idx.shape) \
        or encoder(images, idx)
    masked.loss(x)
    assert drawn == ["once"] and seen == [(16, 2), (4, 1)]   # 4 views x 4 images, then 1 local
    assert all(p.requires_grad for g in masked.param_groups(0.05) for p in g["params"])
    with pytest.raises(ValueError, match="LeJEPA: num_local_views augmented views need a local_augment"):
        LeJEPA(_tiny_vit(), num_local_views=2)


def test_bad_input_is_a_clear_error():
    model = LeJEPA(_tiny_vit(), proj_dim=3, hidden=6)
    x = np.zeros((4, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"LeJEPA: views must be V image batches"):
        model.loss_of_views(x)
    with pytest.raises(ValueError, match=r"LeJEPA: no views"):
        model.loss_of_views([])
    with pytest.raises(ValueError, match=r"LeJEPA: masks must be \(V, B, K\) = \(2, 4, K\)"):
        model.loss_of_views(x, masks=[np.zeros((3, 2), np.int64)] * 2)
    with pytest.raises(ValueError, match="lam must be in"):
        LeJEPA(_tiny_vit(), lam=1.5)
    with pytest.raises(ValueError, match="embed_dim"):
        LeJEPA(nn.Flatten())
    z = minienc.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"lejepa: local views \(2, 5, 3\) must be"):
        lejepa_terms(z, minienc.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"lejepa: expected global views"):
        lejepa_terms(minienc.zeros(4, 3))


def test_short_run_on_digits_lowers_the_loss_and_keeps_the_rank():
    minienc.manual_seed(0)
    data = load_dataset("digits")
    model = LeJEPA(nn.VisionTransformer(image_size=8, patch_size=2, dim=32, depth=1, num_heads=2,
                                        weight_init="xavier"), proj_dim=16, hidden=64, lam=0.05,
                   num_views=2, mask_keep=0.5)
    opt = AdamW(model.param_groups(0.05), lr=2e-3)
    x = data.x_train[:128]

    def projected_rank():   # what SIGReg shapes: the projector's output, on running BN stats
        model.eval()
        with minienc.no_grad():
            z = model.projector(model.embed(data.x_test[:256])).data
        model.train()
        return rankme(z)

    before = projected_rank()
    losses = []
    for step in range(30):
        loss = model.loss(x)["loss"]   # two masked views, each half of the patches
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert projected_rank() > 2 * before, (before, projected_rank())
