"""Weighted k-nearest-neighbour classification on cosine similarity (Wu et al. 2018, InstDisc;
the k-NN evaluation of DINO, Caron et al. 2021).

Train and test features are L2-normalised; each test sample finds its k most similar train
samples, and neighbour j votes for its label with weight exp(s_j / T), s_j the cosine similarity.
The class with the largest total vote wins. With T = 0.07 a closer neighbour counts far more than a
farther one (a similarity 0.07 higher weighs e times more).
"""
from .. import backend, checks
from .features import as_features, as_labels, check_classes


def _normalize(x, eps=1e-12):
    xp = backend.get_xp(x)
    return x / xp.maximum(xp.linalg.norm(x, axis=1, keepdims=True), eps)


def knn_predict(features_train, y_train, features_test, k=20, temperature=0.07, num_classes=None,
                chunk=1024):
    """Predicted labels (int64 array on the features' device) for every test row."""
    checks.positive_int("knn", "k", k)
    checks.temperature("knn", "temperature", temperature)
    checks.positive_int("knn", "chunk", chunk)
    f_train = _normalize(as_features(features_train, "features_train"))
    f_test = _normalize(as_features(features_test, "features_test"))
    y_train = as_labels(y_train, f_train, "y_train")
    check_classes("knn", y_train)
    if f_train.shape[1] != f_test.shape[1]:
        raise ValueError(f"knn: train features have {f_train.shape[1]} dimensions, test features "
                         f"{f_test.shape[1]}")
    xp = backend.get_xp(f_train)
    k = min(k, len(f_train))
    num_classes = num_classes or int(y_train.max()) + 1
    predictions = []
    for start in range(0, len(f_test), chunk):   # chunks bound the (chunk, N_train) similarity matrix
        sim = f_test[start:start + chunk] @ f_train.T
        top = xp.argpartition(-sim, k - 1, axis=1)[:, :k]          # the k largest, in any order
        top_sim = xp.take_along_axis(sim, top, axis=1)
        # exp(s / T), shifted by the row maximum: the same argmax, and no overflow
        weight = xp.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / temperature)
        # votes[i, c] = sum of the weights of i's neighbours labelled c (a one-hot sum over k)
        one_hot = y_train[top][:, :, None] == xp.arange(num_classes)
        votes = (weight[:, :, None] * one_hot).sum(axis=1)
        predictions.append(votes.argmax(axis=1))
    return xp.concatenate(predictions)


def knn_accuracy(features_train, y_train, features_test, y_test, k=20, temperature=0.07,
                 num_classes=None):
    """Test accuracy (a float in [0, 1]) of the temperature-weighted cosine k-NN classifier."""
    f_test = as_features(features_test, "features_test")
    y_test = as_labels(y_test, f_test, "y_test")
    predicted = knn_predict(features_train, y_train, f_test, k, temperature, num_classes)
    return float((predicted == y_test).mean())
