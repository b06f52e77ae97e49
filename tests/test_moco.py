"""MoCo: the queue (first in, first out, of normalised keys), the loss against the old queue,
the momentum update and the frozen key encoder, moving and casting the whole objective, its
state_dict, and the shuffled batch-norm groups."""
import numpy as np
import pytest

import minienc
from minienc import backend
from minienc.nn import BatchNorm1d, Flatten, Linear, MLPEncoder, ReLU, Sequential
from minienc.objectives.contrastive import MoCo, _in_groups, info_nce, projection_head
from minienc.optim import SGD

from ssl_check import host, images, on_device, t64, unit


def small_moco(device, queue_size=8, bn_groups=1, batch_norm=False):
    def build():
        encoder = Sequential(Flatten(), MLPEncoder(16, (8,), 6, batch_norm=batch_norm))
        head = projection_head(6, 8, 5, batch_norm=False)
        return MoCo(encoder, head, queue_size=queue_size, momentum=0.9, bn_groups=bn_groups, seed=0)
    return on_device(device, build)


def test_moco_queue_is_fifo_with_fixed_size_and_the_keys_as_content(device):
    moco = small_moco(device, queue_size=8)
    start = host(moco.queue).copy()
    np.testing.assert_allclose(np.linalg.norm(start, axis=1), 1.0, rtol=1e-6)
    keys = [np.full((n, 5), float(i)).astype(np.float32) for i, n in ((1, 4), (2, 4), (3, 3))]
    moco.enqueue(backend.to_device(keys[0], device))   # the newest last
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([start[4:], keys[0]]))
    moco.enqueue(backend.to_device(keys[1], device))
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([keys[0], keys[1]]))
    moco.enqueue(backend.to_device(keys[2], device))   # the oldest (keys[0]) goes first
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([keys[0][3:], keys[1], keys[2]]))
    assert moco.queue.shape == (8, 5)
    with pytest.raises(ValueError, match=r"MoCo.enqueue: 9 keys for a queue of 8"):
        moco.enqueue(backend.to_device(np.zeros((9, 5), np.float32), device))
    with pytest.raises(ValueError, match=r"keys of shape \(2, 4\) for a queue of shape \(8, 5\)"):
        moco.enqueue(backend.to_device(np.zeros((2, 4), np.float32), device))


def test_moco_loss_uses_the_old_queue_then_enqueues_the_normalised_keys(device):
    moco = small_moco(device, queue_size=8)
    x_q, x_k = images(4, device, 1), images(4, device, 2)
    old = host(moco.queue).copy()
    q = host(moco.query_encoder(x_q))
    k = unit(host(moco.key_encoder(x_k)))
    loss = moco.loss_of_views(x_q, x_k)["loss"]
    want = info_nce(t64(q, "cpu"), t64(k, "cpu"), t64(old, "cpu"), 0.2).item()
    assert loss.item() == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(host(moco.queue)[4:], k, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(host(moco.queue)[:4], old[4:])
    loss.backward()   # enqueueing did not disturb the negatives the graph saved
    assert moco.encoder.parameters()[0].grad is not None


def test_momentum_one_keeps_the_key_encoder_and_zero_copies_the_query_encoder(device):
    moco = small_moco(device)
    for p in moco.query_encoder.parameters():
        p.data += 1.0   # query and key encoders now differ
    before = [host(p).copy() for p in moco.key_encoder.parameters()]
    moco.momentum = 1.0
    moco.after_step(0.5)   # a constant momentum: the progress does not matter
    for b, p in zip(before, moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(p), b)
    moco.momentum = 0.9
    moco.after_step(0.0)
    for b, p, q in zip(before, moco.key_encoder.parameters(), moco.query_encoder.parameters()):
        np.testing.assert_allclose(host(p), 0.9 * b + 0.1 * host(q), rtol=1e-6, atol=1e-6)
    moco.momentum = 0.0
    moco.after_step(1.0)
    for p, q in zip(moco.key_encoder.parameters(), moco.query_encoder.parameters()):
        np.testing.assert_array_equal(host(p), host(q))


def test_key_encoder_never_receives_gradients_nor_moves_under_the_optimizer(device):
    moco = small_moco(device, bn_groups=2, batch_norm=True)
    key_ids = {id(p) for p in moco.key_encoder.parameters()}
    assert not key_ids & {id(p) for p in moco.query_encoder.parameters()}
    assert key_ids <= {id(p) for p in moco.parameters()}   # a child: saved, moved and cast with MoCo
    assert all(not p.requires_grad for p in moco.key_encoder.parameters())
    opt = SGD(moco.parameters(), lr=0.5, weight_decay=0.1)
    before = [host(p).copy() for p in moco.key_encoder.parameters()]
    for step in range(2):
        opt.zero_grad()
        moco.loss_of_views(images(4, device, step), images(4, device, step + 10))["loss"].backward()
        assert all(p.grad is None for p in moco.key_encoder.parameters())
        opt.step()
    for b, p in zip(before, moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(p), b)   # only after_step moves it
    assert {id(p) for g in moco.param_groups() for p in g["params"]} == \
        {id(p) for p in moco.query_encoder.parameters()}


def test_moco_to_moves_the_key_encoder_and_the_queue_too(device):
    moco = small_moco("cpu").to(device)
    assert moco.queue.__class__ is minienc.tensor([1.0], device=device).data.__class__
    assert {p.device for p in moco.key_encoder.parameters()} == {device}
    assert {p.device for p in moco.parameters()} == {device}


def test_moco_astype_casts_the_key_encoder_and_the_queue_too(device):
    moco = small_moco(device, batch_norm=True).astype("float64")
    assert moco.queue.dtype == np.float64
    assert {p.dtype for p in moco.key_encoder.parameters()} == {np.dtype("float64")}
    assert {a.dtype for _, a in moco.key_encoder.named_buffers()} == {np.dtype("float64")}
    loss = moco.loss_of_views(images(4, device, 0).astype("float64"),
                              images(4, device, 1).astype("float64"))["loss"]
    assert loss.dtype == np.float64


def test_moco_state_dict_holds_the_key_encoder_and_the_queue(device):
    moco = small_moco(device)
    moco.momentum = 0.0
    moco.after_step(0.0)
    moco.enqueue(backend.to_device(np.ones((4, 5), np.float32), device))
    state = moco.state_dict()
    assert {k.split(".")[0] for k in state} == {"query_encoder", "key_encoder", "queue"}
    other = small_moco(device)
    for p in other.query_encoder.parameters():
        p.data = p.data + 1.0
    other.load_state_dict(state)
    for a, b in zip(other.key_encoder.parameters(), moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(a), host(b))
    np.testing.assert_array_equal(host(other.queue), host(moco.queue))


def test_grouped_forward_is_per_sub_batch_and_returns_the_original_order(device):
    net = on_device(device, lambda: Sequential(Linear(3, 4), BatchNorm1d(4), ReLU()))
    x = minienc.tensor(np.random.default_rng(11).standard_normal((8, 3)), device=device)
    order = backend.to_device(np.array([3, 6, 0, 5, 1, 7, 2, 4]), device)
    got = host(_in_groups(net, x, 2, order))
    first, second = host(net(x[order[:4]])), host(net(x[order[4:]]))   # each group on its own
    want = np.empty_like(got)
    want[host(order)[:4]], want[host(order)[4:]] = first, second
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, host(net(x)), atol=1e-3)   # not the whole-batch statistics
    with pytest.raises(ValueError, match="3 batch-norm groups"):
        _in_groups(net, x, 3)
