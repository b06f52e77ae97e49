"""Baselines that every demo prints beside its own result, computed the same way:

- raw pixels: the flattened image is the feature (on digits already ~96% linear, so the full
  probe saturates; the few-shot probe and k-NN are where an encoder must show its worth);
- PCA to the encoder's dimension, fitted on the train images (what a linear autoencoder learns);
- the same encoder at random initialisation (what the architecture gives for free).
"""
from .. import backend, checks
from .evaluate import evaluate, evaluate_features, view_pairs


def raw_pixels(images):
    """Flattened images (N, H*W*C), float32, on their own device."""
    return images.reshape(len(images), -1).astype(backend.DEFAULT_DTYPE, copy=False)


def fit_pca(features, dim):
    """(mean (1, P), components (P, dim)) of the top-`dim` principal directions of `features`."""
    checks.positive_int("PCA", "dim", dim)   # (-1 kept every direction but the last)
    xp = backend.get_xp(features)
    mean = features.mean(axis=0, keepdims=True)
    _, _, vt = xp.linalg.svd(features - mean, full_matrices=False)
    dim = min(dim, vt.shape[0])
    return mean, vt[:dim].T


def pca_features(x_train, x_test, dim):
    """Train and test images projected on the top-`dim` principal components of the train images."""
    f_train, f_test = raw_pixels(x_train), raw_pixels(x_test)
    mean, components = fit_pca(f_train, dim)
    return (f_train - mean) @ components, (f_test - mean) @ components


def baseline_records(data, dim, random_encoder=None, device=None, **options):
    """Records (see `evaluate_features`) for raw pixels, PCA to `dim`, and `random_encoder` if
    given (the demo's encoder built with the same seed, before training). Options as evaluate."""
    device = device or (random_encoder.device if hasattr(random_encoder, "device") else backend.get_device())
    x_train, x_test = (backend.to_device(x, device) for x in (data.x_train, data.x_test))
    records = []
    mean, components = fit_pca(raw_pixels(x_train), dim)
    pairs = view_pairs(data, options.get("seed", 0))
    pairs = None if pairs is None else [raw_pixels(backend.to_device(v, device)) for v in pairs]
    for name, project in (("raw pixels", lambda f: f),
                          (f"PCA-{components.shape[1]}", lambda f: (f - mean) @ components)):
        records.append(evaluate_features(
            name, project(raw_pixels(x_train)), data.y_train, project(raw_pixels(x_test)),
            data.y_test, views=None if pairs is None else [project(v) for v in pairs], **options))
    if random_encoder is not None:
        records.append(evaluate(random_encoder, data, name="random init", device=device, **options))
    return records
