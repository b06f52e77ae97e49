"""SIGReg: the Epps-Pulley statistic of random projections against N(0, 1). Gradchecks on every
backend with fixed directions, agreement with a float64 direct formula (complex characteristic
functions and numpy's trapezoid on the symmetric interval), its scale under the null, how far it
moves for constant, low-rank, shifted and scaled samples, invariance to sample order, the
directions' generator, and clear errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minienc
from minienc import backend
from minienc.objectives.sigreg import (EppsPulley, epps_pulley, quadrature, random_directions,
                                       sigreg)


def _tensor(array, device, requires_grad=False, dtype="float64"):
    return minienc.tensor(array, requires_grad=requires_grad, dtype=dtype, device=device)


def _directions(dim, num, seed=0):
    a = np.random.default_rng(seed).standard_normal((dim, num))
    return a / np.linalg.norm(a, axis=0)


def direct_statistic(x, knots=17, t_max=3.0):
    """Epps-Pulley, written from its definition: N * the trapezoid integral over the WHOLE
    interval [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2), on the same spacing."""
    n = x.shape[0]
    t = np.linspace(-t_max, t_max, 2 * knots - 1)
    ecf = np.exp(1j * t[None, :, None] * x[:, None, :]).mean(axis=0)        # (T, M)
    integrand = np.abs(ecf - np.exp(-t * t / 2)[:, None]) ** 2 * np.exp(-t * t / 2)[:, None]
    return n * np.trapezoid(integrand, t, axis=0)                          # (M,)


# ----- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 3), (2, 5, 3)])
def test_sigreg_gradcheck_with_fixed_directions(device, shape):
    z = _tensor(np.random.default_rng(1).standard_normal(shape), device, requires_grad=True)
    directions = backend.to_device(_directions(shape[-1], 4), device)
    assert minienc.gradcheck(lambda z: sigreg(z, directions), z)


@settings(max_examples=8)
@given(n=st.integers(2, 6), m=st.integers(1, 4), knots=st.integers(2, 9),
       t_max=st.floats(0.5, 5.0), scale=st.floats(0.1, 3.0), seed=st.integers(0, 2**16))
def test_epps_pulley_gradcheck_over_shapes_and_quadratures(n, m, knots, t_max, scale, seed):
    x = _tensor(np.random.default_rng(seed).standard_normal((n, m)) * scale, "cpu", True)
    assert minienc.gradcheck(lambda x: epps_pulley(x, knots, t_max), x)


def test_gradient_descent_on_sigreg_gaussianises_the_samples():
    """The gradient is useful, not just correct: shifted, squashed samples move towards N(0, I)."""
    rng = np.random.default_rng(0)
    z = _tensor(rng.standard_normal((256, 4)) * 0.2 + 1.5, "cpu", requires_grad=True)
    directions = _directions(4, 64)
    before = float(sigreg(z, directions).data)
    for _ in range(200):
        z.grad = None
        sigreg(z, directions).backward()
        z.data -= 2.0 * z.grad
    after = float(sigreg(z, directions).data)
    assert after < before / 20, (before, after)
    assert np.all(np.abs(z.data.mean(axis=0)) < 0.3) and np.all(np.abs(z.data.std(axis=0) - 1) < 0.3)


# ----- values ---------------------------------------------------------------------------------

@settings(max_examples=25)
@given(n=st.integers(2, 40), m=st.integers(1, 6), knots=st.integers(2, 25),
       t_max=st.floats(0.3, 6.0), loc=st.floats(-2, 2), scale=st.floats(0.05, 4.0),
       seed=st.integers(0, 2**16))
def test_epps_pulley_matches_the_direct_float64_formula(n, m, knots, t_max, loc, scale, seed):
    x = np.random.default_rng(seed).standard_normal((n, m)) * scale + loc
    got = epps_pulley(_tensor(x, "cpu"), knots, t_max).data
    np.testing.assert_allclose(got, direct_statistic(x, knots, t_max), rtol=1e-10, atol=1e-12)


def test_sigreg_is_the_mean_statistic_of_the_projections_view_by_view(device):
    rng = np.random.default_rng(2)
    z, a = rng.standard_normal((3, 20, 5)), _directions(5, 7)
    want = np.mean([direct_statistic(view @ a) for view in z])
    got = sigreg(_tensor(z, device), backend.to_device(a, device))
    np.testing.assert_allclose(float(got.data), want, rtol=1e-10)
    # identity directions test each coordinate on its own
    eye = np.eye(5)
    np.testing.assert_allclose(float(sigreg(_tensor(z[0], device), backend.to_device(eye, device)).data),
                               direct_statistic(z[0]).mean(), rtol=1e-10)


def test_the_authors_quadrature():
    t, phi, weights = quadrature(dtype="float64")
    assert t.shape == (17,) and t[0] == 0 and t[-1] == 3.0
    np.testing.assert_allclose(phi, np.exp(-t ** 2 / 2))
    dt = 3 / 16
    np.testing.assert_allclose(weights / phi, [dt] + [2 * dt] * 15 + [dt])


def test_null_scale_and_departures_from_the_gaussian(device):
    """Under the null E[EP] = integral (1 - e^{-t^2}) e^{-t^2/2} dt ~ 1.06 for any N: a large
    N(0, I) sample sits near it (and near 0 per sample); every departure grows with N."""
    rng = np.random.default_rng(0)
    n, d = 4000, 16
    gauss = rng.standard_normal((n, d))
    directions = backend.to_device(_directions(d, 64, seed=1), device)

    def stat(z):
        return float(sigreg(_tensor(z, device), directions).data)

    t = np.linspace(-3, 3, 33)
    null = np.trapezoid((1 - np.exp(-t * t)) * np.exp(-t * t / 2), t)
    g = stat(gauss)
    assert 0.5 * null < g < 2 * null and g / n < 1e-3, g
    low_rank = gauss[:, :2] @ rng.standard_normal((2, d)) / np.sqrt(2)   # 2 of 16 directions
    for name, z in [("constant", np.zeros((n, d))), ("low rank", low_rank),
                    ("shifted", gauss + 1.0), ("scaled", gauss * 2.0), ("squashed", gauss * 0.5)]:
        assert stat(z) > 50 * g, (name, stat(z), g)
    # the statistic of a fixed departure grows in proportion to N; the null's does not
    assert stat(gauss[:400] + 1.0) * 5 < stat(gauss + 1.0)
    assert abs(stat(gauss[:400]) - g) < 1.0


@settings(max_examples=15)
@given(n=st.integers(2, 30), d=st.integers(1, 5), views=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_sigreg_is_invariant_to_sample_order_and_non_negative(n, d, views, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((views, n, d)) * rng.uniform(0.1, 3) + rng.uniform(-1, 1)
    a = _directions(d, 5, seed)
    value = float(sigreg(_tensor(z, "cpu"), a).data)
    shuffled = z[:, rng.permutation(n)]
    assert value >= 0
    np.testing.assert_allclose(float(sigreg(_tensor(shuffled, "cpu"), a).data), value, rtol=1e-12)


# ----- directions, dtypes, errors ------------------------------------------------------------

def test_directions_are_fresh_each_call_seeded_unit_and_on_the_device(device):
    a = random_directions(8, 32, device=device)
    assert backend.device_of(a) == device and a.dtype == np.float32 and a.shape == (8, 32)
    np.testing.assert_allclose(np.linalg.norm(backend.to_host(a), axis=0), 1.0, rtol=1e-5)
    z = _tensor(np.random.default_rng(0).standard_normal((64, 8)), device, dtype="float32")
    minienc.manual_seed(3)
    first, second = float(sigreg(z).data), float(sigreg(z).data)
    minienc.manual_seed(3)
    assert first != second and float(sigreg(z).data) == first
    out = sigreg(z)
    assert out.dtype == np.float32 and out.shape == ()   # no silent upcast to float64


def test_bad_input_is_a_clear_error():
    z = _tensor(np.zeros((4, 3)), "cpu")
    for shape in [(5,), (4, 4, 3, 2), (1, 3), (2, 1, 3), (4, 0)]:
        with pytest.raises(ValueError, match=r"sigreg: expected embeddings"):
            sigreg(_tensor(np.zeros(shape), "cpu"))
    with pytest.raises(ValueError, match=r"sigreg: directions must be \(D, M\) with D = 3"):
        sigreg(z, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"sigreg: directions must be"):
        sigreg(z, np.ones(3))
    with pytest.raises(ValueError, match="knots"):
        sigreg(z, knots=1)
    with pytest.raises(ValueError, match="t_max"):
        sigreg(z, t_max=0.0)
    with pytest.raises(ValueError, match="epps_pulley: expected projections"):
        epps_pulley(_tensor(np.zeros((1, 3)), "cpu"))
    with pytest.raises(TypeError, match="epps_pulley: projections must be floating"):
        epps_pulley(minienc.tensor(np.zeros((4, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match="random_directions"):
        random_directions(0, 4)
    assert isinstance(EppsPulley(*quadrature()), minienc.Function)
