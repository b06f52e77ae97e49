"""minienc.export (issue 29): every encoder kind goes to model.safetensors + config.json and
comes back bit-identical; tensors that do not match config.json (shape, dtype, missing or extra)
and a config that is not ours or was tampered with are refused by name; with PyTorch installed, a
ViT written with timm's names loads the file strictly and gives minienc's embeddings, and so do
torch.nn.Sequential twins of the MLP and conv encoders. The file format itself:
tests/test_safetensors.py; demos/export.py, which takes a demo's encoder out of its run:
tests/test_export_demo.py."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minienc
from minienc import nn
from minienc.engine import no_grad
from minienc.export import (CONFIG, WEIGHTS, describe, exported_names, from_pytorch_layout,
                            load_encoder, save_encoder, to_pytorch_layout)
from minienc.safetensors import SafetensorsError, load_file, save_file


def perturbed(module, seed=0, scale=0.3):
    """`module` with every parameter and buffer moved at random (LayerNorm and BatchNorm away
    from 1 and 0, running statistics away from their start): a test that confused two tensors,
    or a layout, cannot pass by symmetry."""
    rng = np.random.default_rng(seed)
    state = {k: (v + rng.normal(0, scale, v.shape)).astype(v.dtype) for k, v in module.state_dict().items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = np.abs(state[k]) + 0.5
    return module.load_state_dict(state)


ENCODERS = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.MLPEncoder(48, (32, 16), 8, batch_norm=True)),
            (5, 3, 4, 4)),
    "conv": (lambda: nn.ConvEncoder(3, (4, 8), out_features=10, image_size=8), (5, 3, 8, 8)),
    "vit": (lambda: nn.VisionTransformer(image_size=8, patch_size=4, in_channels=3, dim=16, depth=2,
                                         num_heads=2, cls_token=True, pos_embed="learned"), (5, 3, 8, 8)),
    "vit-sincos": (lambda: nn.VisionTransformer(image_size=(8, 12), patch_size=2, in_channels=1,
                                                dim=16, depth=1, num_heads=4, mlp_ratio=2.5,
                                                qkv_bias=False), (5, 1, 8, 12)),
    "text": (lambda: nn.TextTransformer(50, max_len=12, dim=16, depth=2, num_heads=2), (5, 12)),
}


def inputs(shape, seed=1):
    rng = np.random.default_rng(seed)
    if len(shape) == 2:   # token ids, some of them padding (0)
        return minienc.tensor(rng.integers(0, 50, shape))
    return minienc.tensor(rng.uniform(0, 1, shape).astype(np.float32))


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_every_encoder_round_trips_bit_identical(kind, tmp_path):
    make, shape = ENCODERS[kind]
    minienc.manual_seed(0)
    encoder = perturbed(make()).eval()
    save_encoder(encoder, tmp_path, pooling="mean")
    minienc.manual_seed(5)
    loaded = load_encoder(tmp_path)      # built and initialised without moving the random stream
    drawn = minienc.randn(3).numpy()
    minienc.manual_seed(5)
    np.testing.assert_array_equal(drawn, minienc.randn(3).numpy())
    assert not loaded.training and type(loaded) is (nn.Sequential if kind in ("mlp", "conv") else type(encoder))
    a, b = encoder.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    x = inputs(shape)
    with no_grad():
        assert np.array_equal(encoder(x).numpy(), loaded(x).numpy())
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["architecture"] == describe(encoder) and config["notes"] == {"pooling": "mean"}
    assert ("timm" in config) == kind.startswith("vit")


def test_a_float64_encoder_comes_back_float64(tmp_path):
    encoder = nn.MLPEncoder(6, (5,), 3).astype("float64")
    save_encoder(encoder, tmp_path)
    loaded = load_encoder(tmp_path)
    assert all(v.dtype == np.float64 for v in loaded.state_dict().values())
    np.testing.assert_array_equal(loaded.layers[0].weight.numpy(), encoder.layers[0].weight.numpy())


def test_names_follow_pytorch(tmp_path):
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(48, (32,), 8, batch_norm=True))
    assert exported_names(encoder) == {
        "layers.1.layers.0.weight": "1.0.weight", "layers.1.layers.1.weight": "1.1.weight",
        "layers.1.layers.1.bias": "1.1.bias", "layers.1.layers.3.weight": "1.3.weight",
        "layers.1.layers.3.bias": "1.3.bias", "layers.1.layers.1.running_mean": "1.1.running_mean",
        "layers.1.layers.1.running_var": "1.1.running_var"}
    vit = nn.VisionTransformer(image_size=8, patch_size=4, in_channels=3, dim=8, depth=1, num_heads=2)
    names = set(exported_names(vit).values())
    assert {"patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias",
            "norm.weight"} <= names
    save_encoder(vit, tmp_path)
    tensors, metadata = load_file(tmp_path / WEIGHTS)
    assert tensors["patch_embed.proj.weight"].shape == (8, 3, 4, 4) and metadata["format"] == "pt"


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 5), c=st.integers(1, 4), p=st.integers(1, 4))
def test_the_patch_projection_layout_is_a_conv_over_the_patch(d, c, p):
    """Conv2d(C, D, p, stride p) with the exported weight == minienc's Linear on patchify."""
    rng = np.random.default_rng(d * 100 + c * 10 + p)
    weight = rng.normal(size=(d, p * p * c))
    image = rng.normal(size=(1, c, p, p))
    patch = nn.patchify(image, p)[0, 0]                          # (p*p*C,), (p, p, C) order
    conv = to_pytorch_layout(weight, c)
    np.testing.assert_allclose(np.einsum("dcij,cij->d", conv, image[0]), weight @ patch, rtol=1e-12)
    np.testing.assert_array_equal(from_pytorch_layout(conv), weight)


def test_describe_refuses_a_module_it_cannot_rebuild():
    class Pool(nn.Module):
        def forward(self, x):
            return x.mean(axis=1)
    with pytest.raises(TypeError, match=r"cannot describe Pool at encoder\.layers\.1"):
        describe(nn.Sequential(nn.Linear(2, 2), Pool()))
    with pytest.raises(TypeError, match="expected the encoder Module"):
        save_encoder(lambda x: x, "unused")


# ----- load_encoder refuses what does not match its config -----------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda t: t.update({"blocks.0.attn.qkv.weight": t["blocks.0.attn.qkv.weight"][:-1]}),
     r"tensor 'blocks.0.attn.qkv.weight' is float32 \[47, 16\] but the encoder of config.json has float32 \[48, 16\]"),
    (lambda t: t.update({"norm.weight": t["norm.weight"].astype(np.float64)}),
     r"tensor 'norm.weight' is float64 \[16\] but the encoder of config.json has float32 \[16\]"),
    (lambda t: t.pop("blocks.0.mlp.fc1.bias"), r"missing tensors \['blocks.0.mlp.fc1.bias'\], unexpected tensors \[\]"),
    (lambda t: t.update(head=np.zeros(2, np.float32)), r"missing tensors \[\], unexpected tensors \['head'\]"),
])
def test_load_encoder_refuses_tensors_that_do_not_match_by_name(tmp_path, change, message):
    save_encoder(nn.VisionTransformer(image_size=8, patch_size=4, in_channels=3, dim=16, depth=1,
                                      num_heads=2), tmp_path)
    tensors, metadata = load_file(tmp_path / WEIGHTS)
    change(tensors)
    save_file(tensors, tmp_path / WEIGHTS, metadata)
    with pytest.raises(SafetensorsError, match=message):
        load_encoder(tmp_path)


def test_load_encoder_refuses_a_config_that_is_not_ours(tmp_path):
    save_encoder(nn.MLPEncoder(4, (3,), 2), tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    (tmp_path / CONFIG).write_text(json.dumps(dict(config, format="something else")))
    with pytest.raises(ValueError, match="not a minienc encoder's config"):
        load_encoder(tmp_path)
    (tmp_path / CONFIG).write_text(json.dumps(dict(config, architecture={"type": "Lambda"})))
    with pytest.raises(ValueError, match="unknown layer type 'Lambda'"):
        load_encoder(tmp_path)


def linear_encoder():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


@pytest.mark.parametrize("notes, message", [
    ({"scale": np.float32(1.0)}, r"Object of type float32 is not JSON serializable"),
    ({"classes": {1, 2}}, r"Object of type set is not JSON serializable"),
    ({"mean": float("nan")}, r"Out of range float values are not JSON compliant"),
])
def test_notes_json_cannot_hold_are_refused_before_anything_is_written(tmp_path, notes, message):
    """model.safetensors was written, then config.json failed: a folder that cannot load (or,
    over an earlier export, new weights beside the old config); NaN was written as bare NaN,
    which is not JSON."""
    with pytest.raises(ValueError, match=r"^save_encoder: the notes must be JSON .*" + message):
        save_encoder(linear_encoder(), tmp_path / "out", **notes)
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_another_config_json_is_not_overwritten(tmp_path):
    """`demos/export.py runs/byol --out runs/byol` replaced the run's record with the export's."""
    record = json.dumps({"demo": "byol", "flags": {"seed": 0}})
    (tmp_path / CONFIG).write_text(record)
    with pytest.raises(FileExistsError, match=r"^save_encoder: .*config.json exists and is not an "
                                              r"exported encoder's config"):
        save_encoder(linear_encoder(), tmp_path)
    assert (tmp_path / CONFIG).read_text() == record and not (tmp_path / WEIGHTS).exists()
    save_encoder(linear_encoder(), tmp_path / "exported")
    save_encoder(linear_encoder(), tmp_path / "exported")   # an earlier export is replaced
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match=r"^save_encoder: .*file exists and is not a folder"):
        save_encoder(linear_encoder(), tmp_path / "file")


def test_an_encoder_that_is_not_finite_is_not_exported(tmp_path):
    encoder = linear_encoder()
    encoder.layers[1].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^save_encoder: tensor '1.weight' \[4, 12\] holds 1 NaN or inf"):
        save_encoder(encoder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_pooling_is_refused_not_written_as_no_pooling(tmp_path):
    with pytest.raises(ValueError, match=r"^save_encoder: pooling must be one of \('mean', 'cls', 'none'\)"):
        save_encoder(linear_encoder(), tmp_path, pooling="max")


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c.pop("architecture"), r"config.json: no architecture"),
    (lambda c: c.update(architecture=[1]), r"config.json: no architecture"),
    (lambda c: c["architecture"].pop("layers"), r"^export: a Sequential entry must be"),
    (lambda c: c["architecture"]["layers"][1].update(bogus=1),
     r"^export: cannot build .*'Linear'.*unexpected keyword argument 'bogus'"),
    (lambda c: c["architecture"]["layers"][1].pop("in_features"),
     r"^export: cannot build .*'Linear'.*missing 1 required positional argument: 'in_features'"),
    (lambda c: c["architecture"]["layers"][0].update(type=["Flatten"]), r"^export: an architecture entry must be"),
    (lambda c: c.update(dtype="garbage"), r"config.json: dtype must be one of \('float16', 'float32', 'float64'\)"),
])
def test_a_tampered_config_is_refused_by_what_is_wrong(tmp_path, tamper, message):
    """Each gave a raw KeyError, TypeError (unexpected keyword, unhashable list) or NumPy's
    'data type not understood' naming no file."""
    save_encoder(linear_encoder(), tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    tamper(config)
    (tmp_path / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_encoder(tmp_path)


def test_a_float16_encoder_round_trips(tmp_path):
    """The config's dtype check keeps what Module.astype gives and safetensors holds."""
    encoder = linear_encoder().astype("float16")
    save_encoder(encoder, tmp_path)
    assert load_encoder(tmp_path).layers[1].weight.dtype == np.float16


# ----- PyTorch ------------------------------------------------------------------------------------

def torch_vit(torch, timm):
    """A ViT with timm's module names and forward_features, from the arguments config.json gives
    for timm.models.VisionTransformer (only those minienc's export sets)."""
    tnn, F = torch.nn, torch.nn.functional

    class Attention(tnn.Module):
        def __init__(self, dim, heads, bias):
            super().__init__()
            self.heads, self.qkv, self.proj = heads, tnn.Linear(dim, 3 * dim, bias=bias), tnn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))

    class Mlp(tnn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1, self.act, self.fc2 = tnn.Linear(dim, hidden), tnn.GELU(approximate="tanh"), tnn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(tnn.Module):
        def __init__(self, dim, heads, ratio, bias):
            super().__init__()
            self.norm1, self.norm2 = tnn.LayerNorm(dim, eps=1e-6), tnn.LayerNorm(dim, eps=1e-6)
            self.attn, self.mlp = Attention(dim, heads, bias), Mlp(dim, int(dim * ratio))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(tnn.Module):
        def __init__(self, channels, dim, p):
            super().__init__()
            self.proj = tnn.Conv2d(channels, dim, p, stride=p)

    class VisionTransformer(tnn.Module):
        def __init__(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                     qkv_bias, class_token, pos_embed, **_):
            super().__init__()
            grid = (img_size[0] // patch_size) * (img_size[1] // patch_size)
            self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
            self.cls_token = tnn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
            self.pos_embed = tnn.Parameter(torch.zeros(1, grid, embed_dim)) if pos_embed == "learn" else None
            self.blocks = tnn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
            self.norm = tnn.LayerNorm(embed_dim, eps=1e-6)

        def forward_features(self, x):
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
            if self.pos_embed is not None:
                x = x + self.pos_embed               # no_embed_class: the patches only
            if self.cls_token is not None:
                x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
            return self.norm(self.blocks(x))

        def forward(self, x):                        # global_pool="avg": the patch tokens' mean
            return self.forward_features(x)[:, 0 if self.cls_token is None else 1:].mean(dim=1)

    assert timm["no_embed_class"] and timm["act_layer"] == "gelu_tanh" and not timm["fc_norm"]
    assert timm["global_pool"] == "avg" and timm["num_classes"] == 0
    return VisionTransformer(**timm)


def relative_error(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("kind", ["digits", "colour-cls"])
def test_a_pytorch_vit_with_timms_names_gives_minienc_embeddings(kind, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file   # noqa: F401 (what users call)
    if kind == "digits":   # the real digits' test split, the demos' default ViT shape
        from minienc.data import load_digits
        images = load_digits().x_test
        vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=32, depth=2, num_heads=4)
    else:
        images = np.random.default_rng(0).uniform(0, 1, (64, 3, 16, 16)).astype(np.float32)
        vit = nn.VisionTransformer(image_size=16, patch_size=4, in_channels=3, dim=24, depth=2,
                                   num_heads=3, cls_token=True, pos_embed="learned", mlp_ratio=3.0)
    perturbed(vit, scale=0.1).eval()
    with no_grad():
        tokens = vit(minienc.tensor(images)).numpy()
    ours = tokens[:, 1 if vit.cls_token is not None else 0:].mean(axis=1)
    save_encoder(vit, tmp_path, pooling="mean")
    config = json.loads((tmp_path / CONFIG).read_text())
    model = torch_vit(torch, config["timm"])
    model.load_state_dict(torch_load_file(str(tmp_path / WEIGHTS)), strict=True)
    with torch.no_grad():
        theirs = model(torch.from_numpy(images)).numpy()
        all_tokens = model.forward_features(torch.from_numpy(images)).numpy()
    error = relative_error(ours, theirs)
    print(f"ViT ({kind}) minienc vs PyTorch: max relative error {error:.2e} (embeddings), "
          f"{relative_error(tokens, all_tokens):.2e} (every token)")
    assert error < 1e-5 and relative_error(tokens, all_tokens) < 1e-5


def test_pytorch_sequentials_load_the_mlp_and_conv_encoders(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file
    tnn = torch.nn
    twins = {
        "mlp": tnn.Sequential(tnn.Flatten(), tnn.Sequential(
            tnn.Linear(48, 32, bias=False), tnn.BatchNorm1d(32), tnn.ReLU(),
            tnn.Linear(32, 16, bias=False), tnn.BatchNorm1d(16), tnn.ReLU(), tnn.Linear(16, 8))),
        "conv": tnn.Sequential(tnn.Conv2d(3, 4, 3, 2, 1), tnn.ReLU(), tnn.Conv2d(4, 8, 3, 2, 1),
                               tnn.ReLU(), tnn.Flatten(), tnn.Linear(32, 10)),
    }
    for kind, twin in twins.items():
        make, shape = ENCODERS[kind]
        encoder = perturbed(make()).eval()
        save_encoder(encoder, tmp_path / kind)
        result = twin.load_state_dict(torch_load_file(str(tmp_path / kind / WEIGHTS)), strict=False)
        # torch's BatchNorm also counts its batches (num_batches_tracked), which minienc has no use for
        assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
        x = inputs(shape)
        with no_grad(), torch.no_grad():
            ours, theirs = encoder(x).numpy(), twin.eval()(torch.from_numpy(x.numpy())).numpy()
        assert relative_error(ours, theirs) < 1e-5, kind
