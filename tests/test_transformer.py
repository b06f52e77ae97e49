"""Attention, transformer blocks, patches, position embeddings, ViT and the text transformer:
attention weights are a distribution with padded keys at exactly 0, every part passes gradcheck
(inputs and parameters), and the ViT's patch-subset path agrees with the full path."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from nn_check import gradcheck_module, rand


def host(t):
    return t.numpy() if isinstance(t, minienc.Tensor) else backend.to_host(t)


def attention_weights(q, k, key_padding_mask=None, attn_mask=None):
    """The weights themselves: attention with v = identity returns P."""
    eye = minienc.tensor(np.eye(k.shape[-2]), dtype=q.dtype, device=q.device)
    return minienc.scaled_dot_product_attention(q, k, eye.broadcast_to(*k.shape[:-1], k.shape[-2]),
                                                key_padding_mask, attn_mask)


def reference_attention(q, k, v, pad=None):
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if pad is not None:
        s = np.where(pad.reshape(pad.shape[0], *([1] * (s.ndim - 2)), pad.shape[1]), -np.inf, s)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


# ----- the attention op -----------------------------------------------------------------------

@given(batch=st.integers(1, 3), lq=st.integers(1, 5), lk=st.integers(1, 6), data=st.data())
def test_attention_rows_sum_to_one_and_padding_gets_zero(batch, lq, lk, data):
    pad = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=lk, max_size=lk),
                                      min_size=batch, max_size=batch)))
    pad[:, 0] = False  # at least one real key per sample (the all-padded case is tested below)
    q, k = rand("cpu", batch, 2, lq, 4, seed=lq), rand("cpu", batch, 2, lk, 4, seed=lk)
    p = host(attention_weights(q.astype("float32"), k.astype("float32"), pad))
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert (p[np.broadcast_to(pad[:, None, None, :], p.shape)] == 0.0).all()  # exactly zero
    np.testing.assert_allclose(p, reference_attention(host(q), host(k), np.eye(lk), pad), rtol=1e-4, atol=1e-6)


def test_attention_gradcheck_with_padding_and_additive_mask(device):
    q, k, v = rand(device, 2, 2, 3, 4), rand(device, 2, 2, 5, 4, seed=1), rand(device, 2, 2, 5, 3, seed=2)
    pad = minienc.tensor(np.array([[False, False, True, False, True], [False] * 5]), device=device)
    bias = rand(device, 1, 2, 3, 5, seed=3)  # a learnable additive mask (a relative bias) gets a gradient
    assert minienc.gradcheck(lambda a, b, c, m: minienc.scaled_dot_product_attention(a, b, c, pad, m),
                             q, k, v, bias)


def test_fully_masked_rows_give_zeros_not_nan(device):
    q, k, v = rand(device, 2, 1, 3, 4), rand(device, 2, 1, 3, 4, seed=1), rand(device, 2, 1, 3, 4, seed=2)
    pad = minienc.tensor(np.array([[True, True, True], [False, True, False]]), device=device)
    out = minienc.scaled_dot_product_attention(q, k, v, pad)
    out.sum().backward()
    assert np.isfinite(host(q.grad)).all() and np.isfinite(host(k.grad)).all() and np.isfinite(host(v.grad)).all()
    np.testing.assert_array_equal(host(out)[0], 0.0)
    np.testing.assert_array_equal(host(v.grad)[0], 0.0)
    mask = np.zeros((1, 1, 3, 3))
    mask[..., 1, :] = -np.inf  # an additive mask that forbids every key of query 1
    out = minienc.scaled_dot_product_attention(q, k, v, attn_mask=minienc.tensor(mask, dtype="float64", device=device))
    assert np.isfinite(host(out)).all() and (host(out)[:, :, 1] == 0).all()
    assert minienc.gradcheck(lambda a, b, c: minienc.scaled_dot_product_attention(a, b, c, pad), q, k, v)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_packed_multi_head_attention_matches_per_head_reference(device, heads):
    b, length, d = 2, 5, 8
    qkv = rand(device, b, length, 3 * d)
    pad = np.zeros((b, length), dtype=bool)
    pad[1, 3:] = True
    out = host(minienc.multi_head_attention(qkv, heads, minienc.tensor(pad, device=device)))
    parts = host(qkv).reshape(b, length, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    expected = reference_attention(*parts, pad).transpose(0, 2, 1, 3).reshape(b, length, d)
    np.testing.assert_allclose(out, expected, rtol=1e-10)
    assert minienc.gradcheck(lambda t: minienc.multi_head_attention(t, heads, pad), qkv)


def test_attention_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"q \(2, 3, 4\), k \(2, 3, 5\)"):
        minienc.scaled_dot_product_attention(*(minienc.tensor(np.zeros(s)) for s in [(2, 3, 4), (2, 3, 5), (2, 3, 5)]))
    with pytest.raises(ValueError, match="divisible by 3 heads"):
        minienc.multi_head_attention(minienc.tensor(np.zeros((2, 3, 24))), 3)
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        minienc.multi_head_attention(minienc.tensor(np.zeros((2, 3, 12))), 2, np.zeros((2, 4), dtype=bool))


# ----- modules --------------------------------------------------------------------------------

def test_multi_head_attention_module_gradcheck(device):
    layer = nn.MultiHeadAttention(4, 2).to(device)
    pad = minienc.tensor(np.array([[False, False, True], [False, False, False]]), device=device)
    assert gradcheck_module(layer, rand(device, 2, 3, 4), pad)


def test_transformer_block_gradcheck(device):
    block = nn.TransformerBlock(4, 2, mlp_ratio=2.0).to(device)
    nn.init_transformer_weights(block, std=0.3)  # larger weights: every path visibly matters
    assert gradcheck_module(block, rand(device, 2, 3, 4))


def test_padded_keys_do_not_influence_other_tokens():
    model = nn.TextTransformer(vocab_size=20, max_len=6, dim=8, depth=2, num_heads=2)
    ids = np.array([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 0]])
    out = host(model(ids))
    model.pad_id = None  # without masking, the pad tokens DO leak into the real ones
    leaked = host(model(ids))
    model.pad_id = 0
    assert not np.allclose(leaked[0, :3], out[0, :3])
    mask = ids == 0
    mask_out = host(model(ids, key_padding_mask=mask))
    np.testing.assert_array_equal(mask_out, out)
    # changing what sits at padded positions never changes the real tokens' embeddings
    swapped = ids.copy()
    swapped[0, 3:] = [13, 14, 15]
    again = host(model(swapped, key_padding_mask=mask))
    np.testing.assert_allclose(again[0, :3], out[0, :3], rtol=1e-5, atol=1e-6)


def test_text_transformer_gradcheck_and_shapes(device):
    model = nn.TextTransformer(vocab_size=7, max_len=4, dim=4, depth=1, num_heads=2).to(device)
    ids = minienc.tensor(np.array([[1, 2, 3, 0], [4, 5, 6, 2]]), device=device)
    assert model(ids).shape == (2, 4, 4)
    assert model(ids[:, :3]).shape == (2, 3, 4)
    assert gradcheck_module(model, ids)
    with pytest.raises(ValueError, match="max_len = 4"):
        model(minienc.tensor(np.ones((1, 5), dtype=np.int64), device=device))


# ----- patches and position embeddings --------------------------------------------------------

@given(b=st.integers(1, 2), c=st.integers(1, 3), p=st.integers(1, 3), gh=st.integers(1, 3), gw=st.integers(1, 3))
def test_patchify_layout_and_round_trip(b, c, p, gh, gw):
    x = np.random.default_rng(0).standard_normal((b, c, gh * p, gw * p))
    patches = nn.patchify(minienc.tensor(x, dtype="float64"), p)
    assert patches.shape == (b, gh * gw, p * p * c)
    # MAE's layout: patch (row i, col j) -> token i*gw + j, vector ordered (p, p, C)
    i, j = gh - 1, gw - 1
    expected = x[0, :, i * p:(i + 1) * p, j * p:(j + 1) * p].transpose(1, 2, 0).reshape(-1)
    np.testing.assert_array_equal(host(patches)[0, i * gw + j], expected)
    np.testing.assert_array_equal(host(nn.unpatchify(patches, p, c, (gh, gw))), x)
    np.testing.assert_array_equal(nn.unpatchify(nn.patchify(x, p), p, c, (gh, gw)), x)  # arrays too


def test_patch_embed_equals_a_strided_convolution(device):
    embed = nn.PatchEmbed(4, 2, 3, 5).to(device)
    x = minienc.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), device=device)
    # the same map as Conv2d(3, 5, kernel 2, stride 2) with the weight re-laid (p, p, C) -> (C, p, p)
    w = host(embed.proj.weight).reshape(5, 2, 2, 3).transpose(0, 3, 1, 2)
    conv = minienc.conv2d(x, minienc.tensor(w, device=device), embed.proj.bias, stride=2)
    expected = host(conv).reshape(2, 5, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(host(embed(x)), expected, rtol=1e-5, atol=1e-6)


def test_2d_sincos_position_embedding_layout():
    dim, gh, gw = 8, 3, 4
    emb = nn.get_2d_sincos_pos_embed(dim, (gh, gw))
    assert emb.shape == (gh * gw, dim) and emb.dtype == np.float32
    freqs = 1.0 / 10000.0 ** (np.arange(2) / 2.0)  # dim/4 frequencies per coordinate
    for row in range(gh):
        for col in range(gw):
            expected = np.concatenate([np.sin(col * freqs), np.cos(col * freqs),   # first half: column
                                       np.sin(row * freqs), np.cos(row * freqs)])  # second half: row
            np.testing.assert_allclose(emb[row * gw + col], expected, rtol=1e-6, atol=1e-7)
    with_cls = nn.get_2d_sincos_pos_embed(dim, 3, cls_token=True)
    assert with_cls.shape == (10, dim) and (with_cls[0] == 0).all()


# ----- VisionTransformer ----------------------------------------------------------------------

def small_vit(device, **kwargs):
    kwargs = {"image_size": 4, "patch_size": 2, "in_channels": 1, "dim": 8, "depth": 1, "num_heads": 2,
              "mlp_ratio": 2.0, **kwargs}
    return nn.VisionTransformer(**kwargs).to(device)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned", None])
@pytest.mark.parametrize("cls_token", [False, True])
def test_vit_without_blocks_subset_equals_full_gathered(device, pos_embed, cls_token):
    """With depth 0 no op mixes tokens, so the subset path is the full path, gathered."""
    vit = nn.VisionTransformer(8, 2, 1, 8, depth=0, num_heads=2, cls_token=cls_token, pos_embed=pos_embed).to(device)
    x = minienc.tensor(np.random.default_rng(0).standard_normal((3, 1, 8, 8)), device=device)
    idx = np.stack([np.random.default_rng(s).permutation(16)[:5] for s in range(3)])
    full, sub = host(vit(x)), host(vit(x, minienc.tensor(idx, device=device)))
    first = 1 if cls_token else 0
    assert sub.shape == (3, 5 + first, 8)
    np.testing.assert_allclose(sub[:, first:], np.take_along_axis(full[:, first:], idx[..., None], axis=1),
                               rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 100))
def test_vit_permuting_patch_indices_permutes_outputs(seed):
    """Attention is permutation-equivariant and positions travel with their patches."""
    vit = nn.VisionTransformer(8, 2, 1, 8, depth=2, num_heads=2)
    rng = np.random.default_rng(seed)
    x = minienc.tensor(rng.standard_normal((2, 1, 8, 8)))
    idx = np.stack([rng.permutation(16)[:6] for _ in range(2)])
    perm = rng.permutation(6)
    out, out_perm = host(vit(x, idx)), host(vit(x, idx[:, perm]))
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-4, atol=1e-5)


def test_vit_all_indices_in_order_equals_full_and_shared_indices():
    vit = nn.VisionTransformer(8, 2, 1, 8, depth=2, num_heads=2, cls_token=True)
    x = minienc.tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)))
    np.testing.assert_allclose(host(vit(x, np.tile(np.arange(16), (2, 1)))), host(vit(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(host(vit(x, np.arange(4, 10))), host(vit(x, np.tile(np.arange(4, 10), (2, 1)))))
    with pytest.raises(IndexError, match=r"\[0, 16\)"):
        vit(x, np.array([[0, 16], [1, 2]]))


def test_vit_checks_patch_indices_once_per_forward(monkeypatch):
    """The patch subset is validated once at the ViT's boundary, then used for the patches and
    their position embeddings (it used to be checked once for each)."""
    from minienc.nn import vit as vit_module
    calls = []
    check = vit_module.patch_index_array
    monkeypatch.setattr(vit_module, "patch_index_array", lambda *a: calls.append(a[0]) or check(*a))
    vit = nn.VisionTransformer(8, 2, 1, 8, depth=1, num_heads=2, pos_embed="learned")
    vit(minienc.tensor(np.zeros((2, 1, 8, 8))), np.array([[0, 5, 9], [1, 2, 15]]))
    assert calls == ["VisionTransformer"]
    with pytest.raises(IndexError, match=r"^VisionTransformer: patch indices must lie in \[0, 16\), got values in \[-1, 2\]"):
        vit(minienc.tensor(np.zeros((2, 1, 8, 8))), np.array([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match=r"^gather_tokens: patch indices must be integers"):
        nn.gather_tokens(minienc.tensor(np.zeros((2, 4, 3))), np.zeros((2, 1)))


@pytest.mark.parametrize("cls_token,pos_embed", [(False, "sincos"), (True, "learned")])
def test_vit_gradcheck(device, cls_token, pos_embed):
    vit = small_vit(device, cls_token=cls_token, pos_embed=pos_embed)
    nn.init_transformer_weights(vit, std=0.3)
    images = rand(device, 2, 1, 4, 4)
    idx = minienc.tensor(np.array([[3, 0], [1, 2]]), device=device)
    assert gradcheck_module(vit, images, idx)


def test_vit_float32_end_to_end_and_state_dict(device):
    vit = small_vit(device, cls_token=True)
    x = minienc.tensor(np.random.default_rng(0).standard_normal((2, 1, 4, 4)), device=device)
    out = vit(x)
    assert out.dtype == np.float32 and out.shape == (2, 5, 8)
    out.sum().backward()
    assert all(p.grad.dtype == np.float32 for p in vit.parameters())
    state = vit.state_dict()
    assert "pos_embed" in state and "blocks.0.attn.qkv.weight" in state
    minienc.manual_seed(5)
    other = small_vit(device, cls_token=True).load_state_dict(state)
    np.testing.assert_array_equal(host(other(x)), host(out))


def test_vit_same_seed_same_weights_on_every_device(device):
    previous = minienc.get_device()
    try:
        minienc.set_device(device)  # built directly on the device, not moved there
        minienc.manual_seed(3)
        a = nn.VisionTransformer(4, 2, 1, 8, depth=1, num_heads=2, pos_embed="learned", cls_token=True)
    finally:
        minienc.set_device(previous)
    minienc.manual_seed(3)
    b = nn.VisionTransformer(4, 2, 1, 8, depth=1, num_heads=2, pos_embed="learned", cls_token=True)
    assert a.device == device and a.pos_embed.device == device
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(host(p), host(q), err_msg=name)


def test_vit_errors_name_the_shapes():
    vit = small_vit("cpu")
    with pytest.raises(ValueError, match=r"PatchEmbed.*\(2, 1, 5, 5\)"):
        vit(minienc.tensor(np.zeros((2, 1, 5, 5))))
    with pytest.raises(ValueError, match="not divisible"):
        nn.VisionTransformer(5, 2, 1, 8, depth=0, num_heads=2)


def test_vit_accepts_raw_arrays_and_3d_grayscale():
    vit = small_vit("cpu")
    x = np.random.default_rng(0).standard_normal((2, 4, 4))  # float64, no channel axis
    out = vit(x, np.array([[0, 3], [2, 1]]))
    assert out.shape == (2, 2, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(host(out), host(vit(minienc.tensor(x[:, None]), np.array([[0, 3], [2, 1]]))))
