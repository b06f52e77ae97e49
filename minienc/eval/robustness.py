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
from .. import backend, checks
from ..engine import enable_grad
from .features import as_features, as_labels, check_classes
from .probe import PROBE_STEPS, fit_softmax_regression


class LinearProbe:
    """The linear probe of minienc.eval.probe (logistic regression on features standardised with
    the train statistics), kept after fitting so it can read other test features."""

    def __init__(self, mean, std, weight, bias):
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias

    @classmethod
    def fit(cls, features, labels, steps=PROBE_STEPS, num_classes=None):
        """Checked as the other probes check theirs (minienc.eval.features): finite, non-empty
        features, one integer label >= 0 per row, at least two classes."""
        features = as_features(features, "LinearProbe.fit: features")
        labels = as_labels(labels, features, "LinearProbe.fit: labels")
        check_classes("LinearProbe.fit", labels)
        classes = int(labels.max()) + 1
        if num_classes is not None and checks.positive_int(
                "LinearProbe.fit", "num_classes", num_classes) < classes:
            raise ValueError(f"LinearProbe.fit: num_classes {num_classes} but the labels go up to "
                             f"{classes - 1}")
        xp = backend.get_xp(features)
        std = features.std(axis=0, keepdims=True)
        mean, std = features.mean(axis=0, keepdims=True), xp.where(std > 1e-6, std, xp.ones_like(std))
        scaled = (features - mean) / std   # as probe.standardize(mode="dim")
        classes = num_classes or classes
        with enable_grad():   # the probe trains even when the caller is inside no_grad()
            weight, bias = fit_softmax_regression(scaled, labels, classes, steps=steps)
        return cls(mean, std, weight, bias)

    def predict(self, features):
        features = as_features(features, "LinearProbe.predict: features")
        if features.shape[1] != self.mean.shape[1]:
            raise ValueError(f"LinearProbe.predict: features {tuple(features.shape)} have "
                             f"{features.shape[1]} dimensions, the probe was fit on {self.mean.shape[1]}")
        return (((features - self.mean) / self.std) @ self.weight + self.bias).argmax(axis=-1)

    def accuracy(self, features, labels):
        features = as_features(features, "LinearProbe.accuracy: features")
        labels = as_labels(labels, features, "LinearProbe.accuracy: labels")
        return float((self.predict(features) == labels).mean())


def relative_shift(clean, perturbed, seed=0):
    """How far `perturbed` embeddings (N, D) moved from `clean` ones, relative to the distance
    between different images' embeddings (module docstring): a float >= 0. Non-finite or
    collapsed clean embeddings (every image the same point) are refused: the ratio means nothing."""
    np = backend.numpy
    checks.non_negative_int("relative_shift", "seed", seed)
    clean, perturbed = (np.asarray(backend.to_host(as_features(z, f"relative_shift: {name}")),
                                   dtype=np.float64)
                        for z, name in ((clean, "clean"), (perturbed, "perturbed")))
    if clean.shape != perturbed.shape or len(clean) < 2:
        raise ValueError(f"relative_shift: clean {clean.shape} and perturbed {perturbed.shape} must "
                         f"be the same (N, D), N >= 2")
    n = len(clean)
    # a derangement: a random permutation followed by a shift of one, so no image meets itself
    order = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, 1)
    between = np.linalg.norm(clean - clean[partner], axis=1).mean()
    moved = np.linalg.norm(perturbed - clean, axis=1).mean()
    if between == 0:
        raise ValueError(f"relative_shift: the {n} clean embeddings are all one point (a collapsed "
                         f"encoder): there is no distance between images to measure a movement by")
    return float(moved / between)
