"""The Tensor surface: construction, moving between devices, detach, the creation helpers and
shape methods; the error messages a user sees when operands do not fit (shapes, dtypes,
devices), and the dtype integer and boolean operands take."""
import numpy as np
import pytest

import minienc
from minienc import backend
from minienc.backend import to_host


def t(values, device, **kwargs):
    return minienc.tensor(values, device=device, **kwargs)


# ----- the Tensor surface --------------------------------------------------------------------
def test_tensor_construction(device):
    host = np.array([[1.0, 2.0]])  # float64
    x = t(host, device)
    assert x.dtype == np.float32 and x.shape == (1, 2) and x.device == device
    x.data[0, 0] = 5.0
    assert host[0, 0] == 1.0  # a copy, never a view of the caller's array
    assert t([1, 2], device).dtype == np.int64 and t([True], device).dtype == np.bool_
    assert t(host, device, dtype="float64").dtype == np.float64
    assert isinstance(x.numpy(), np.ndarray) and x.numpy().dtype == np.float32
    assert t([[2.5]], device).item() == 2.5 and isinstance(t([[2.5]], device).item(), float)
    with pytest.raises(ValueError, match=r"item: only a one-element tensor converts to a number, "
                                         r"got shape \(1, 2\)"):
        x.item()
    assert x.to(device) is x
    assert len(x) == 1 and x.ndim == 2 and x.size == 2


def test_to_moves_leaves_as_leaves_and_results_differentiably(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    moved = x.to("cpu")
    assert moved.device == "cpu" and moved.is_leaf and moved.requires_grad
    h = (x * 3.0).to("cpu")  # a result of ops crosses through a differentiable copy
    assert h.device == "cpu" and h.requires_grad
    (h * h).sum().backward()
    assert x.grad is not None and backend.device_of(x.grad) == device
    np.testing.assert_allclose(to_host(x.grad), [18.0, 36.0])
    back = h.detach().to(device)
    assert back.device == device and np.array_equal(back.numpy(), [3.0, 6.0])


def test_integer_tensor_cannot_require_grad(device):
    with pytest.raises(TypeError, match=r"tensor: only floating-point tensors can require gradients, "
                                        r"got dtype int64 \(shape \(2,\)\)"):
        t([1, 2], device, requires_grad=True)


def test_detach_shares_data_outside_the_graph(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    y = (x * 2.0).detach()
    assert not y.requires_grad and y._creator is None
    z = x.detach()
    assert z.data is x.data


def test_bool_follows_numpy(device):
    assert bool(t([3.0], device) > 2.0) and not bool(t(0.0, device))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t([1.0, 2.0], device) > 5.0)


def test_weak_scalars_keep_the_tensor_dtype(device):
    x = t([1.0, -2.0], device)
    mask = x > 0
    np.testing.assert_array_equal(minienc.where(mask, x, 1.5).numpy(), [1.0, 1.5])  # not cast to bool
    assert minienc.where(mask, x, 1.5).dtype == np.float32
    assert (x * np.float64(2.0)).dtype == np.float32
    np.testing.assert_array_equal((t([1, 2], device) * 2.5).numpy(), [2.5, 5.0])  # no int truncation
    assert (2 ** t([1, 2], device)).dtype == np.int64


def test_creation_helpers(device):
    z = minienc.zeros(2, 3, device=device)
    assert z.dtype == np.float32 and z.shape == (2, 3) and z.device == device and not z.numpy().any()
    assert minienc.ones((4,), device=device, dtype="float64").dtype == np.float64
    assert minienc.ones_like(z).numpy().sum() == 6 and minienc.zeros_like(z).device == device
    assert minienc.zeros(3, device=device, requires_grad=True).requires_grad
    minienc.manual_seed(7)
    a = minienc.randn(3, 4, device=device)
    minienc.manual_seed(7)
    b = minienc.randn(3, 4, device=device)
    assert a.dtype == np.float32 and np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), minienc.randn(3, 4, device=device).numpy())
    u = minienc.rand(1000, device=device).numpy()
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1 and 0.4 < u.mean() < 0.6


def test_squeeze_unsqueeze(device):
    x = t(np.ones((2, 1, 3)), device)
    assert x.squeeze().shape == (2, 3) and x.squeeze(1).shape == (2, 3) and x.squeeze(-2).shape == (2, 3)
    assert x.unsqueeze(0).shape == (1, 2, 1, 3) and x.unsqueeze(-1).shape == (2, 1, 3, 1)
    with pytest.raises(ValueError, match=r"squeeze: axis 0 of shape \(2, 1, 3\) has size 2, not 1"):
        x.squeeze(0)


# ----- error messages ------------------------------------------------------------------------
def test_misaligned_matmul_names_both_shapes(device):
    with pytest.raises(ValueError, match=r"^matmul: shapes \(3, 4\) and \(5, 6\) do not align$"):
        t(np.ones((3, 4)), device) @ t(np.ones((5, 6)), device)
    with pytest.raises(ValueError, match=r"^matmul: shapes \(3,\) and \(4,\) do not align$"):
        t(np.ones(3), device) @ t(np.ones(4), device)


def test_non_broadcastable_add_names_op_and_shapes(device):
    with pytest.raises(ValueError, match=r"^add: cannot apply to shapes \(2, 3\) and \(4,\)"):
        t(np.ones((2, 3)), device) + t(np.ones(4), device)
    with pytest.raises(ValueError, match=r"^reshape: cannot apply to shapes \(2, 3\)"):
        t(np.ones((2, 3)), device).reshape(4)


def test_mixed_float_dtypes_are_an_error_not_an_upcast(device):
    x32 = t([1.0, 2.0], device)
    with pytest.raises(TypeError, match=r"mul: dtypes float32 and float64 differ .* never upcasts silently"):
        x32 * t([1.0, 2.0], device, dtype="float64")
    with pytest.raises(TypeError, match=r"add: dtypes float32 and float64 differ"):
        x32 + x32.xp.ones(2)  # a raw float64 array is strong too


class FakeGPUArray(np.ndarray):
    """A host array that a patched backend reports as living on 'cuda'."""


def test_mixed_devices_name_both(device, monkeypatch):
    real = backend.device_of
    monkeypatch.setattr(backend, "device_of", lambda a: "cuda" if isinstance(a, FakeGPUArray) else real(a))
    cpu = minienc.tensor(np.ones((2, 3)), device="cpu")
    gpu = minienc.as_tensor(np.ones(3, dtype=np.float32).view(FakeGPUArray))
    assert gpu.device == "cuda"
    with pytest.raises(RuntimeError, match=r"^add: tensors on different devices: cpu \(shape \(2, 3\)\) "
                                           r"and cuda \(shape \(3,\)\); move one with \.to\(device\)"):
        cpu + gpu
    with pytest.raises(RuntimeError, match=r"^matmul: tensors on different devices: cuda .* and cpu"):
        minienc.ops.linalg.MatMul()(gpu.reshape(1, 3), cpu.T)


# ----- integer and boolean operands take the floating dtype --------------------------------
def test_integer_operands_never_promote_float32(device):
    w = t([0.5, 1.5, 2.5], device, requires_grad=True)
    y = t([1, 2, 3], device) + w
    assert y.dtype == np.float32
    y.sum().backward()
    assert w.grad.dtype == np.float32
    table = t(np.ones((3, 2)), device, requires_grad=True)
    one_hot = t(np.eye(3, dtype=np.int64)[[0, 2]], device)
    out = one_hot @ table
    assert out.dtype == np.float32
    out.sum().backward()
    assert table.grad.dtype == np.float32
    assert (w ** t([2, 2, 2], device)).dtype == np.float32
    assert (w * (w > 1.0)).dtype == np.float32  # a boolean mask
    scaled = t([1, 2], device) * 2.5
    assert scaled.dtype == np.float32 and scaled.numpy().tolist() == [2.5, 5.0]
    assert minienc.where(t([True, False, True], device), t([1, 2, 3], device), w).dtype == np.float32
    assert (t([1, 2], device) + t([3, 4], device)).dtype == np.int64  # no floating operand: stays int
    assert (w + [1, 2, 3]).dtype == np.float32 and (w + [1, 2, 3]).device == device   # a list too


def test_index_inputs_are_left_as_they_are_and_named_when_wrong(device):
    logits = t(np.zeros((2, 3)), device, requires_grad=True)
    assert minienc.cross_entropy(logits, t([0, 2], device)).dtype == np.float32
    with pytest.raises(ValueError, match=r"cross_entropy: logits \(2, 3\) need integer targets of shape "
                                         r"\(2,\), got float64 \(2,\)"):
        minienc.cross_entropy(logits, t([0.0, 2.0], device, dtype="float64"))
    table = t(np.ones((4, 2)), device, requires_grad=True)
    with pytest.raises(TypeError, match=r"embedding: needs integer ids"):
        minienc.embedding(t([1.0, 2.0], device), table)
