"""The engine: graph walking, accumulation, freeing, no_grad (per thread) and anomaly mode,
user-defined ops and the contract they are held to, and the version counter that refuses an
in-place update between forward and backward. The Tensor surface and its operands:
tests/test_tensor.py."""
import gc
import sys
import threading
import traceback
import weakref

import numpy as np
import pytest

import minienc
from minienc import nn, optim
from minienc.backend import to_host


class Square(minienc.Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2 * self.x * grad


def t(values, device, **kwargs):
    return minienc.tensor(values, device=device, **kwargs)


# ----- backward ------------------------------------------------------------------------------
def test_deep_chain_has_no_recursion_limit(device):
    assert sys.getrecursionlimit() < 10_000  # so a recursive walk would have failed here
    x = t([1.0, 2.0], device, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [1.0001 ** 10_000] * 2, rtol=1e-3)


def test_a_tensor_used_twice_accumulates(device):
    x = t([1.0, -2.0, 3.0], device, requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), 2 * np.array([1.0, -2.0, 3.0]) + 1)
    (x * 3.0).sum().backward()  # a second loss adds into the same .grad
    np.testing.assert_allclose(to_host(x.grad), 2 * np.array([1.0, -2.0, 3.0]) + 4)
    x.zero_grad()
    assert x.grad is None


def test_diamond_graph(device):
    x = t([0.5, 1.5], device, requires_grad=True)
    a = x.exp()
    b, c = a * 2.0, a.log()  # two paths that meet again
    (b + c).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), 2 * np.exp([0.5, 1.5]) + 1, rtol=1e-6)


def test_retain_graph_allows_a_second_pass(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(to_host(x.grad), [4.0, 8.0])


def test_backward_twice_on_a_freed_graph_raises(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"backward: the graph through sum was already freed by an "
                                           r"earlier backward\(\); pass retain_graph=True"):
        loss.backward()


def test_backward_on_a_non_scalar_needs_grad(device):
    x = t(np.ones((2, 3)), device, requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"a gradient can be created implicitly only for a scalar "
                                           r"output, got shape \(2, 3\); pass grad="):
        y.backward()
    y.backward(t(np.full((2, 3), 0.5), device))
    np.testing.assert_allclose(to_host(x.grad), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\) but the output has shape \(2, 3\)"):
        (x * 2.0).backward(t(np.ones(3), device))


def test_a_float64_seed_does_not_upcast_the_pass(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    (x * x).backward(x.xp.ones(2, dtype="float64"))
    assert x.grad.dtype == np.float32


def test_backward_without_a_graph_says_why(device):
    with pytest.raises(RuntimeError, match=r"backward: this tensor \(shape \(\)\) does not require grad "
                                           r"and has no graph"):
        t([1.0, 2.0], device).sum().backward()


def test_only_leaves_that_require_grad_get_grad(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    w = t([3.0, 4.0], device)
    h = x * w
    (h * h).sum().backward()
    assert w.grad is None and h.grad is None and not w.requires_grad
    np.testing.assert_allclose(to_host(x.grad), 2 * np.array([3.0, 8.0]) * [3.0, 4.0])


# ----- graph lifetime ------------------------------------------------------------------------
def test_backward_frees_the_graph_without_the_cycle_collector(device):
    gc.disable()  # everything below must go by reference counting alone: no cycles
    try:
        x = t([1.0, 2.0], device, requires_grad=True)
        hidden = x * 2.0
        node = weakref.ref(hidden._creator)
        loss = hidden.exp().sum()
        del hidden
        assert node() is not None
        loss.backward()
        assert node() is None, "backward kept an intermediate Function alive"

        hidden = x * 2.0
        node = weakref.ref(hidden._creator)
        loss = hidden.tanh().sum()
        del hidden
        assert node() is not None
        del loss  # dropping the loss without backward frees the graph too
        assert node() is None, "a dropped graph survived: a reference cycle"
    finally:
        gc.enable()


def test_backward_drops_saved_arrays(device):
    x = t(np.ones(3), device, requires_grad=True)
    y = x.exp()
    fn = y._creator
    y.sum().backward()
    assert fn.inputs is None and not hasattr(fn, "out")


# ----- no_grad and anomaly mode --------------------------------------------------------------
def test_no_grad_builds_no_graph(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    with minienc.no_grad():
        assert not minienc.is_grad_enabled()
        y = (x * 2.0).exp().sum()
    assert minienc.is_grad_enabled()
    assert not y.requires_grad and y._creator is None
    with pytest.raises(ZeroDivisionError):
        with minienc.no_grad():
            1 / 0
    assert minienc.is_grad_enabled()  # restored after an exception too


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # log(0) and log(-1), on purpose
def test_detect_anomaly_names_the_first_op_with_nan_or_inf(device):
    x = t([1.0, 0.0, 2.0], device, requires_grad=True)
    y = x.log()  # -inf, but outside anomaly mode nothing is checked
    with minienc.detect_anomaly():
        z = x * 2.0  # fine
        with pytest.raises(FloatingPointError, match=r"detect_anomaly: log produced NaN or inf in its "
                                                     r"output \(shape \(3,\)\)"):
            (z - 2.0).log().exp().sum()  # log is the first to go wrong, not exp or sum
        root = x.sqrt()  # finite forward, infinite gradient at 0
        with pytest.raises(FloatingPointError, match=r"sqrt produced NaN or inf in its gradient \(backward\)"):
            root.sum().backward()
    assert np.isneginf(y.numpy()[1])


def test_enable_grad_builds_a_graph_inside_no_grad(device):
    x = minienc.tensor([1.0, 2.0], requires_grad=True, device=device)
    with minienc.no_grad():
        assert not (x * 2.0).requires_grad
        with minienc.enable_grad():
            y = (x * x).sum()
        assert not minienc.is_grad_enabled()
    y.backward()
    assert x.grad.tolist() == [2.0, 4.0]


# ----- user-defined ops ----------------------------------------------------------------------
def test_user_defined_function(device):
    x = t([1.0, -2.0, 3.0], device, requires_grad=True)
    y = Square()(x)
    assert y.requires_grad and isinstance(y._creator, Square)
    y.sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [2.0, -4.0, 6.0])
    assert minienc.gradcheck(lambda x: Square()(x), x)


class ScaledSum(minienc.Function):
    """Two inputs, one of which may not need a gradient: `needs_grad` says which."""

    def forward(self, x, scale):
        self.x, self.scale = x, scale
        return (x * scale).sum(axis=-1)

    def backward(self, g):
        gx = g[..., None] * self.scale if self.needs_grad[0] else None
        gs = (g[..., None] * self.x) if self.needs_grad[1] else None  # broadcast shape: the engine sums
        return gx, gs


def test_user_function_with_broadcast_gradient_and_needs_grad(device):
    x = t(np.arange(6.0).reshape(2, 3), device, requires_grad=True)
    scale = t([1.0, 2.0, 3.0], device)
    ScaledSum()(x, scale).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [[1, 2, 3], [1, 2, 3]])
    scale.requires_grad_()
    assert minienc.gradcheck(lambda x, s: ScaledSum()(x, s), x, scale)


# ----- modes are per thread ------------------------------------------------------------------
def _in_other_thread(mode):
    """Run `with mode():` in a second thread and hold it open; returns (release, join)."""
    inside, release = threading.Event(), threading.Event()

    def hold():
        with mode():
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    assert inside.wait(30)

    def join():
        release.set()
        worker.join()
    return join


def test_no_grad_in_another_thread_does_not_stop_this_one(device):
    join = _in_other_thread(minienc.no_grad)
    try:
        assert minienc.is_grad_enabled()
        x = t([1.0, 2.0], device, requires_grad=True)
        loss = (x * x).sum()
        assert loss.requires_grad
        loss.backward()
    finally:
        join()
    np.testing.assert_allclose(to_host(x.grad), [2.0, 4.0])


def test_a_new_thread_starts_with_grad_enabled(device):
    seen = []
    with minienc.no_grad():
        worker = threading.Thread(target=lambda: seen.append(minienc.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # log(0) and log(-1), on purpose
def test_anomaly_mode_in_another_thread_does_not_reach_this_one(device):
    join = _in_other_thread(minienc.detect_anomaly)
    try:
        y = t([0.0, 1.0], device).log()  # -inf: an error only where anomaly mode is on
    finally:
        join()
    assert np.isneginf(y.numpy()[0])


# ----- in-place updates between forward and backward are refused ---------------------------
def test_an_optimizer_step_between_forward_and_backward_is_refused(device):
    model = nn.Linear(3, 4)
    model.to(device)
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = t(np.ones((2, 3)), device)
    minienc.mse_loss(model(x), t(np.zeros((2, 4)), device)).backward()
    loss = minienc.mse_loss(model(x), t(np.zeros((2, 4)), device))
    opt.step()                      # updates the weight the pending graph saved
    with pytest.raises(RuntimeError, match=r"backward: linear saved input 1 \(shape \(4, 3\)\) for its "
                                           r"backward, and it was changed in place since \(version 0, now 1"):
        loss.backward()


def test_copy_and_in_place_arithmetic_bump_the_version(device):
    x = t([1.0, 2.0, 3.0], device, requires_grad=True)
    w = t([1.0, 1.0, 1.0], device, requires_grad=True)
    for update in (lambda: w.copy_(np.zeros(3)), lambda: w.__iadd__(1.0), lambda: w.__imul__(2.0)):
        loss = (x * w).sum()
        before = w.version
        with minienc.no_grad():
            same = update()
        assert same is w and w.version == before + 1
        with pytest.raises(RuntimeError, match=r"backward: mul saved input 1 \(shape \(3,\)\)"):
            loss.backward()


def test_in_place_arithmetic_updates_data_outside_a_graph(device):
    w = t([1.0, 2.0], device, requires_grad=True)
    data = w.data
    with minienc.no_grad():
        w += 1.0
        w *= t([2.0, 3.0], device)
    assert w.data is data and w.version == 2
    np.testing.assert_array_equal(w.numpy(), [4.0, 9.0])
    plain = t([1.0, 2.0], device)
    plain -= 1.0                    # no graph is recorded for a tensor that needs none
    assert plain.version == 1 and plain.numpy().tolist() == [0.0, 1.0]


def test_in_place_arithmetic_inside_a_graph(device):
    w = t([1.0, 2.0], device, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"x \+= y: an in-place update of a leaf tensor that requires "
                                           r"grad \(shape \(2,\)\) would not be recorded"):
        w += 1.0
    h = w * 3.0
    h += w                          # a non-leaf: the out-of-place h = h + w, gradients stay right
    h.sum().backward()
    np.testing.assert_allclose(to_host(w.grad), [4.0, 4.0])


def test_an_update_through_a_view_is_seen(device):
    a = t(np.ones((2, 3)), device, requires_grad=True)
    w = nn.Parameter(np.ones((4, 3)), device=device)
    opt = optim.SGD([w], lr=0.1)
    (a @ w.T).sum().backward()
    loss = (a @ w.T).sum()          # matmul saved w.T, a view of w's data
    opt.step()
    with pytest.raises(RuntimeError, match=r"backward: matmul saved input 1 \(shape \(3, 4\)\)"):
        loss.backward()
    loss = (a @ w.detach().T).sum()  # detach shares the counter too
    opt.step()
    with pytest.raises(RuntimeError, match=r"matmul saved input 1"):
        loss.backward()


def test_a_saved_output_changed_in_place_is_refused(device):
    x = t([0.5, 1.0, 2.0], device, requires_grad=True)
    h = x.exp()                     # exp's backward reads its own output
    loss = h.sum()
    with minienc.no_grad():
        h += 1.0
    with pytest.raises(RuntimeError, match=r"backward: exp saved its output \(shape \(3,\)\)"):
        loss.backward()


def test_updating_a_tensor_an_op_did_not_save_is_fine(device):
    x = t([1.0, 2.0], device, requires_grad=True)
    b = t([3.0, 4.0], device, requires_grad=True)
    loss = (x + b).sum()            # add keeps neither input for its backward
    with minienc.no_grad():
        b += 1.0
    loss.backward()
    np.testing.assert_array_equal(to_host(x.grad), [1.0, 1.0])


def test_optimizer_steps_and_ema_updates_count(device):
    online = nn.Linear(2, 2).to(device)
    ema = optim.EMA(online)
    x = t(np.ones((1, 2)), device, requires_grad=True)
    loss = ema.target(x).sum()      # the target's weight is saved by linear
    ema.update(0.5)
    assert all(p.version == 1 for p in ema.target.parameters())
    with pytest.raises(RuntimeError, match=r"linear saved input 1 \(shape \(2, 2\)\)"):
        loss.backward()
    opt = optim.Adam(online.parameters())
    for _ in range(2):
        online(x).sum().backward()
        opt.step()
    assert [p.version for p in online.parameters()] == [2, 2]


# ----- custom Functions are held to their contract ------------------------------------------
class TooFewGradients(minienc.Function):
    def forward(self, x, y):
        return x * y

    def backward(self, g):
        return g


class TooManyGradients(TooFewGradients):
    def backward(self, g):
        return g, g, g


@pytest.mark.parametrize("op, count", [(TooFewGradients, 1), (TooManyGradients, 3)])
def test_a_backward_returning_the_wrong_number_of_gradients_is_refused(device, op, count):
    x, y = t([1.0, 2.0], device, requires_grad=True), t([3.0, 4.0], device, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"toofewgradients|toomanygradients: backward returned "
                                           rf"{count} gradient\(s\) for 2 input\(s\)"):
        op()(x, y).sum().backward()


class FailsInForward(minienc.Function):
    def forward(self, x):
        return x[[5]]  # an index out of range: the line the user needs to see


def test_an_error_in_a_users_forward_keeps_its_traceback(device):
    with pytest.raises(IndexError, match=r"^failsinforward: cannot apply to shapes \(2,\)") as info:
        FailsInForward()(t([1.0, 2.0], device))
    cause = info.value.__cause__
    assert isinstance(cause, IndexError)
    frames = traceback.extract_tb(cause.__traceback__)
    assert any(f.name == "forward" and f.filename == __file__ for f in frames)


def test_a_gradient_given_to_two_leaves_is_copied(device):
    a = t(np.ones(3), device, requires_grad=True)
    b = t(np.ones(3), device, requires_grad=True)
    (a + b).sum().backward()        # add hands one array to both inputs
    assert not a.xp.shares_memory(a.grad, b.grad)
    a.grad += 1.0                   # what accumulation and clipping do
    np.testing.assert_array_equal(to_host(b.grad), np.ones(3))


def test_the_callers_seed_and_retained_state_are_not_adopted(device):
    leaf = t(np.zeros(3), device, requires_grad=True)
    seed = leaf.xp.ones(3, dtype=np.float32)
    leaf.backward(seed)
    assert not leaf.xp.shares_memory(leaf.grad, seed)
    x = t(np.ones((3, 1)), device, requires_grad=True)
    y = x.reshape(3)                # reshape's gradient is a view of the seed
    y.backward(seed, retain_graph=True)
    y.backward(seed)                # accumulates into x.grad in place
    gc.collect()
    np.testing.assert_array_equal(to_host(x.grad), np.full((3, 1), 2.0))
    np.testing.assert_array_equal(to_host(seed), np.ones(3))


def test_mean_of_an_empty_tensor_has_an_empty_gradient(device):
    x = t(np.zeros((0, 3)), device, requires_grad=True)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        x.mean().backward()
    assert x.grad.shape == (0, 3)
    x.grad = None
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        x.mean(axis=0).sum().backward()
    assert x.grad.shape == (0, 3)
