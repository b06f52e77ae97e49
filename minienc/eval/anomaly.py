"""Anomaly detection with an encoder: a score per image (higher = more anomalous) and the area
under the ROC curve that says how well the score separates anomalies from normal images.

A model trained on normal images only scores a new image x by how badly it explains it:

    negative ELBO (VAE)    -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || N(0, I))
                           the VAE's bound on -log p(x): low for images like the training data
    reconstruction (VAE)   the first term alone, E_q(z|x)[-log p(x|z)]: the bound without the
                           prior's say (does the regularised latent space add anything?)
    reconstruction (AE)    -log p(x | g(f(x))) of a plain autoencoder (its squared error for a
                           Gaussian decoder, its cross-entropy for a Bernoulli one)
    PCA                    ||x - P P^T (x - m) - m||^2: the distance of x to the principal
                           subspace of the normal images (the linear autoencoder's optimum)
    k-NN in pixels         the mean Euclidean distance from x to its k nearest normal images

AUROC (the Mann-Whitney U statistic divided by n_anomalous * n_normal) is the probability that
a random anomaly scores higher than a random normal image, ties counting one half:

    AUROC = (R_anomalous - n_a (n_a + 1) / 2) / (n_a n_n)

with R_anomalous the sum of the anomalies' ranks among all scores (tied scores share their mean
rank). 1: every anomaly above every normal image; 0.5: chance; 0: the score is reversed. It
depends only on the order of the scores, so any increasing transform leaves it unchanged.
"""
from .. import backend, checks
from ..engine import as_array, as_tensor, no_grad
from ..objectives.reconstruction import check_probabilities, kl_to_standard_normal, reparameterize
from ..ops import binary_cross_entropy_with_logits, mse_loss
from .baselines import fit_pca
from .features import as_features


def roc_auc(scores, is_anomaly):
    """Area under the ROC curve of `scores` (N,) against `is_anomaly` (N,), booleans or 0/1:
    rank-based (the Mann-Whitney U), tied scores averaged. Errors when either class is empty, a
    score is not a finite number, or a label is anything but 0/1 (-1 for "anomalous", as
    scikit-learn's outlier detectors mark it, would otherwise count as anomalous and 0 as normal
    with no word)."""
    np = backend.numpy
    scores = np.asarray(backend.to_host(scores)).reshape(-1)
    labels = np.asarray(backend.to_host(is_anomaly)).reshape(-1)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"roc_auc: scores must be numbers, got dtype {scores.dtype}")
    if labels.dtype != bool and not (labels.dtype.kind in "iuf" and np.isin(labels, (0, 1)).all()):
        odd = [v for v in np.unique(labels[~np.isin(labels, (0, 1))] if labels.dtype.kind in "iuf"
                                    else labels)[:5].tolist()]
        raise ValueError(f"roc_auc: is_anomaly must be booleans or 0/1 (1 = anomalous), got "
                         f"{labels.dtype} values such as {odd}")
    scores, positive = scores.astype(np.float64), labels.astype(bool)
    if scores.shape != positive.shape:
        raise ValueError(f"roc_auc: scores {scores.shape} and is_anomaly {positive.shape} must have "
                         f"the same length")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: needs anomalous and normal examples, got {n_pos} anomalous "
                         f"and {n_neg} normal")
    if not np.isfinite(scores).all():
        raise ValueError(f"roc_auc: {int((~np.isfinite(scores)).sum())} scores are not finite")
    return float((average_ranks(scores)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values):
    """Ranks 1..N of `values` (a host array), each group of tied values given its mean rank."""
    np = backend.numpy
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # a tie group starts where the sorted value changes; its members share (first + last) / 2
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]                  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0                  # ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


# ----- scores: higher means more anomalous ------------------------------------------------------

def reconstruction_per_example(output, images, likelihood="bernoulli", sigma=1.0):
    """-log p(images | output) of each example (a host array (N,)): the reconstruction term of
    minienc.objectives.reconstruction, summed over each example's values but not averaged."""
    if likelihood == "bernoulli":
        check_probabilities("reconstruction_per_example", as_array(images))
        values = binary_cross_entropy_with_logits(output, images, reduction="none")
    else:
        values = mse_loss(output, images, reduction="none") * (1.0 / (2.0 * sigma * sigma))
    return backend.to_host(values.data.reshape(len(values.data), -1).sum(axis=1))


def _in_batches(owner, fn, images, batch_size, device):
    """fn(batch) -> host rows, over `images` in batches on `device` without a graph, concatenated
    (float64)."""
    np = backend.numpy
    checks.positive_int(owner, "batch_size", batch_size)
    with no_grad():
        parts = [fn(as_tensor(backend.to_device(images[i:i + batch_size], device)))
                 for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def vae_scores(vae, images, samples=8, batch_size=256):
    """{"neg_elbo", "reconstruction", "kl"}, each a host array (N,): the reconstruction term
    averaged over `samples` draws z ~ q(z|x), the KL to N(0, I) in closed form, and their sum
    (the negative ELBO, in nats per image)."""
    np = backend.numpy
    checks.positive_int("vae_scores", "samples", samples)

    def terms(x):
        mu, logvar = vae.posterior(x)
        recon = sum(reconstruction_per_example(vae.decoder(reparameterize(mu, logvar)), x,
                                               vae.likelihood, vae.sigma) for _ in range(samples))
        kl = backend.to_host(kl_to_standard_normal(mu, logvar, reduction="none").data)
        return np.stack([recon / samples, kl], axis=1)

    both = _in_batches("vae_scores", terms, images, batch_size, vae.device)
    return {"neg_elbo": both[:, 0] + both[:, 1], "reconstruction": both[:, 0], "kl": both[:, 1]}


def autoencoder_scores(model, images, batch_size=256):
    """The reconstruction error of each image under a (deterministic) autoencoder: -log p(x |
    decoder(embed(x))), a host array (N,)."""
    def errors(x):
        return reconstruction_per_example(model.decoder(model.embed(x)), x, model.likelihood,
                                          model.sigma)
    return _in_batches("autoencoder_scores", errors, images, batch_size, model.device)


def _pixel_rows(owner, train_images, images):
    """The train and scored images as host float64 rows (N, D), both checked (non-empty, finite,
    one D): NaN pixels would otherwise drop out of a k-NN unnoticed and break PCA's SVD."""
    np = backend.numpy
    train, test = (np.asarray(backend.to_host(as_features(x, f"{owner}: {name}",
                                                     "the pixels are not finite")),
                              dtype=np.float64)
                   for x, name in ((train_images, "train_images"), (images, "images")))
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"{owner}: images have {test.shape[1]} values each but train_images "
                         f"{train.shape[1]}")
    return train, test


def pca_scores(train_images, images, dim):
    """Squared distance of each image to the `dim`-dimensional principal subspace of the
    train images (the linear autoencoder's reconstruction error), a host array (N,). N train
    images span at most N - 1 directions: asking for more (short of every pixel) is an error,
    as the extra directions would be arbitrary."""
    checks.positive_int("pca_scores", "dim", dim)
    train, test = _pixel_rows("pca_scores", train_images, images)
    if min(dim, train.shape[1]) > len(train) - 1:
        raise ValueError(f"pca_scores: {len(train)} train images span at most {len(train) - 1} "
                         f"principal directions, dim {dim} asks for more")
    mean, components = fit_pca(train, dim)
    centred = test - mean
    residual = centred - (centred @ components) @ components.T
    return (residual * residual).sum(axis=1)


def knn_scores(train_images, images, k=5, batch_size=512):
    """Mean Euclidean distance of each image to its k nearest train images, in pixel space,
    a host array (N,). An image that is itself among the train images counts as its own
    neighbour (distance 0): score held-out images."""
    np = backend.numpy
    checks.positive_int("knn_scores", "k", k)
    checks.positive_int("knn_scores", "batch_size", batch_size)
    train, test = _pixel_rows("knn_scores", train_images, images)
    if k > len(train):
        raise ValueError(f"knn_scores: k must be in [1, {len(train)}] (the train images), got {k}")
    train_sq = (train * train).sum(axis=1)
    out = []
    for i in range(0, len(test), batch_size):
        block = test[i:i + batch_size]
        d2 = (block * block).sum(axis=1)[:, None] - 2.0 * block @ train.T + train_sq[None, :]
        nearest = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
        out.append(np.sqrt(nearest).mean(axis=1))
    return np.concatenate(out)
