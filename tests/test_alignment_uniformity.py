"""Wang & Isola's alignment and uniformity: zero alignment for identical views, closed forms on
small configurations, a brute-force match over shapes and chunk sizes, and the columns they fill
in the evaluation row (the same pairs for every encoder evaluated with one seed)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minienc import backend
from minienc import eval as E
from minienc.data import ImageDataset, load_digits
from minienc.nn import Flatten, Linear, Sequential
from minienc.eval.health import alignment, rankme, uniformity


def put(array, device):
    return backend.to_device(np.asarray(array, dtype=np.float32), device)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_alignment_is_zero_for_identical_views_whatever_their_scale(n, d, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)) + 0.1
    scales = rng.uniform(0.1, 10.0, (n, 1))      # rows are normalised first: scale is invisible
    assert E.alignment(z, z * scales) == pytest.approx(0.0, abs=1e-10)


def test_alignment_closed_form(device):
    # unit vectors at angle theta apart: ||a - b||^2 = 2 - 2 cos(theta)
    theta = np.array([0.0, math.pi / 2, math.pi])
    a = np.stack([np.ones(3), np.zeros(3)], axis=1)
    b = np.stack([np.cos(theta), np.sin(theta)], axis=1) * 3.0
    distances = np.sqrt(2 - 2 * np.cos(theta))
    assert E.alignment(put(a, device), put(b, device)) == pytest.approx(np.mean(distances ** 2), rel=1e-6)
    assert E.alignment(put(a, device), put(b, device), alpha=1) == pytest.approx(np.mean(distances), rel=1e-6)


def test_uniformity_closed_form(device):
    # the four corners of a square on the unit circle: 4 pairs at ||a-b||^2 = 2, 2 pairs at 4
    square = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]]) * 2.0
    for t in (1.0, 2.0):
        expected = math.log((4 * math.exp(-2 * t) + 2 * math.exp(-4 * t)) / 6)
        assert E.uniformity(put(square, device), t=t) == pytest.approx(expected, rel=1e-6)
    # two antipodal points: the most uniform pair there is, log exp(-4 t)
    assert E.uniformity(put([[0, 3], [0, -1]], device)) == pytest.approx(-8.0, rel=1e-6)
    # collapse: every pair at distance 0
    assert E.uniformity(put(np.ones((5, 3)), device)) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 15), d=st.integers(1, 6), chunk=st.integers(1, 16), t=st.floats(0.5, 4.0),
       seed=st.integers(0, 2**16))
def test_uniformity_equals_brute_force_over_distinct_pairs(n, d, chunk, t, seed):
    z = np.random.default_rng(seed).standard_normal((n, d)) + 0.05
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    pairs = [np.exp(-t * np.sum((u[i] - u[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]
    assert E.uniformity(z, t=t, chunk=chunk) == pytest.approx(math.log(np.mean(pairs)), rel=1e-5, abs=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"alignment.*\(3, 2\).*\(4, 2\)"):
        E.alignment(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"uniformity.*two.*\(1, 2\)"):
        E.uniformity(np.ones((1, 2)))


def test_evaluation_row_has_alignment_and_uniformity_on_seeded_pairs(device, capsys):
    full = load_digits()
    data = ImageDataset(full.x_train[:300], full.y_train[:300], full.x_test[:120], full.y_test[:120],
                        "digits subset")
    first, second = E.view_pairs(data, seed=3)
    again, _ = E.view_pairs(data, seed=3)
    other, _ = E.view_pairs(data, seed=4)
    assert first.shape == data.x_test.shape and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)          # one seed, one set of pairs
    assert not np.array_equal(first, second) and not np.array_equal(first, other)
    encoder = Sequential(Flatten(), Linear(64, 8)).to(device)
    record = E.evaluate(encoder, data, name="linear map", draws=3, seed=3)
    z1, z2 = (E.encode(encoder, v) for v in (first, second))
    assert record["align"] == pytest.approx(E.alignment(z1, z2), rel=1e-6)
    assert record["unif"] == pytest.approx((E.uniformity(z1) + E.uniformity(z2)) / 2, rel=1e-6)
    assert f"{record['align']:.2f}" in capsys.readouterr().out
    # the baselines carry them too, computed on the same pairs
    raw, pca = E.baseline_records(data, dim=8, draws=3, seed=3, verbose=False)
    flat = [v.reshape(len(v), -1) for v in (first, second)]
    assert raw["align"] == pytest.approx(E.alignment(*flat), rel=1e-6)
    assert pca["align"] is not None and pca["unif"] < 0
    # features without images to augment leave the columns empty
    bare = E.evaluate_features("features", z1, data.y_test, z2, data.y_test, draws=3, verbose=False)
    assert bare["align"] is None and bare["unif"] is None


@pytest.mark.parametrize("call, message", [
    (lambda z: uniformity(z, t=-1.0), r"^uniformity: t must be a finite number > 0, got -1.0"),
    (lambda z: uniformity(z, chunk=0), r"^uniformity: chunk must be a positive integer, got 0"),
    (lambda z: alignment(z, z, alpha=float("nan")), r"^alignment: alpha must be a finite number > 0, got nan"),
    (lambda z: rankme(z, eps=-1.0), r"^rankme: eps must be a finite number > 0, got -1.0"),
])
def test_health_settings_are_checked_where_given(call, message):
    """A negative t, a NaN alpha or eps gave a number (or NaN) with no word; chunk 0 a bare
    range() error."""
    z = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        call(z)


def test_uniformity_at_a_large_t_is_the_log_sum_exp_not_log_0():
    """Every exp(-t d^2) underflowed to 0 at t = 1e6 and math.log(0) raised 'math domain error';
    relative to the closest pair, the sum stays representable: uniformity -> -t min d^2."""
    z = np.eye(4, dtype=np.float64)[[0, 1, 2]]          # three orthogonal unit vectors, d^2 = 2
    assert uniformity(z, t=1e6) == pytest.approx(-2e6, rel=1e-12)
    assert uniformity(z, t=2.0) == pytest.approx(-4.0, rel=1e-12)
    z = np.random.default_rng(0).standard_normal((30, 5))
    assert uniformity(z, t=2.0, chunk=7) == pytest.approx(uniformity(z, t=2.0), rel=1e-12)
