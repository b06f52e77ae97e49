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
