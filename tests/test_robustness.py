"""Robustness of frozen embeddings (minienc/eval/robustness.py): a kept linear probe that reads
other test features, and the relative movement of embeddings under a perturbation."""
import numpy as np
import pytest

from minienc.eval import linear_probe
from minienc.eval.robustness import LinearProbe, relative_shift


def _blobs(n=120, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = 3.0 * rng.standard_normal((3, dim))
    return (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32), labels


def test_the_kept_probe_scores_as_the_linear_probe_does():
    x, y = _blobs()
    x_test, y_test = _blobs(seed=1)
    probe = LinearProbe.fit(x, y)
    assert probe.accuracy(x_test, y_test) == pytest.approx(linear_probe(x, y, x_test, y_test), abs=1e-6)
    assert probe.predict(x_test).shape == (len(x_test),)


def test_relative_shift_is_zero_unmoved_and_ignores_the_embedding_scale():
    z, _ = _blobs()
    moved = z + 0.1 * np.random.default_rng(2).standard_normal(z.shape).astype(np.float32)
    assert relative_shift(z, z) == 0.0
    base = relative_shift(z, moved)
    assert 0.0 < base < 0.2
    assert relative_shift(7.0 * z, 7.0 * moved) == pytest.approx(base, rel=1e-6)
    # swapping every image for another moves it as far as the distance between images
    other = z[np.random.default_rng(3).permutation(len(z))]
    assert 0.7 < relative_shift(z, other) < 1.3


def test_relative_shift_names_mismatched_shapes():
    with pytest.raises(ValueError, match="same"):
        relative_shift(np.zeros((4, 2)), np.zeros((4, 3)))


def _fitted():
    x, y = _blobs(n=30)
    return LinearProbe.fit(x, y), x, y


KEPT_PROBE_CASES = {
    "one class": (lambda: LinearProbe.fit(*_blobs(n=30)[:1], np.zeros(30, np.int64)),
                  r"^LinearProbe.fit: the train labels hold a single class \(0\)"),
    "a NaN embedding": (lambda: LinearProbe.fit(np.where(np.arange(30)[:, None] == 4, np.nan, _blobs(n=30)[0]),
                                                _blobs(n=30)[1]),
                        r"^LinearProbe.fit: features: 1 of 30 rows hold NaN or inf \(the first: row 4\)"),
    "no features": (lambda: LinearProbe.fit(np.zeros((0, 5), np.float32), np.zeros(0, np.int64)),
                    r"^LinearProbe.fit: features: no features"),
    "unlabeled": (lambda: LinearProbe.fit(_blobs(n=30)[0], np.full(30, -1)), r"^LinearProbe.fit: labels: negative"),
    "labels short": (lambda: LinearProbe.fit(_blobs(n=30)[0], _blobs(n=30)[1][:20]),
                     r"^LinearProbe.fit: labels: 20 labels for 30 feature rows"),
    "num_classes too few": (lambda: LinearProbe.fit(*_blobs(n=30), num_classes=2),
                            r"^LinearProbe.fit: num_classes 2 but the labels go up to 2"),
    "num_classes True": (lambda: LinearProbe.fit(*_blobs(n=30), num_classes=True),
                         r"^LinearProbe.fit: num_classes must be a positive integer, got True"),
    "accuracy on NaN": (lambda: _fitted()[0].accuracy(np.full((30, 5), np.nan, np.float32), _fitted()[2]),
                        r"^LinearProbe.accuracy: features: 30 of 30 rows hold NaN"),
    "accuracy on nothing": (lambda: _fitted()[0].accuracy(np.zeros((0, 5), np.float32), np.zeros(0, np.int64)),
                            r"^LinearProbe.accuracy: features: no features"),
    "accuracy labels short": (lambda: _fitted()[0].accuracy(_fitted()[1], _fitted()[2][:3]),
                              r"^LinearProbe.accuracy: labels: 3 labels for 30 feature rows"),
    "predict other width": (lambda: _fitted()[0].predict(_fitted()[1][:, :2]),
                            r"^LinearProbe.predict: features \(30, 2\) have 2 dimensions, the probe was fit on 5"),
}


@pytest.mark.parametrize("case", list(KEPT_PROBE_CASES))
def test_the_kept_probe_checks_what_it_is_given_as_the_other_probes_do(case):
    """It reported 100% on one class, fell to chance on one NaN embedding, NaN on no test
    features, and raw NumPy broadcast errors for a wrong width or label count."""
    make, message = KEPT_PROBE_CASES[case]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("clean, perturbed, message", [
    (np.full((5, 3), np.nan), np.zeros((5, 3)), r"^relative_shift: clean: 5 of 5 rows hold NaN"),
    (np.zeros((5, 3)) + np.arange(5)[:, None], np.full((5, 3), np.inf), r"^relative_shift: perturbed: 5 of 5"),
    (np.ones((5, 3)), np.zeros((5, 3)), r"^relative_shift: the 5 clean embeddings are all one point"),
    (np.ones((5, 3)), np.ones((5, 3)), r"^relative_shift: the 5 clean embeddings are all one point"),
    (np.zeros(5), np.zeros(5), r"^relative_shift: clean: expected features of shape \(N, D\)"),
])
def test_relative_shift_refuses_embeddings_it_cannot_compare(clean, perturbed, message):
    """NaN embeddings gave NaN, collapsed clean ones inf (even when nothing moved, 0 / 0)."""
    with pytest.raises(ValueError, match=message):
        relative_shift(clean, perturbed)


def test_relative_shift_names_a_seed_numpy_would_refuse():
    z, _ = _blobs(n=10)
    with pytest.raises(ValueError, match=r"^relative_shift: seed must be an integer >= 0, got -1"):
        relative_shift(z, z, seed=-1)
