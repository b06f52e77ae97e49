"""Linear probes: how much of the label is linearly readable from frozen features.

A probe is multinomial logistic regression, trained with minienc itself (Parameters,
`cross_entropy`, `minienc.optim.Adam`) on standardised features:

    minimise  mean_i CE(softmax(x_i W + b), y_i) + (weight_decay / 2) ||W||^2

The problem is convex, so full-batch Adam from zero weights for a fixed number of steps reaches
(nearly) the same optimum for every encoder; the probe is cheap and deterministic.

The few-shot probe trains on `shots` labelled samples per class. Every draw is its own small
logistic regression, and all draws are solved at once as one batched problem: features
(draws, n, D) @ weights (draws, D, C). The loss is the SUM over draws of each draw's mean loss, so
each draw's gradient is exactly its own (draws do not share parameters). Features are
standardised with the statistics of the whole (unlabelled) train set: mean and std need no
labels, and 50 samples estimate them badly.
"""

from .. import backend, checks
from ..nn import Parameter
from ..ops import cross_entropy
from ..optim import Adam
from ..engine import as_tensor, enable_grad
from .features import as_features, as_labels, check_classes

PROBE_STEPS = 300
PROBE_LR = 0.05
PROBE_WEIGHT_DECAY = 1e-3


def standardize(train, *others, mode="dim", eps=1e-6):
    """Centre with the train mean and scale with train statistics, applied to every array:
    mode "dim": each dimension by its own std (zero mean, unit variance per dimension, as
    sklearn's StandardScaler or MAE's BatchNorm probe); constant dimensions are left at 0.
    mode "global": every dimension by one number, the root-mean-square std, which keeps the
    geometry of the embedding (a rotated embedding probes the same). None: no change.

    Per-dimension scaling raises low-variance directions to the same footing as the others, which
    a probe with few labels cannot undo: PCA features of all 64 digit pixels (a rotation of them)
    give the same full probe as the pixels but a worse 5-shot probe under mode "dim"."""
    if mode is None:
        return (train, *others)
    xp = backend.get_xp(train)
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    if mode == "dim":
        std = xp.where(std > eps, std, xp.ones_like(std))
    elif mode == "global":
        std = xp.maximum(xp.sqrt((std * std).mean()), eps)
    else:
        raise ValueError(f"standardize: mode must be 'dim', 'global' or None, got {mode!r}")
    return tuple((x - mean) / std for x in (train, *others))


def fit_softmax_regression(x, y, num_classes, steps=PROBE_STEPS, lr=PROBE_LR,
                           weight_decay=PROBE_WEIGHT_DECAY):
    """Fit W (..., D, C) and b (..., 1, C) to features x (..., n, D) and labels y (..., n), any
    leading batch axes being independent problems. Returns the weight and bias arrays."""
    checks.positive_int("probe", "steps", steps)
    checks.positive("probe", "lr", lr)
    checks.non_negative("probe", "weight_decay", weight_decay)
    xp = backend.get_xp(x)
    lead, n, dim = x.shape[:-2], x.shape[-2], x.shape[-1]
    w = Parameter(xp.zeros(lead + (dim, num_classes), dtype=x.dtype))
    b = Parameter(xp.zeros(lead + (1, num_classes), dtype=x.dtype))
    # weight decay on W only (a penalty on the bias would pull class priors towards uniform)
    opt = Adam([{"params": [w], "weight_decay": weight_decay}, {"params": [b], "weight_decay": 0.0}], lr=lr)
    inputs = as_tensor(x)
    for _ in range(steps):
        # sum over problems of each problem's mean: independent gradients per problem
        loss = cross_entropy(inputs @ w + b, y, reduction="sum") * (1.0 / n)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.data, b.data


def _accuracy(x, y, w, b):
    """Accuracy of argmax(x W + b) against y: one number per problem (leading axes of w, b)."""
    predictions = (x @ w + b).argmax(axis=-1)
    return (predictions == y).astype(backend.DEFAULT_DTYPE).mean(axis=-1)


def _num_classes(*labels):
    return int(max(int(y.max()) for y in labels)) + 1


def linear_probe(features_train, y_train, features_test, y_test, steps=PROBE_STEPS, lr=PROBE_LR,
                 weight_decay=PROBE_WEIGHT_DECAY, num_classes=None, standardize_mode="dim"):
    """Test accuracy (a float in [0, 1]) of logistic regression on standardised frozen features
    (see `standardize`), trained on all of the train set. Runs on the features' device."""
    f_train, f_test = as_features(features_train, "features_train"), as_features(features_test, "features_test")
    y_train, y_test = as_labels(y_train, f_train, "y_train"), as_labels(y_test, f_test, "y_test")
    check_classes("linear_probe", y_train)
    num_classes = num_classes or _num_classes(y_train, y_test)
    f_train, f_test = standardize(f_train, f_test, mode=standardize_mode)
    with enable_grad():  # the probe trains even when the caller is inside no_grad()
        w, b = fit_softmax_regression(f_train, y_train, num_classes, steps, lr, weight_decay)
    return float(_accuracy(f_test, y_test, w, b))


def few_shot_indices(y_train, shots, draws, seed=0):
    """(draws, shots * classes) host indices into the train set: for every draw, `shots` samples
    of each class without replacement, seeded."""
    checks.positive_int("few_shot_probe", "shots", shots)
    checks.positive_int("few_shot_probe", "draws", draws)
    np = backend.numpy
    y = backend.to_host(y_train)
    rng = np.random.default_rng(seed)
    picks = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < shots:
            raise ValueError(f"few_shot_probe: class {label} has {len(members)} train samples, "
                             f"fewer than shots={shots}")
        # a random ordering per draw (argsort of uniform keys), first `shots` of it
        order = np.argsort(rng.random((draws, len(members))), axis=1)[:, :shots]
        picks.append(members[order])
    return np.concatenate(picks, axis=1)


def few_shot_probe(features_train, y_train, features_test, y_test, shots=5, draws=100, seed=0,
                   steps=PROBE_STEPS, lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY,
                   standardize_mode="dim", return_std=False):
    """Mean test accuracy of the linear probe trained on `shots` labels per class, over `draws`
    seeded random draws (with return_std: (mean, std over draws))."""
    f_train, f_test = as_features(features_train, "features_train"), as_features(features_test, "features_test")
    y_train, y_test = as_labels(y_train, f_train, "y_train"), as_labels(y_test, f_test, "y_test")
    check_classes("few_shot_probe", y_train)
    num_classes = _num_classes(y_train, y_test)
    f_train, f_test = standardize(f_train, f_test, mode=standardize_mode)
    index = backend.to_device(few_shot_indices(y_train, shots, draws, seed), backend.device_of(f_train))
    with enable_grad():  # the probe trains even when the caller is inside no_grad()
        w, b = fit_softmax_regression(f_train[index], y_train[index], num_classes, steps, lr, weight_decay)
    accuracy = backend.to_host(_accuracy(f_test, y_test, w, b))   # (draws,)
    mean = float(accuracy.mean())
    return (mean, float(accuracy.std())) if return_std else mean
