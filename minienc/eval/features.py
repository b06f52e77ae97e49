"""Turning what a user hands to the evaluation kit into arrays: features become a float32 (N, D)
array on their own device, labels an int64 array on the same device.

Both are checked where they are handed over, since what goes wrong later says nothing of the
cause: an empty set gives NumPy's errors or NaN; one NaN embedding turns a probe to chance and
RankMe into a LinAlgError; a single class makes every probe and k-NN 100% right.
An unlabeled dataset (minienc.data.load_folder on loose pictures) marks every label -1: the
probes and k-NN refuse such labels by name, and `evaluate` leaves them out (`has_labels`)."""
from .. import backend
from ..engine import as_array


def as_features(features, name="features", source="the encoder's output is not finite"):
    """(N >= 1, ...) Tensor / NumPy / CuPy array of finite numbers -> float32 (N, D) array on the
    same device. (Finiteness costs one device read: evaluation is not a hot path.) `source`: what
    the message says of rows that are not finite."""
    data = as_array(features)
    if not hasattr(data, "dtype"):
        data = backend.numpy.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"{name}: expected features of shape (N, D), got shape {tuple(data.shape)}")
    if data.shape[0] == 0 or data.size == 0:
        raise ValueError(f"{name}: no features to evaluate (shape {tuple(data.shape)})")
    data = data.reshape(data.shape[0], -1)
    xp = backend.get_xp(data)
    finite = xp.isfinite(data).all(axis=1)
    if not bool(finite.all()):
        bad = backend.to_host(xp.flatnonzero(~finite))
        raise ValueError(f"{name}: {len(bad)} of {len(data)} rows hold NaN or inf (the first: row "
                         f"{int(bad[0])}); {source}, and no probe, k-NN "
                         f"or RankMe of it means anything")
    return data.astype(backend.DEFAULT_DTYPE, copy=False)


def check_classes(owner, labels):
    """`labels` (int64, as as_labels gives them) must hold at least two classes: with one,
    every prediction is right and the accuracy says nothing."""
    classes = backend.to_host(backend.get_xp(labels).unique(labels))
    if len(classes) < 2:
        raise ValueError(f"{owner}: the train labels hold a single class ({int(classes[0])}); "
                         f"an accuracy needs at least two")


def as_labels(labels, like, name="labels"):
    """Integer labels (N,) as an int64 array on the device of the array `like`."""
    data = as_array(labels)
    if not hasattr(data, "dtype"):
        data = backend.numpy.asarray(data)
    if data.ndim != 1 or backend.is_floating(data.dtype):
        raise ValueError(f"{name}: expected integer labels of shape (N,), got {data.dtype} "
                         f"{tuple(data.shape)}")
    if len(data) != len(like):
        raise ValueError(f"{name}: {len(data)} labels for {len(like)} feature rows")
    if len(data) and int(data.min()) < 0:
        raise ValueError(f"{name}: negative labels ({int(data.min())}): the images are unlabeled "
                         f"(-1), so there is nothing for a probe or k-NN to predict")
    return backend.to_device(data, backend.device_of(like)).astype("int64", copy=False)


def can_probe(y_train, y_test):
    """Whether accuracies can be measured: both splits labeled (has_labels) and at least two
    classes among the train labels (with one, every prediction is right: the probes refuse it).
    `evaluate` and the Evaluator leave the probes out otherwise, as for unlabeled images, so a
    run on a one-class folder still gets its RankMe and std instead of failing after training."""
    if not (has_labels(y_train) and has_labels(y_test)):
        return False
    return len(backend.numpy.unique(backend.to_host(as_array(y_train)))) >= 2


def has_labels(labels):
    """False for the labels of an unlabeled dataset (all negative, -1) or no labels at all."""
    data = as_array(labels)
    return data is not None and len(data) > 0 and int(data.max()) >= 0
