"""Robustness of frozen embeddings to damaged inputs: does the probe still read the label, and
how far does each embedding move?

    probe = LinearProbe.fit(encode(encoder, x_train), y_train)      # fit on CLEAN images
    curve = [probe.accuracy(encode(encoder, corruption("noise", s)(x_test, rng=0)), y_test)
             for s in STRENGTHS["noise"]]
    moved = relative_shift(encode(encoder, x_test), encode(encoder, shifted_x_test))

`relative_shift` makes movements of different encoders comparable: the mean distance between an
image's embedding and its perturbed image's embedding, divided by the mean distance between the
embeddings of two different images (the same pairs for every encoder),

    shift = mean_i ||f(x_i') - f(x_i)|| / mean_i ||f(x_i) - f(x_pi(i))||,    pi a fixed derangement.

A ratio of two distances in the same space: a rescaled (or rotated) embedding gives the same
number, so encoders of any size and scale compare. 0: the perturbation does not move the
embedding at all; 1: it moves it as far as swapping the image for another would. (Scaling each
dimension by its own spread first would let a nearly constant dimension -- a raw pixel at the
image's edge -- dominate.)
"""
from .. import backend
from ..engine import enable_grad
from .probe import PROBE_STEPS, fit_softmax_regression


class LinearProbe:
    """The linear probe of minienc.eval.probe (logistic regression on features standardised with
    the train statistics), kept after fitting so it can read other test features."""

    def __init__(self, mean, std, weight, bias):
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias

    @classmethod
    def fit(cls, features, labels, steps=PROBE_STEPS, num_classes=None):
        xp = backend.get_xp(features)
        std = features.std(axis=0, keepdims=True)
        mean, std = features.mean(axis=0, keepdims=True), xp.where(std > 1e-6, std, xp.ones_like(std))
        scaled = (features - mean) / std   # as probe.standardize(mode="dim")
        labels = backend.to_device(backend.to_host(labels), backend.device_of(features))
        classes = num_classes or int(labels.max()) + 1
        with enable_grad():   # the probe trains even when the caller is inside no_grad()
            weight, bias = fit_softmax_regression(scaled, labels, classes, steps=steps)
        return cls(mean, std, weight, bias)

    def predict(self, features):
        return (((features - self.mean) / self.std) @ self.weight + self.bias).argmax(axis=-1)

    def accuracy(self, features, labels):
        labels = backend.to_device(backend.to_host(labels), backend.device_of(features))
        return float((self.predict(features) == labels).mean())


def relative_shift(clean, perturbed, seed=0):
    """How far `perturbed` embeddings (N, D) moved from `clean` ones, relative to the distance
    between different images' embeddings (module docstring): a float >= 0."""
    np = backend.numpy
    clean, perturbed = (np.asarray(backend.to_host(z), dtype=np.float64) for z in (clean, perturbed))
    if clean.shape != perturbed.shape or clean.ndim != 2 or len(clean) < 2:
        raise ValueError(f"relative_shift: clean {clean.shape} and perturbed {perturbed.shape} must "
                         f"be the same (N, D), N >= 2")
    n = len(clean)
    # a derangement: a random permutation followed by a shift of one, so no image meets itself
    order = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, 1)
    between = np.linalg.norm(clean - clean[partner], axis=1).mean()
    moved = np.linalg.norm(perturbed - clean, axis=1).mean()
    return float(moved / between) if between > 0 else float("inf")
