"""minienc.export and minienc.safetensors (issue 29): every encoder kind goes to model.safetensors
+ config.json and comes back bit-identical; the files are the safetensors package's byte for byte
and read by it; a file that lies (shape, dtype, missing or extra tensor, offsets) is refused by
tensor name; with PyTorch installed, a ViT written with timm's names loads the file strictly and
gives minienc's embeddings, and so do torch.nn.Sequential twins of the MLP and conv encoders."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minienc
from minienc import nn
from minienc.engine import no_grad
from minienc.objectives import Objective
from minienc.export import (CONFIG, WEIGHTS, describe, exported_names, from_pytorch_layout,
                            load_encoder, save_encoder, to_pytorch_layout)
from minienc.safetensors import DTYPES, SafetensorsError, load_file, save_file


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


# ----- the safetensors format ---------------------------------------------------------------------

def sample_tensors(rng):
    return {"weight": rng.normal(size=(3, 4)).astype(np.float32), "bias": np.arange(3.0),
            "count": np.array(7, np.int64), "mask": np.array([True, False]),
            "half": rng.normal(size=5).astype(np.float16), "empty": np.zeros((0, 2), np.float32),
            "bytes": np.arange(5, dtype=np.uint8).reshape(5, 1), "wide": np.arange(2, dtype=np.uint64),
            "small": np.arange(3, dtype=np.int16), "unsigned": np.arange(3, dtype=np.uint16)}


def test_files_are_the_packages_byte_for_byte_and_read_both_ways(tmp_path):
    package = pytest.importorskip("safetensors.numpy")
    # (one metadata entry: the package writes several in its hash map's order)
    tensors, metadata = sample_tensors(np.random.default_rng(0)), {"format": "pt"}
    save_file(tensors, tmp_path / "ours.safetensors", metadata)
    package.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    theirs = package.load_file(str(tmp_path / "ours.safetensors"))
    ours, read_metadata = load_file(tmp_path / "theirs.safetensors")
    assert read_metadata == metadata
    for name, value in tensors.items():
        for got in (theirs[name], ours[name]):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                       st.tuples(st.sampled_from(sorted(DTYPES)),
                                 st.lists(st.integers(0, 3), max_size=3)), max_size=5))
def test_any_tensors_round_trip(tmp_path_factory, entries):
    rng = np.random.default_rng(0)
    tensors = {n: (rng.normal(size=shape) * 50).astype(DTYPES[code]) for n, (code, shape) in entries.items()}
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_file(tensors, path)
    loaded, _ = load_file(path)
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value), name


def rewrite(path, header, data=None):
    """Write `path` again with another header (and data): a file that lies."""
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    data = raw[8 + length:] if data is None else data
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def header_of(path):
    raw = path.read_bytes()
    return json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])


@pytest.mark.parametrize("lie, message", [
    (lambda h: h["a"].update(data_offsets=[0, 16]), r"tensor 'a': shape \[3\] of F32 is 12 bytes but its data_offsets \[0, 16\] span 16"),
    (lambda h: h["b"].update(data_offsets=[8, 20]), r"tensors 'a' and 'b' overlap"),
    (lambda h: (h["a"].update(data_offsets=[4, 16]), h["b"].update(data_offsets=[16, 28])), r"a hole of 4 bytes before tensor 'a'"),
    (lambda h: h["b"].update(shape=[2]), r"tensor 'b': shape \[2\] of F32 is 8 bytes"),
    (lambda h: h["a"].update(dtype="BF16"), r"tensor 'a': dtype 'BF16' is not one of"),
    (lambda h: h["a"].update(data_offsets=[12, 0]), r"tensor 'a': data_offsets \[12, 0\] are not"),
    (lambda h: h.update(c={"dtype": "F32", "shape": [1], "data_offsets": [24, 28]}), r"the tensors end at byte 28 of the data but the file holds 24 \(truncated\?\)"),
    (lambda h: h["a"].update(extra=1), r"tensor 'a': an entry needs exactly dtype, shape and data_offsets"),
])
def test_a_header_that_lies_is_refused_by_tensor_name(tmp_path, lie, message):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32), "b": np.ones(3, np.float32)}, path)
    header = header_of(path)
    lie(header)
    rewrite(path, header)
    with pytest.raises(SafetensorsError, match=message):
        load_file(path)


def test_files_that_are_not_safetensors_are_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, path)
    whole = path.read_bytes()
    cases = [(whole[:5], "shorter than the 8-byte header length"),
             (struct.pack("<Q", 10**6) + whole[8:], "the header length says 1,000,000 bytes"),
             (whole[:-4], r"the file holds 8 \(truncated\?\)"),
             (whole + b"\0" * 4, r"bytes after the last tensor"),
             (struct.pack("<Q", 4) + b"{abc", "the header is not JSON"),
             (struct.pack("<Q", 2) + b"[]", "the header is not a JSON object")]
    for raw, message in cases:
        path.write_bytes(raw)
        with pytest.raises(SafetensorsError, match=message):
            load_file(path)


def test_writes_are_atomic_and_refuse_what_the_format_cannot_hold(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(SafetensorsError, match="not object"):
        save_file({"a": np.array([None])}, path)
    with pytest.raises(SafetensorsError, match="not complex128"):
        save_file({"a": np.zeros(2, complex)}, path)

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_file({"a": np.ones(3, np.float32)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["t.safetensors"]


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


def test_a_tensor_listed_twice_in_the_header_is_refused(tmp_path):
    """json.loads keeps the last of two entries with one name: which tensor is it?"""
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, path)
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    text = raw[8:8 + length].decode().rstrip()
    text = '{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},' + text[1:]
    text += " " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + raw[8 + length:])
    with pytest.raises(SafetensorsError, match=r"tensor 'a' is listed twice in the header"):
        load_file(path)


def test_metadata_that_is_not_a_dict_is_refused_by_name(tmp_path):
    with pytest.raises(SafetensorsError, match=r"^save_file: metadata must map strings to strings"):
        save_file({"a": np.zeros(2)}, tmp_path / "t.safetensors", metadata=[("a", "b")])


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


# ----- demos/export.py: what a demo trained, taken out of its run ---------------------------------

def exported_embedding(folder):
    """The demo's embedding from an exported folder alone: load_encoder, then what config.json's
    notes say the demo did around it (normalise, pool, keep the posterior mean)."""
    encoder = load_encoder(folder)
    notes = json.loads((folder / CONFIG).read_text())["notes"]

    def embed(images):
        if "normalize" in notes:
            images = (images - notes["normalize"]["mean"]) / notes["normalize"]["std"]
        out = encoder(images)
        if notes.get("pooling") == "mean":
            out = out[:, 1 if getattr(encoder, "cls_token", None) is not None else 0:].mean(axis=1)
        if "output" in notes:   # the VAE: the posterior mean, then its log-variance
            out = out[:, :out.shape[1] // 2]
        return out
    return embed


# one of each kind the export script rebuilds: a conv stack, an MLP behind a Flatten (VAE: the
# posterior mean), the whole model (triplet), a nested teacher (DINO), ViTs with and without
# the input normalisation (MAE, JEPA), and MoCo's query encoder (it was not found: the whole
# model was tried, and refused as "not a layer of a Sequential")
@pytest.mark.parametrize("demo, extra", [("autoencoder", ["--arch", "conv"]), ("vae", []),
                                         ("triplet", []), ("dino", []), ("mae", []), ("jepa", []),
                                         ("moco", ["--queue", "32"])])
def test_an_exported_demo_encoder_evaluates_as_the_demo_did(demo, extra, tmp_path, monkeypatch):
    from demo_check import run_in_process
    from test_demo_runs import IMAGE_DEMOS, QUICK
    from minienc.data import load_dataset
    from minienc.eval import evaluate
    flags, _ = IMAGE_DEMOS[demo]
    run_in_process(f"{demo}.py", "--out", tmp_path / "run", *QUICK, *flags, *extra,
                   monkeypatch=monkeypatch)
    run_in_process("export.py", tmp_path / "run" / "checkpoint.npz", "--out", tmp_path / "exported",
                   monkeypatch=monkeypatch)
    trained = json.loads((tmp_path / "run" / "results.json").read_text())[0]
    data = load_dataset("digits", max_train=100, max_test=50)
    again = evaluate(exported_embedding(tmp_path / "exported"), data, draws=2, verbose=False)
    for key in ("dim", "linear", "fewshot", "knn"):
        assert again[key] == pytest.approx(trained[key], abs=1e-6), (demo, key)
    assert again["rankme"] == pytest.approx(trained["rankme"], rel=1e-4), demo


def test_export_refuses_by_name_what_it_cannot_take(tmp_path, monkeypatch):
    """A damaged run record gave a raw JSONDecodeError, a text run's a KeyError 'data', a cut
    checkpoint a traceback, and --out the run's own folder overwrote its config.json."""
    from demo_check import run_in_process
    from test_demo_runs import QUICK
    run_in_process("autoencoder.py", "--out", tmp_path / "run", *QUICK, monkeypatch=monkeypatch)
    record = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(SystemExit, match=r"config.json exists and is not an exported encoder's config"):
        run_in_process("export.py", tmp_path / "run", "--out", tmp_path / "run", monkeypatch=monkeypatch)
    assert (tmp_path / "run" / "config.json").read_text() == record
    whole = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.npz").write_bytes(whole[:3000])
    with pytest.raises(SystemExit, match=r"^export: checkpoint .*checkpoint.npz is truncated or corrupt"):
        run_in_process("export.py", tmp_path / "cut", "--out", tmp_path / "out", monkeypatch=monkeypatch)
    for damaged, message in (('{"flags": ', r"cannot be read \(JSONDecodeError"),
                             (json.dumps({"flags": {}, "data": {"name": "text"}}), r"records no image shape")):
        (tmp_path / "run" / "config.json").write_text(damaged)
        with pytest.raises(SystemExit, match=r"^export: .*config.json.* " + message):
            run_in_process("export.py", tmp_path / "run", "--out", tmp_path / "out", monkeypatch=monkeypatch)


class Distilled(Objective):
    """An objective that trains `encoder` but embeds with `slow`, another network: the export
    used to guess the encoder from the keys' prefixes ("encoder." before the whole model) and
    took the trained one, not the evaluated one."""

    def __init__(self):
        self.encoder = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8)), seed=1)
        self.slow = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (12,), 6)), seed=2)

    def embed(self, x):
        return self.slow(x)

    def embed_module(self):
        return self.slow


def saved_run(folder, models):
    """A run folder as a demo leaves it: checkpoint.npz of `models` and the config.json the
    export reads (the images' shape)."""
    from minienc.checkpoint import save_checkpoint
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"demo": "custom", "flags": {},
                                                    "data": {"image_shape": [1, 8, 8]}}))
    return save_checkpoint(folder / "checkpoint.npz", models)


def moco():
    """MoCo embeds with query_encoder.layers.0, none of the prefixes the export guessed from: it
    fell back to the whole objective and could not rebuild it."""
    from minienc.data import contrastive_augment
    from minienc.objectives import MoCo, projection_head
    return MoCo(perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8, batch_norm=True))),
                projection_head(8, 16, 4, batch_norm=False), contrastive_augment(), queue_size=16)


@pytest.mark.parametrize("make, tensors_from", [(Distilled, "objective/slow"),
                                                (moco, "objective/query_encoder.layers.0")])
def test_the_export_takes_the_module_the_objective_embeds_with(make, tensors_from, tmp_path, monkeypatch):
    from demo_check import run_in_process
    objective = make().eval()
    checkpoint = saved_run(tmp_path / "run", {"objective": objective})
    run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", monkeypatch=monkeypatch)
    loaded = load_encoder(tmp_path / "exported")
    config = json.loads((tmp_path / "exported" / CONFIG).read_text())
    assert config["notes"]["tensors_from"] == tensors_from
    x = inputs((5, 1, 8, 8))
    with no_grad():
        assert np.array_equal(loaded(x).numpy(), objective.embed(x).numpy())


def test_a_checkpoint_that_records_no_encoder_is_refused_until_one_is_named(tmp_path, monkeypatch):
    """A checkpoint written before the encoder was recorded (here: of a plain model, which has
    none to record) is refused with the way out, not exported by a guess."""
    from demo_check import run_in_process
    model = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8)))
    checkpoint = saved_run(tmp_path / "run", {"model": model})
    with pytest.raises(SystemExit, match=r"does not record which module is the encoder.*"
                                         r"--encoder MODEL/PREFIX; the checkpoint's models: model \(layers\)"):
        run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", monkeypatch=monkeypatch)
    run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", "--encoder", "model/",
                   monkeypatch=monkeypatch)
    a, b = model.state_dict(), load_encoder(tmp_path / "exported").state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
