"""The checker itself: it passes correct ops and catches planted bugs, naming the input and entry."""
import numpy as np
import pytest

import minienc
from minienc import GradcheckError, gradcheck
from minienc.gradcheck import _spot_entries


class Square(minienc.Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return 2 * self.x * g


class IgnoresUpstream(Square):
    def backward(self, g):
        return 2 * self.x  # right for an all-ones upstream gradient, wrong for any other


class WrongSign(Square):
    def backward(self, g):
        return -2 * self.x * g


class BiasAdd(minienc.Function):
    """x (n, k) + b (k,); the bias gradient must be summed over the rows."""

    def forward(self, x, b):
        return x + b

    def backward(self, g):
        return g, g.sum(axis=0)


class BiasWrongShape(BiasAdd):
    def backward(self, g):
        return g, g.sum(axis=1)  # summed over the wrong axis: shape (n,) for a (k,) bias


class BiasNotSummed(BiasAdd):
    def backward(self, g):
        return g, g[0]  # the right shape, but only the first row's share


class ModifiesInput(Square):
    def forward(self, x):
        x += 1.0
        self.x = x
        return x * 1.0

    def backward(self, g):
        return g


class LeaksWithoutUpstream(Square):
    def backward(self, g):
        return 2 * self.x * g + (g == 0) * 1.0  # exact wherever g != 0, non-zero when g is all 0


class WrongDtype(Square):
    def backward(self, g):
        return (2 * self.x * g).astype("float32")


class StatefulBackward(Square):
    """Its backward changes what it saved, so a second pass through the graph differs."""

    def backward(self, g):
        self.scale = getattr(self, "scale", 2.0)
        grad = self.scale * self.x * g
        self.scale = 3.0
        return grad


def x_of(device, shape=(2, 3), seed=0):
    host = np.random.default_rng(seed).standard_normal(shape)
    return minienc.tensor(host, requires_grad=True, device=device)


def test_passes_correct_ops(device):
    x, b = x_of(device), x_of(device, (3,), 1)
    assert gradcheck(lambda x: Square()(x), x)
    assert gradcheck(lambda x, b: BiasAdd()(x, b), x, b)
    assert gradcheck(lambda x, b: (x @ b).tanh(), x, b)


@pytest.mark.parametrize("op", [IgnoresUpstream, WrongSign])
def test_names_input_and_entry_of_a_wrong_value(device, op):
    with pytest.raises(GradcheckError, match=r"^gradcheck: input 0 \(shape \(2, 3\)\) entry \(0, 0\): "
                                             r"numeric -?\d.* vs analytic -?\d"):
        gradcheck(lambda x: op()(x), x_of(device))


def test_names_the_second_input(device):
    x, b = x_of(device), x_of(device, (3,), 1)
    with pytest.raises(GradcheckError, match=r"^gradcheck: input 1 \(shape \(3,\)\) entry \(0,\)"):
        gradcheck(lambda x, b: BiasNotSummed()(x, b), x, b)


def test_catches_a_wrong_broadcast_shape(device):
    x, b = x_of(device), x_of(device, (3,), 1)
    with pytest.raises(GradcheckError, match=r"biaswrongshape: backward returned a gradient of shape "
                                             r"\(2,\) for input 1 of shape \(3,\)"):
        gradcheck(lambda x, b: BiasWrongShape()(x, b), x, b)


def test_catches_forward_modifying_its_input(device):
    with pytest.raises(GradcheckError, match=r"^gradcheck: forward modified input 0 in place"):
        gradcheck(lambda x: ModifiesInput()(x), x_of(device))


def test_catches_nonzero_grad_from_zero_upstream(device):
    with pytest.raises(GradcheckError, match=r"^gradcheck: a zero upstream gradient gave a non-zero "
                                             r"gradient for input 0 \(shape \(2, 3\)\) entry \(0, 0\)"):
        gradcheck(lambda x: LeaksWithoutUpstream()(x), x_of(device))


def test_catches_a_gradient_of_the_wrong_dtype(device):
    with pytest.raises(GradcheckError, match=r"^gradcheck: wrongdtype: backward returned a float32 "
                                             r"gradient for input 0 of dtype float64"):
        gradcheck(lambda x: WrongDtype()(x), x_of(device))


def test_catches_backward_passes_that_disagree(device):
    with pytest.raises(GradcheckError, match=r"^gradcheck: two backward passes disagree for input 0"):
        gradcheck(lambda x: StatefulBackward()(x), x_of(device))


def test_large_inputs_use_random_directions(device):
    x = x_of(device, (20, 10))  # 200 entries: above max_full_size
    assert gradcheck(lambda x: Square()(x).tanh(), x)
    with pytest.raises(GradcheckError, match=r"^gradcheck: input 0 \(shape \(20, 10\)\) random direction 0"):
        gradcheck(lambda x: WrongSign()(x), x)


def test_runs_in_float64_and_uses_float64_views_as_they_are(device):
    seen = []

    def fn(x):
        seen.append((x.dtype, x.data.flags.c_contiguous))
        return Square()(x)

    gradcheck(fn, x_of(device))  # float32 in: cast to a float64 copy
    assert set(seen) == {(np.dtype("float64"), True)}
    base = minienc.tensor(np.random.default_rng(0).standard_normal((3, 2)), dtype="float64", device=device)
    view = base.T.detach().requires_grad_()
    seen.clear()
    gradcheck(fn, view)
    assert set(seen) == {(np.dtype("float64"), False)}


def test_leaves_the_callers_tensor_alone(device):
    x = x_of(device)
    before = x.numpy().copy()
    gradcheck(lambda x: Square()(x), x)
    assert x.grad is None and x.dtype == np.float32 and np.array_equal(x.numpy(), before)
    x64 = minienc.tensor(before, dtype="float64", requires_grad=True, device=device)
    gradcheck(lambda x: Square()(x), x64)  # perturbed in place, then restored exactly
    assert np.array_equal(x64.numpy(), before)


def test_reports_instead_of_raising_when_asked(device):
    assert gradcheck(lambda x: WrongSign()(x), x_of(device), raise_exception=False) is False


def test_refuses_a_check_with_nothing_to_check(device):
    with pytest.raises(GradcheckError, match="no input has requires_grad=True"):
        gradcheck(lambda x: x * 2.0, minienc.tensor([1.0], device=device))
    with pytest.raises(GradcheckError, match="fn must return a tensor that depends on an input"):
        gradcheck(lambda x: x.detach(), x_of(device))


class OneEntryOff(Square):
    """x * x whose backward is exact except one entry, off by a relative `error` (1-2.5%): the
    entry of largest gradient, or the flat index `at`."""
    error, at = 0.02, None

    def backward(self, g):
        grad = 2 * self.x * g
        flat = grad.reshape(-1)
        flat[int(abs(flat).argmax()) if self.at is None else self.at] *= 1.0 + self.error
        return grad


def planted(error, at=None):
    return type("Planted", (OneEntryOff,), {"error": error, "at": at})


def flat_input(device, shape=(100, 50)):
    """5,000 entries of nearly equal gradient: a directional sum dilutes any one of them most."""
    host = 1.0 + 0.05 * np.random.default_rng(0).standard_normal(shape)
    return minienc.tensor(host, requires_grad=True, dtype="float64", device=device)


@pytest.mark.parametrize("error", [0.01, 0.025])
def test_an_error_confined_to_one_entry_of_a_large_input_is_caught(device, error):
    x = flat_input(device)
    op = planted(error)
    # the random directions alone miss it: the error of one entry is lost in a sum over 5,000
    assert gradcheck(lambda x: op()(x), x, spot_checks=0)
    with pytest.raises(GradcheckError, match=r"^gradcheck: input 0 \(shape \(100, 50\)\) entry "
                                             r"\(\d+, \d+\): numeric .* vs analytic"):
        gradcheck(lambda x: op()(x), x)
    assert gradcheck(lambda x: Square()(x), x)       # the exact backward passes the same checks


def test_spot_checks_are_the_largest_entries_and_a_random_sample(device):
    g = np.arange(1000.0) - 500.0                    # largest magnitudes at both ends
    first = _spot_entries(g, np.random.default_rng(0), 4)
    again = _spot_entries(g, np.random.default_rng(0), 4)
    other = _spot_entries(g, np.random.default_rng(1), 4)
    assert {0, 1, 2, 999} <= set(first) and len(first) <= 8
    assert first == again and first != other         # seeded, and a different sample per seed
    x = flat_input(device, (20, 10))
    op = planted(0.025, at=123)                      # anywhere: checking every entry finds it
    assert not gradcheck(lambda x: op()(x), x, spot_checks=200, raise_exception=False)
