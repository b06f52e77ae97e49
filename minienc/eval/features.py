"""Turning what a user hands to the evaluation kit into arrays: features become a float32 (N, D)
array on their own device, labels an int64 array on the same device.

An unlabeled dataset (minienc.data.load_folder on loose pictures) marks every label -1: the
probes and k-NN refuse such labels by name, and `evaluate` leaves them out (`has_labels`)."""
from .. import backend
from ..engine import as_array


def as_features(features, name="features"):
    """(N, ...) Tensor / NumPy / CuPy array -> float32 (N, D) array on the same device."""
    data = as_array(features)
    if not hasattr(data, "dtype"):
        data = backend.numpy.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"{name}: expected features of shape (N, D), got shape {tuple(data.shape)}")
    data = data.reshape(data.shape[0], -1)
    return data.astype(backend.DEFAULT_DTYPE, copy=False)


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


def has_labels(labels):
    """False for the labels of an unlabeled dataset (all negative, -1) or no labels at all."""
    data = as_array(labels)
    return data is not None and len(data) > 0 and int(data.max()) >= 0
