"""One evaluation that every demo reports: the same columns, computed the same way.

    record = evaluate(encoder, data, name="SimCLR")          # prints one row
    rows = baseline_records(data, dim=record["dim"], random_encoder=fresh_encoder)
    print_table(rows + [record])

Columns: embedding dimension, linear probe (all train labels), few-shot probe (5 labels per class,
mean over seeded draws), weighted k-NN (k=20, T=0.07), RankMe, and Wang & Isola's alignment and
uniformity of two augmented views of the test images (`contrastive_augment`, drawn from the
evaluation seed: every encoder sees the same pairs). Accuracies are on the test split, probes and
k-NN see only the train split. Embedding std (collapse) is kept in the record too. Unlabeled
images (labels -1) have no accuracies: linear, fewshot and knn are None ("no labels" in the table).
"""
import warnings

from .. import backend, checks
from ..data.augment import contrastive_augment
from ..engine import as_array, as_tensor, no_grad
from .features import as_features, can_probe, has_labels
from .health import alignment, embedding_std, rankme, uniformity
from .knn import knn_accuracy
from .probe import few_shot_probe, linear_probe


def encode(encoder, images, batch_size=256, device=None):
    """Run `encoder` (a Module or any callable taking a Tensor batch) over `images` in batches
    without a graph; returns float32 features (N, D) on the device (outputs are flattened after
    the batch axis: pool first, in `encoder`, if a flat map is not what you want).

    A Module runs on its own device (`device` is ignored) in eval mode, and gets its previous
    mode back afterwards; a plain callable gets batches on `device` (default: minienc's default)."""
    checks.positive_int("encode", "batch_size", batch_size)
    is_module = hasattr(encoder, "parameters") and hasattr(encoder, "train")
    if is_module:
        device = encoder.device      # a module's inputs go where its parameters are
    elif device is None:
        device = backend.get_device()
    data = as_array(images)
    xp = backend.xp_for(device)
    was_training = getattr(encoder, "training", False)
    if is_module:
        encoder.eval()
    chunks = []
    try:
        with no_grad():
            for start in range(0, len(data), batch_size):
                batch = backend.to_device(data[start:start + batch_size], device)
                if backend.is_floating(batch.dtype):
                    batch = batch.astype(backend.DEFAULT_DTYPE, copy=False)
                out = encoder(as_tensor(batch))
                chunks.append(as_features(out, "encoder output"))
    finally:
        if is_module:
            encoder.train(was_training)
    return xp.concatenate(chunks)


def evaluate_features(name, features_train, y_train, features_test, y_test, shots=5, draws=100,
                      k=20, temperature=0.07, seed=0, verbose=True, views=None):
    """The record of frozen features: a dict with method, dim, linear, fewshot, fewshot_std,
    shots, knn, rankme, std (accuracies as fractions in [0, 1]), and with `views` (the features
    of two views of the same images, row i a positive pair) align and unif (else None).
    Without labels (unlabeled images, -1), or with a single class in the train labels, linear,
    fewshot, fewshot_std and knn are None."""
    f_train, f_test = as_features(features_train, "features_train"), as_features(features_test, "features_test")
    labeled = can_probe(y_train, y_test)
    if not labeled and has_labels(y_train) and has_labels(y_test):
        warnings.warn("evaluate: the train labels hold a single class: no accuracy to measure "
                      "(linear, few-shot and k-NN left out, shown as 'no labels')", stacklevel=2)
    fewshot, fewshot_std = few_shot_probe(f_train, y_train, f_test, y_test, shots=shots, draws=draws,
                                          seed=seed, return_std=True) if labeled else (None, None)
    record = {
        "method": name,
        "dim": int(f_train.shape[1]),
        "linear": linear_probe(f_train, y_train, f_test, y_test) if labeled else None,
        "fewshot": fewshot,
        "fewshot_std": fewshot_std,
        "shots": shots,
        "knn": knn_accuracy(f_train, y_train, f_test, y_test, k=k,
                            temperature=temperature) if labeled else None,
        "rankme": rankme(f_train),
        "std": embedding_std(f_train),
        "align": None if views is None else alignment(*views),
        "unif": None if views is None else (uniformity(views[0]) + uniformity(views[1])) / 2,
    }
    if verbose:
        print_row(record)
    return record


def evaluate(encoder, data, name=None, batch_size=256, device=None, **options):
    """Encode `data`'s train and test images with `encoder` (a Module or a callable, see
    `encode`) and evaluate the features (`evaluate_features`; options: shots, draws, k,
    temperature, seed, verbose), alignment and uniformity on `view_pairs(data, seed)`. Returns
    the record and prints its row."""
    name = name or type(encoder).__name__
    f_train = encode(encoder, data.x_train, batch_size, device)
    f_test = encode(encoder, data.x_test, batch_size, device)
    pairs = view_pairs(data, options.get("seed", 0))
    views = None if pairs is None else tuple(encode(encoder, v, batch_size, device) for v in pairs)
    return evaluate_features(name, f_train, data.y_train, f_test, data.y_test, views=views,
                             **options)


def view_pairs(data, seed=0, augment=None):
    """Two augmented views (host arrays) of `data`'s test images for alignment and uniformity:
    `augment` (default `contrastive_augment()`) drawn from a generator seeded with `seed`, so
    every encoder evaluated with the same seed sees the same pairs. None for non-image data."""
    images = backend.to_host(as_array(data.x_test))
    if images.ndim != 4 or not backend.is_floating(images.dtype):
        return None
    augment = augment or contrastive_augment()
    gen = backend.numpy.random.default_rng(seed)
    images = images.astype(backend.DEFAULT_DTYPE, copy=False)
    return augment(images, gen), augment(images, gen)


# ----- the table ----------------------------------------------------------------------------------

_COLUMNS = "{:<24} {:>5} {:>7} {:>13} {:>7} {:>7} {:>6} {:>6}"
_header_printed = False


def format_header(shots=5):
    return _COLUMNS.format("method", "dim", "linear", f"{shots}-shot", "k-NN", "RankMe", "align",
                           "unif")


def _optional(value, spec):
    return "" if value is None else format(value, spec)


def format_row(record):
    if record["fewshot"] is None:   # unlabeled images
        fewshot, linear, knn = "no labels", "-", "-"
    else:
        fewshot = f"{record['fewshot']:.1%} ±{record['fewshot_std']:.1%}"
        linear, knn = f"{record['linear']:.1%}", f"{record['knn']:.1%}"
    return _COLUMNS.format(record["method"][:24], record["dim"], linear, fewshot, knn,
                           f"{record['rankme']:.1f}",
                           _optional(record.get("align"), ".2f"),
                           _optional(record.get("unif"), ".2f"))


def print_row(record):
    """Print a record's row, with the header before the first row a process prints."""
    global _header_printed
    if not _header_printed:
        print(format_header(record.get("shots", 5)))
        _header_printed = True
    print(format_row(record))


def print_table(records, title=None):
    """Print a small table of records (a title line, the header, one row per record)."""
    if title:
        print(title)
    print(format_header(records[0].get("shots", 5) if records else 5))
    for record in records:
        print(format_row(record))
