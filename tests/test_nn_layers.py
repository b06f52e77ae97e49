"""Basic layers (Linear, activations, Dropout, Embedding, norms), initialisers and Module plumbing,
on every backend: gradients of inputs and parameters against finite differences, plus the
behaviour each layer promises (dropout scaling, batch-norm running statistics, ...)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from nn_check import gradcheck_module, rand


def host(t):
    return t.numpy() if isinstance(t, minienc.Tensor) else backend.to_host(t)


# ----- Linear and activations -----------------------------------------------------------------

@given(batch=st.lists(st.integers(1, 3), min_size=1, max_size=2), fan_in=st.integers(1, 4),
       fan_out=st.integers(1, 4), bias=st.booleans())
def test_linear_gradcheck_any_rank(batch, fan_in, fan_out, bias):
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    assert gradcheck_module(layer, rand("cpu", *batch, fan_in))


def test_linear_gradcheck_on_device(device):
    layer = nn.Linear(3, 2).to(device)
    assert gradcheck_module(layer, rand(device, 2, 4, 3))


def test_linear_matches_numpy_and_stays_float32(device):
    layer = nn.Linear(5, 3).to(device)
    x = minienc.tensor(np.random.default_rng(1).standard_normal((4, 5)), device=device)
    y = layer(x)
    assert y.dtype == np.float32 and layer.weight.dtype == np.float32
    expected = host(x) @ host(layer.weight).T + host(layer.bias)
    np.testing.assert_allclose(host(y), expected, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32


def test_linear_default_init_bounds():
    layer = nn.Linear(100, 50)
    bound = 1.0 / np.sqrt(100)
    w = host(layer.weight)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(host(layer.bias)).max() <= bound


def test_linear_wrong_input_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Linear\(4, 2\).*\(3, 5\)"):
        nn.Linear(4, 2)(minienc.tensor(np.zeros((3, 5))))


def test_linear_input_is_checked_in_one_place():
    """The layer leaves the check to the op, so both say the same thing."""
    layer, x = nn.Linear(4, 2), minienc.tensor(np.zeros((3, 5)))
    with pytest.raises(ValueError) as from_layer:
        layer(x)
    with pytest.raises(ValueError) as from_op:
        minienc.ops.linear(x, layer.weight, layer.bias)
    assert str(from_layer.value) == str(from_op.value)


def test_layer_norm_input_is_checked_in_one_place():
    """With a weight the op checks the input against it, naming the layer it makes; without one
    (affine=False) the layer checks its size, which the op cannot know."""
    x = minienc.tensor(np.zeros((3, 5)))
    message = (r"^layer_norm: a weight and bias of shape \(4,\), as in LayerNorm\(4\), take inputs "
               r"\(\.\.\., 4\); got shape \(3, 5\)$")
    layer = nn.LayerNorm(4)
    with pytest.raises(ValueError, match=message):
        layer(x)
    with pytest.raises(ValueError, match=message):
        minienc.layer_norm(x, layer.weight, layer.bias)
    with pytest.raises(ValueError, match=r"^LayerNorm\(4, affine=False\): input has shape \(3, 5\)"):
        nn.LayerNorm(4, affine=False)(x)
    with pytest.raises(ValueError, match=r"^layer_norm: weight and bias must both have shape \(D,\), "
                                         r"got \(5,\) and \(4,\)"):
        minienc.layer_norm(x, minienc.tensor(np.ones(5)), minienc.tensor(np.zeros(4)))


def test_attention_input_is_checked_in_one_place():
    """MultiHeadAttention leaves its input to the qkv Linear (the last axis) and to the op (the
    rank): each error names the shapes."""
    attention = nn.MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"^linear: a weight of shape \(48, 16\), as in Linear\(16, 48\), "
                                         r"takes inputs \(\.\.\., 16\); got shape \(2, 5, 8\)$"):
        attention(minienc.tensor(np.zeros((2, 5, 8))))
    with pytest.raises(ValueError, match=r"^multi_head_attention: expected packed qkv \(B, L, 3\*D\), .*"
                                         r"got shape \(2, 48\)$"):
        attention(minienc.tensor(np.zeros((2, 16))))


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.GELU(), nn.Tanh(), nn.Sigmoid(), nn.Identity(),
                                   nn.Flatten(), nn.Unflatten((2, 3))], ids=lambda m: type(m).__name__)
def test_activation_and_shape_layers_gradcheck(device, layer):
    x = rand(device, 2, 6) + 0.05  # (relu's kink at 0 is measure-zero; nudged off it anyway)
    assert gradcheck_module(layer, x)


def test_flatten_shapes():
    x = minienc.tensor(np.zeros((2, 3, 4, 5)))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(2)(x).shape == (2, 3, 20)
    assert nn.Unflatten((3, 4, 5))(nn.Flatten()(x)).shape == (2, 3, 4, 5)


# ----- Dropout --------------------------------------------------------------------------------

def test_dropout_scaling_and_eval_identity(device):
    layer = nn.Dropout(0.25)
    x = minienc.tensor(np.ones((200, 100)), device=device)
    y = host(layer(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1.0 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.01  # 20,000 draws: std of the mean ~0.003
    assert y.dtype == np.float32
    layer.eval()
    assert layer(x) is x


def test_dropout_gradcheck(device):
    assert gradcheck_module(nn.Dropout(0.5), rand(device, 3, 4), reseed=True)


def test_dropout_gradient_is_the_mask(device):
    x = minienc.tensor(np.ones((50, 20)), requires_grad=True, device=device)
    y = nn.Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(host(x.grad), host(y))


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match="Dropout"):
        nn.Dropout(1.0)


# ----- Embedding ------------------------------------------------------------------------------

def test_embedding_lookup_and_repeated_id_gradients(device):
    emb = nn.Embedding(5, 3).to(device)
    ids = minienc.tensor(np.array([[0, 2, 2], [4, 2, 0]]), device=device)
    out = emb(ids)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(host(out), host(emb.weight)[host(ids)])
    out.sum().backward()
    counts = np.array([2, 0, 3, 0, 1], dtype=np.float32)[:, None]
    np.testing.assert_array_equal(host(emb.weight.grad), np.broadcast_to(counts, (5, 3)))


def test_embedding_gradcheck(device):
    emb = nn.Embedding(4, 3).to(device)
    ids = minienc.tensor(np.array([[1, 3, 1], [0, 1, 2]]), device=device)
    assert gradcheck_module(emb, ids)


def test_embedding_out_of_range_is_a_clear_error():
    with pytest.raises(IndexError, match="embedding: id 7"):
        nn.Embedding(5, 2)(minienc.tensor(np.array([1, 7])))


# ----- initialisers ---------------------------------------------------------------------------

def test_initialisers_statistics():
    t = nn.init.empty((400, 300))
    w = host(nn.init.xavier_uniform(t))
    bound = np.sqrt(6.0 / 700)
    assert np.abs(w).max() <= bound and abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    w = host(nn.init.kaiming_normal(t, nonlinearity="relu"))
    assert abs(w.std() - np.sqrt(2.0 / 300)) < 0.02 * np.sqrt(2.0 / 300)
    w = host(nn.init.trunc_normal(t, std=0.02))
    assert np.abs(w).max() <= 0.04 and abs(w.std() - 0.0176) < 0.001  # std of N(0,1) cut at 2: 0.880
    assert w.dtype == np.float32


def test_same_seed_same_weights_on_every_device(device):
    previous = minienc.get_device()
    try:
        minienc.set_device(device)  # built directly on the device, not moved there
        minienc.manual_seed(7)
        a = nn.Sequential(nn.Linear(3, 4), nn.Embedding(6, 2), nn.LayerNorm(4), nn.Conv2d(1, 2, 3))
    finally:
        minienc.set_device(previous)
    minienc.manual_seed(7)
    b = nn.Sequential(nn.Linear(3, 4), nn.Embedding(6, 2), nn.LayerNorm(4), nn.Conv2d(1, 2, 3))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert p.device == device
        np.testing.assert_array_equal(host(p), host(q), err_msg=name)


# ----- Module plumbing ------------------------------------------------------------------------

def test_state_dict_round_trip_with_buffers(device):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(device)
    model(minienc.tensor(np.random.default_rng(0).standard_normal((8, 3)), device=device))
    state = model.state_dict()
    assert "layers.1.running_mean" in state and "layers.1.running_var" in state
    minienc.manual_seed(99)
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(device)
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    model.eval(), other.eval()
    x = minienc.tensor(np.ones((2, 3)), device=device)
    np.testing.assert_array_equal(host(model(x)), host(other(x)))


def test_functional_call_restores_parameters():
    layer = nn.Linear(2, 2)
    original = layer.weight
    replacement = minienc.tensor(np.eye(2), requires_grad=True)
    out = nn.functional_call(layer, {"weight": replacement}, minienc.tensor(np.ones((1, 2))))
    assert layer.weight is original
    np.testing.assert_allclose(host(out), 1.0 + host(layer.bias)[None], rtol=1e-6)
    with pytest.raises(KeyError, match="nope"):
        nn.functional_call(layer, {"nope": replacement}, minienc.tensor(np.ones((1, 2))))


def test_astype_casts_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).astype("float64")
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(b.dtype == np.float64 for _, b in model.named_buffers())


class Heads(nn.Module):
    """Modules and parameters inside a dict, a nested list and a tuple."""

    def __init__(self):
        self.heads = {"text": nn.Linear(3, 2), "image": nn.Linear(3, 2)}
        self.stages = [[nn.Linear(3, 3)], [nn.Linear(3, 3), nn.BatchNorm1d(3)]]
        self.scales = (nn.Parameter(np.ones(3)),)

    def forward(self, x):
        for stage in self.stages:
            for layer in stage:
                x = layer(x)
        x = x * self.scales[0]
        return self.heads["text"](x) + self.heads["image"](x)


def test_modules_in_dicts_and_nested_lists_are_found(device):
    model = Heads().to(device)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scales.0", "heads.text.weight", "heads.text.bias", "heads.image.weight",
                     "heads.image.bias", "stages.0.0.weight", "stages.0.0.bias", "stages.1.0.weight",
                     "stages.1.0.bias", "stages.1.1.weight", "stages.1.1.bias"]
    assert {p.device for p in model.parameters()} == {device}
    state = model.state_dict()
    assert "stages.1.1.running_mean" in state
    x = minienc.tensor(np.random.default_rng(0).standard_normal((4, 3)), device=device)
    minienc.manual_seed(5)
    other = Heads().to(device).load_state_dict(state)
    model.eval(), other.eval()
    np.testing.assert_array_equal(host(model(x)), host(other(x)))
    assert all(p.dtype == np.float64 for p in Heads().astype("float64").parameters())
    assert gradcheck_module(Heads().to(device).eval(), rand(device, 2, 3))   # functional_call reaches them


def test_modules_in_a_set_or_under_bad_dict_keys_are_refused():
    class InASet(nn.Module):
        def __init__(self):
            self.layers = {nn.Linear(2, 2)}

    class DottedKey(nn.Module):
        def __init__(self):
            self.heads = {"a.b": nn.Linear(2, 2)}
    with pytest.raises(TypeError, match=r"InASet.layers holds modules or parameters in a set"):
        InASet().parameters()
    with pytest.raises(TypeError, match=r"DottedKey.heads holds a module or parameter under the dict "
                                        r"key 'a.b'"):
        DottedKey().state_dict()


def test_a_refused_state_dict_changes_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad_buffer = dict(before, **{"layers.1.running_var": np.ones(5)})   # params come first, buffers last
    with pytest.raises(ValueError, match=r"layers.1.running_var has shape \(4,\) in the model but \(5,\)"):
        model.load_state_dict({k: v + 1 for k, v in bad_buffer.items()})
    strings = dict(before, **{"layers.1.bias": np.array(["a"] * 4)})
    with pytest.raises(TypeError, match=r"layers.1.bias is float32 in the model but <U1 in the state"):
        model.load_state_dict({k: (v + 1 if v.dtype.kind == "f" else v) for k, v in strings.items()})
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


# ----- LayerNorm and BatchNorm ----------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck(device, affine):
    layer = nn.LayerNorm(5, affine=affine).to(device)
    if affine:  # move weight and bias off 1 and 0 so a backward that ignores them fails
        nn.init.normal(layer.weight, 1.0, 0.5), nn.init.normal(layer.bias, 0.0, 0.5)
    assert gradcheck_module(layer, rand(device, 2, 3, 5))


def test_layer_norm_normalises_last_axis(device):
    x = minienc.tensor(np.random.default_rng(0).standard_normal((4, 7)) * 3 + 2, device=device)
    y = host(nn.LayerNorm(7).to(device)(x))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-3)
    assert y.dtype == np.float32


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 2)),
                                       (nn.BatchNorm2d, (2, 3, 2, 2))])
def test_batch_norm_gradcheck_train_and_eval(device, cls, shape):
    layer = cls(3).to(device)
    nn.init.normal(layer.weight, 1.0, 0.5), nn.init.normal(layer.bias, 0.0, 0.5)
    assert gradcheck_module(layer, rand(device, *shape))
    layer.eval()
    layer._buffers["running_var"] += 0.5  # non-trivial statistics for the eval map
    assert gradcheck_module(layer, rand(device, *shape, seed=1))


def test_batch_norm_running_statistics_and_modes(device):
    layer = nn.BatchNorm1d(2, momentum=0.1).to(device)
    data = np.random.default_rng(0).standard_normal((16, 2)) * [1.0, 3.0] + [5.0, -1.0]
    x = minienc.tensor(data, device=device)
    y = host(layer(x))
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)  # training: batch statistics
    np.testing.assert_allclose(y.var(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(host(layer.running_mean), 0.1 * data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(host(layer.running_var), 0.9 + 0.1 * data.var(0, ddof=1), rtol=1e-5)
    assert layer.running_mean.dtype == np.float32
    layer.eval()
    before = host(layer.running_mean).copy()
    y = host(layer(x))
    expected = (data - host(layer.running_mean)) / np.sqrt(host(layer.running_var) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)  # eval: running statistics
    np.testing.assert_array_equal(host(layer.running_mean), before)  # and leaves them alone


def test_batch_norm_errors_name_layer_and_shape():
    # the channels are checked once, by the op; the rank, which only the layer knows, by the layer
    with pytest.raises(ValueError, match=r"^batch_norm: 3 channels, as in BatchNorm2d\(3\), take "
                                         r"inputs \(N, 3, \.\.\.\); got shape \(2, 4, 5, 5\)$"):
        nn.BatchNorm2d(3)(minienc.tensor(np.zeros((2, 4, 5, 5))))
    with pytest.raises(ValueError, match=r"^batch_norm: 3 channels, as in BatchNorm1d\(3\).*\(8, 4\)$"):
        nn.BatchNorm1d(3).eval()(minienc.tensor(np.zeros((8, 4))))
    with pytest.raises(ValueError, match=r"^BatchNorm2d\(3\): input has shape \(8, 3\), expected \(N, C, H, W\)"):
        nn.BatchNorm2d(3)(minienc.tensor(np.zeros((8, 3))))
    with pytest.raises(ValueError, match=r"^batch_norm: input \(5,\) needs shape \(N, C, \.\.\.\)$"):
        minienc.ops.batch_norm(minienc.tensor(np.zeros(5)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(minienc.tensor(np.zeros((1, 3))))


def test_mlp_encoder_structure_and_gradcheck(device):
    enc = nn.MLPEncoder(6, (5, 4), 3)
    assert [type(m).__name__ for m in enc.layers] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    with_bn = nn.MLPEncoder(6, (5,), 3, activation=nn.GELU, batch_norm=True)
    assert [type(m).__name__ for m in with_bn.layers] == ["Linear", "BatchNorm1d", "GELU", "Linear"]
    assert with_bn.layers[0].bias is None
    assert gradcheck_module(enc.to(device), rand(device, 4, 6))
    assert gradcheck_module(with_bn.to(device), rand(device, 4, 6))
