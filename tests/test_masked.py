"""Masked modeling (minienc/objectives/masked_*.py): MAE's per-sample masking keeps exactly the
requested number of patches and ids_restore undoes its shuffle, the loss sees only removed
patches, the encoder sees only visible ones; BERT's token masking chooses exactly round(15%) of
the real tokens, never a special or padding token, and splits them 80/10/10; both losses and the
models they train pass gradcheck on every backend."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
import minienc.data
import minienc.optim
from minienc import backend, nn
from minienc.objectives import (MAE, MaskedLanguageModel, mae_loss, mask_tokens, mlm_loss, patch_targets,
                                random_masking)
from minienc.objectives.masked_language import IGNORE_INDEX, max_predictions_for
from nn_check import gradcheck_module, rand


def host(t):
    return t.numpy() if isinstance(t, minienc.Tensor) else backend.to_host(t)


def small_mae(device, **kw):
    options = dict(image_size=4, patch_size=2, in_channels=1, dim=8, depth=1, num_heads=2,
                   decoder_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)
    options.update(kw)
    minienc.set_device(device)
    try:
        return MAE(**options)
    finally:
        minienc.set_device("cpu")


# ----- MAE: masking ---------------------------------------------------------------------------

@given(batch=st.integers(1, 6), num_patches=st.integers(2, 50), ratio=st.floats(0.0, 0.95))
def test_random_masking_keeps_exactly_k_and_restore_inverts_the_shuffle(batch, num_patches, ratio):
    keep = int(num_patches * (1.0 - ratio))
    if not 1 <= keep <= num_patches - 1:   # at least one patch kept and one removed
        with pytest.raises(ValueError, match="random_masking"):
            random_masking(batch, num_patches, ratio, "cpu")
        return
    ids_keep, ids_restore, mask = random_masking(batch, num_patches, ratio, "cpu")
    assert ids_keep.shape == (batch, keep) and ids_restore.shape == mask.shape == (batch, num_patches)
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask.sum(axis=1), num_patches - keep)   # exactly N - K removed
    for b in range(batch):
        assert len(set(ids_keep[b].tolist())) == keep
        assert (mask[b, ids_keep[b]] == 0).all()                           # kept = not masked
    shuffle = np.argsort(ids_restore, axis=1)
    np.testing.assert_array_equal(shuffle[:, :keep], ids_keep)
    x = np.random.default_rng(0).standard_normal((batch, num_patches))
    shuffled = np.take_along_axis(x, shuffle, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(shuffled, ids_restore, axis=1), x)


def test_random_masking_differs_per_sample_and_follows_the_seed(device):
    minienc.manual_seed(3)
    a = [host(m) for m in random_masking(64, 16, 0.75, device)]
    minienc.manual_seed(3)
    b = [host(m) for m in random_masking(64, 16, 0.75, device)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert len({tuple(row) for row in a[2]}) > 50   # 1820 possible masks: rows differ
    freq = a[2].mean(axis=0)                         # every patch removed ~75% of the time
    assert np.all(np.abs(freq - 0.75) < 0.25)


def test_random_masking_errors_name_the_function():
    with pytest.raises(ValueError, match=r"random_masking: mask_ratio must be in \(0.0, 1.0\), got 1.0"):
        random_masking(2, 16, 1.0, "cpu")
    with pytest.raises(ValueError, match=r"random_masking: mask_ratio 0.75 of 2 patches keeps 0; it "
                                         r"must keep at least 1 patch and remove at least 1"):
        random_masking(2, 2, 0.75, "cpu")
    with pytest.raises(ValueError, match=r"random_masking: mask_ratio 1e-17 of 16 patches keeps 16"):
        random_masking(2, 16, 1e-17, "cpu")   # 1 - 1e-17 rounds to 1: nothing removed
    with pytest.raises(ValueError, match=r"random_masking: batch must be a positive integer, got 0"):
        random_masking(0, 16, 0.75, "cpu")


@pytest.mark.parametrize("ratio", [0.0, 1e-17, 0.99, 1.0])   # 16 patches: 16, 16, 0, 0 kept
def test_mae_refuses_a_mask_ratio_that_keeps_or_removes_nothing(ratio):
    with pytest.raises(ValueError, match=r"^MAE: mask_ratio"):
        MAE(image_size=4, patch_size=1, dim=8, depth=1, num_heads=2, mask_ratio=ratio)


def test_mae_names_what_a_custom_encoder_lacks():
    """Regression: an encoder without ViT's patch attributes failed with a bare AttributeError
    ('Sequential' object has no attribute 'patch_embed')."""
    with pytest.raises(TypeError, match=r"^MAE: encoder Sequential lacks patch_embed.patch_size, "
                                        r"patch_embed.in_channels, num_patches, grid_size, dim"):
        MAE(encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 8)))
    vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=8, depth=1, num_heads=2)
    assert MAE(encoder=vit, decoder_dim=8, decoder_num_heads=2).encoder is vit


def test_mae_loss_refuses_an_empty_mask():
    pred = minienc.zeros(2, 4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"mae_loss: the mask \(2, 4\) marks no patch as removed"):
        mae_loss(pred, np.zeros((2, 4, 3), np.float32), np.zeros((2, 4), np.float32))


@given(b=st.integers(1, 3), c=st.integers(1, 3), p=st.integers(1, 3), g=st.integers(1, 4))
def test_unpatchify_inverts_patchify(b, c, p, g):
    x = np.random.default_rng(b * 7 + g).standard_normal((b, c, g * p, g * p))
    np.testing.assert_array_equal(nn.unpatchify(nn.patchify(x, p), p, c), x)


# ----- MAE: targets and loss ------------------------------------------------------------------

@given(seed=st.integers(0, 1000), p=st.integers(2, 3))
def test_norm_pix_targets_are_standardised_and_map_back(seed, p):
    images = np.random.default_rng(seed).random((2, 2, 2 * p, 2 * p)).astype(np.float32)
    target, mean, std = patch_targets(images, p, norm_pix_loss=True)
    np.testing.assert_allclose(target.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(target.var(axis=-1, ddof=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(target * std + mean, nn.patchify(images, p), atol=1e-6)
    plain, mean0, std0 = patch_targets(images, p)
    np.testing.assert_array_equal(plain * std0 + mean0, nn.patchify(images, p))


def test_norm_pix_targets_need_more_than_one_value():
    with pytest.raises(ValueError, match="patch_targets: norm_pix_loss"):
        patch_targets(np.zeros((1, 1, 4, 4), np.float32), 1, norm_pix_loss=True)
    with pytest.raises(ValueError, match="MAE: norm_pix_loss needs patches of at least 2 values, got 1x1x1"):
        MAE(image_size=4, patch_size=1, dim=8, depth=1, num_heads=2, norm_pix_loss=True)


@given(seed=st.integers(0, 1000), batch=st.integers(1, 4), n=st.integers(2, 9))
def test_mae_loss_is_the_mean_over_removed_patches_and_ignores_visible_ones(seed, batch, n):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal((2, batch, n, 3))
    mask = np.zeros((batch, n), np.float32)
    mask[:, rng.permutation(n)[: max(1, n // 2)]] = 1.0
    loss = mae_loss(minienc.tensor(pred, dtype="float64"), target, mask).numpy()
    expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    visible = mask[..., None] == 0            # change every visible patch, prediction and target
    pred2 = np.where(visible, pred + rng.standard_normal(pred.shape) * 10, pred)
    target2 = np.where(visible, rng.standard_normal(pred.shape), target)
    p2 = minienc.tensor(pred2, dtype="float64", requires_grad=True)
    loss2 = mae_loss(p2, target2, mask)
    np.testing.assert_allclose(loss2.numpy(), loss, rtol=1e-12)
    loss2.backward()
    assert (p2.grad[np.broadcast_to(visible, pred.shape)] == 0).all()
    assert (p2.grad[np.broadcast_to(~visible, pred.shape)] != 0).any()


def test_mae_loss_gradcheck(device):
    mask = backend.to_device(np.array([[1, 0, 1, 1], [0, 1, 0, 0]], np.float64), device)
    target = rand(device, 2, 4, 3, seed=1, requires_grad=False)
    assert minienc.gradcheck(lambda p: mae_loss(p, target, mask), rand(device, 2, 4, 3))


def test_mae_loss_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"mae_loss: pred \(2, 4, 3\), target \(2, 4, 2\)"):
        mae_loss(minienc.zeros(2, 4, 3), np.zeros((2, 4, 2), np.float32), np.ones((2, 4), np.float32))


# ----- MAE: the model -------------------------------------------------------------------------

def test_mae_encoder_sees_only_visible_patches(device):
    mae = small_mae(device, image_size=8)
    images = backend.to_device(np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32), device)
    masking = random_masking(3, mae.num_patches, 0.75, device)
    loss, pred, mask = mae.masked_prediction(images, masking)
    assert pred.shape == (3, 16, 4) and loss.shape == () and host(mask).sum() == 3 * 12
    removed = unpatch(host(mask)[..., None] * np.ones((1, 1, 4), np.float32), mae)
    noisy = images + backend.to_device(removed * 5.0, device)   # change only the removed pixels
    loss2, pred2, _ = mae.masked_prediction(noisy, masking)
    np.testing.assert_allclose(host(pred2), host(pred), atol=1e-6)   # the encoder never saw them
    assert abs(float(host(loss2)) - float(host(loss))) > 1e-2        # but they are the targets


def unpatch(patches, mae):
    return nn.unpatchify(patches, mae.patch_size, mae.in_channels, mae.grid_size)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_gradcheck(device, norm_pix_loss):
    mae = small_mae(device, norm_pix_loss=norm_pix_loss)
    images = rand(device, 2, 1, 4, 4, requires_grad=False)
    assert gradcheck_module(lambda_module(mae), images, reseed=True)


def test_mae_gradcheck_with_a_cls_token_encoder(device):
    minienc.set_device(device)
    try:
        vit = nn.VisionTransformer(4, 2, 1, dim=8, depth=1, num_heads=2, mlp_ratio=2.0, cls_token=True)
    finally:
        minienc.set_device("cpu")
    mae = small_mae(device, encoder=vit)
    images = rand(device, 2, 1, 4, 4, requires_grad=False)
    assert gradcheck_module(lambda_module(mae), images, reseed=True)
    assert mae.embed(images).shape == (2, 8)


class lambda_module(nn.Module):
    """The MAE loss alone as a module output (gradcheck needs one tensor)."""

    def __init__(self, mae):
        self.mae = mae

    def forward(self, images):
        return self.mae.loss(images)["loss"]


def test_mae_reconstruct_and_embed_shapes_and_perfect_prediction_pastes_the_image():
    mae = small_mae("cpu", image_size=8, norm_pix_loss=True)
    images = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32)
    out = mae.reconstruct(images)
    assert {k: v.shape for k, v in out.items()} == {"masked": (2, 1, 8, 8), "reconstruction": (2, 1, 8, 8),
                                                    "pasted": (2, 1, 8, 8), "mask": (2, 16)}
    removed = unpatch(np.repeat(out["mask"][..., None], 4, -1), mae) == 1
    assert (out["masked"][removed] == 0.5).all() and (out["masked"][~removed] == images[~removed]).all()
    assert (out["pasted"][~removed] == images[~removed]).all()
    assert mae.embed(images).shape == (2, 8)


def test_mae_short_training_lowers_the_loss():
    minienc.manual_seed(0)
    mae = small_mae("cpu", image_size=8, dim=16, decoder_dim=16)
    images = minienc.data.load_digits().x_train[:64]
    opt = minienc.optim.AdamW(mae.parameters(), lr=3e-3, weight_decay=0.05)
    masking = random_masking(64, 16, 0.75, "cpu")
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = mae.masked_prediction(images, masking)[0]
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.numpy())
    assert float(loss.numpy()) < 0.5 * first


# ----- MLM: BERT's masking --------------------------------------------------------------------

SPECIALS = (0, 1, 2, 3, 4)          # the Tokenizer's [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID, VOCAB = 4, 40


def token_batch(seed, batch, length, pad_fraction=0.3):
    """[CLS] + words and some [UNK]s, then padding of random length per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(batch, length))
    ids[rng.random((batch, length)) < 0.05] = 1
    ids[:, 0] = 2
    for row in range(batch):
        ids[row, rng.integers(1, length + 1) if rng.random() < pad_fraction else length:] = 0
    return ids


@given(seed=st.integers(0, 10_000), batch=st.integers(1, 8), length=st.integers(1, 40))
def test_mask_tokens_chooses_exactly_round_15_percent_of_real_tokens(seed, batch, length):
    ids = token_batch(seed, batch, length)
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB)
    chosen = m.labels != IGNORE_INDEX
    most = max_predictions_for(length)
    assert m.positions.shape == m.targets.shape == (batch, most)
    for row in range(batch):
        n = int((ids[row] > 4).sum())
        expected = 0 if n == 0 else min(most, max(1, round(0.15 * n)))
        assert chosen[row].sum() == expected                          # exactly k per sequence
        assert (ids[row][chosen[row]] > 4).all()                       # never a special or [PAD]
        np.testing.assert_array_equal(m.labels[row][chosen[row]], ids[row][chosen[row]])
        used = m.targets[row] != IGNORE_INDEX                          # the packed copy agrees
        assert used.sum() == expected
        assert sorted(m.positions[row][used].tolist()) == np.flatnonzero(chosen[row]).tolist()
        np.testing.assert_array_equal(m.targets[row][used], ids[row][m.positions[row][used]])
    np.testing.assert_array_equal(m.inputs[~chosen], ids[~chosen])     # only chosen tokens change
    assert (m.inputs[chosen] > 3).all()                                # [MASK] or a word, never padding


def test_mask_tokens_splits_80_10_10_and_random_tokens_are_words(device):
    ids = backend.to_device(token_batch(0, 400, 40, pad_fraction=0.0), device)
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB)
    ids, inputs, labels = host(ids), host(m.inputs), host(m.labels)
    chosen = labels != IGNORE_INDEX
    n = chosen.sum()
    masked = (inputs[chosen] == MASK_ID).mean()
    same = (inputs[chosen] == ids[chosen]).mean()
    replaced = inputs[chosen][(inputs[chosen] != MASK_ID) & (inputs[chosen] != ids[chosen])]
    tol = 4.0 * np.sqrt(0.1 * 0.9 / n)        # 4 standard errors of a 10% proportion
    assert abs(masked - 0.8) < 4.0 * np.sqrt(0.8 * 0.2 / n)
    # a random token equals the original 1 time in 35 (35 words): "same" is 10% + that share
    assert abs(same - (0.1 + 0.1 / 35)) < tol
    assert abs(len(replaced) / n - 0.1 * 34 / 35) < tol
    assert (replaced >= 5).all() and (replaced < VOCAB).all()
    counts = np.bincount(replaced, minlength=VOCAB)[5:]
    assert (counts > 0).sum() > 30                                      # spread over the words


def test_mask_tokens_random_words_skip_scattered_special_ids():
    specials, vocab = (0, 3, 7), 10                    # words: 1 2 4 5 6 8 9 ([MASK] = 7)
    ids = np.random.default_rng(0).choice([1, 2, 4, 5, 6, 8, 9], size=(3000, 20))
    m = mask_tokens(ids, specials, 7, vocab, mask_fraction=0.0, random_fraction=1.0)
    chosen = m.labels != IGNORE_INDEX
    assert set(np.unique(m.inputs[chosen]).tolist()) == {1, 2, 4, 5, 6, 8, 9}
    counts = np.bincount(m.inputs[chosen], minlength=vocab)[[1, 2, 4, 5, 6, 8, 9]]
    assert counts.min() > 0.8 * counts.mean()          # uniform over the words


def test_mask_tokens_fill_in_the_blank_and_errors():
    ids = token_batch(1, 4, 20, pad_fraction=0.0)
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, mask_fraction=1.0, random_fraction=0.0)
    assert (m.inputs[m.labels != IGNORE_INDEX] == MASK_ID).all()
    with pytest.raises(ValueError, match=r"mask_tokens: ids must be integers \(B, L\)"):
        mask_tokens(ids.astype(np.float32), SPECIALS, MASK_ID, VOCAB)
    with pytest.raises(ValueError, match="mask_tokens: need"):
        mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, mask_fraction=0.8, random_fraction=0.3)
    only_pad = np.zeros((2, 5), np.int64)
    assert (mask_tokens(only_pad, SPECIALS, MASK_ID, VOCAB).labels == IGNORE_INDEX).all()


# ----- MLM: loss, head and model --------------------------------------------------------------

def test_mlm_loss_counts_only_chosen_positions_and_gradcheck(device):
    logits = rand(device, 2, 3, 6)
    targets = backend.to_device(np.array([[2, IGNORE_INDEX, 5], [IGNORE_INDEX, IGNORE_INDEX, 0]]), device)
    x = host(logits)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    expected = -(logp[0, 0, 2] + logp[0, 2, 5] + logp[1, 2, 0]) / 3
    np.testing.assert_allclose(host(mlm_loss(logits, targets)), expected, rtol=1e-10)
    assert minienc.gradcheck(lambda z: mlm_loss(z, targets), logits)


def small_mlm(device, **kw):
    minienc.set_device(device)
    try:
        return MaskedLanguageModel(VOCAB, max_len=12, dim=8, depth=1, num_heads=2, mlp_ratio=2.0, **kw)
    finally:
        minienc.set_device("cpu")


def test_mlm_head_is_tied_to_the_token_embedding():
    mlm = small_mlm("cpu")
    names = [name for name, _ in mlm.named_parameters()]
    assert "encoder.token_embedding.weight" in names and not any("head" in n and "embedding" in n for n in names)
    ids = token_batch(2, 3, 12)
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB)
    mlm.loss_of_masking(m)["loss"].backward()
    grad_tokens = mlm.encoder.token_embedding.weight.grad
    assert grad_tokens is not None and np.abs(grad_tokens).sum() > 0
    logits = mlm.logits(ids)
    assert logits.shape == (3, 12, VOCAB) and mlm.logits(ids, m.positions).shape == (3, m.positions.shape[1], VOCAB)
    with pytest.raises(ValueError, match=r"MLMHead: embedding \(5, 8\)"):
        mlm.head(logits[..., :8], minienc.zeros(5, 8))


def test_mlm_gradcheck(device):
    mlm = small_mlm(device)
    ids = backend.to_device(token_batch(3, 2, 8), device)
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, mask_prob=0.4)

    class Loss(nn.Module):
        def __init__(self, mlm):
            self.mlm = mlm

        def forward(self):
            return self.mlm.loss_of_masking(m)["loss"]
    assert gradcheck_module(Loss(mlm))


def test_mlm_head_gradcheck(device):
    mlm = small_mlm(device)
    weight = rand(device, VOCAB, 8, seed=4, scale=0.1)
    assert gradcheck_module(mlm.head, rand(device, 2, 3, 8), weight)


def test_mlm_embed_ignores_padding():
    mlm = small_mlm("cpu")
    ids = np.array([[2, 7, 9, 0, 0, 0]])
    longer = np.array([[2, 7, 9, 0, 0, 0, 0, 0]])
    a, b = mlm.embed(ids).numpy(), mlm.embed(longer).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)
    hidden = mlm.encoder(ids).numpy()
    np.testing.assert_allclose(a, hidden[:, :3].mean(1), atol=1e-6)


def test_mlm_short_training_learns_a_copy_rule():
    """Sequences "a b a b ...": every hidden token is its neighbours' copy, learnable in seconds."""
    rng = np.random.default_rng(0)
    pairs = rng.integers(5, VOCAB, size=(256, 2))
    ids = np.concatenate([np.full((256, 1), 2), np.tile(pairs, 5)], axis=1)
    minienc.manual_seed(0)
    mlm = MaskedLanguageModel(VOCAB, max_len=12, dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
                              special_ids=SPECIALS, mask_id=MASK_ID)   # it masks ids itself
    opt = minienc.optim.AdamW(mlm.param_groups(), lr=3e-2, weight_decay=0.0)
    for _ in range(60):
        opt.zero_grad()
        loss = mlm.loss(ids)["loss"]
        loss.backward()
        opt.step()
    m = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, mask_fraction=1.0, random_fraction=0.0)
    with minienc.no_grad():
        guess = mlm.logits(m.inputs, m.positions).numpy().argmax(-1)
    used = m.targets != IGNORE_INDEX
    assert (guess[used] == m.targets[used]).mean() > 0.9     # chance: 1 in 35
