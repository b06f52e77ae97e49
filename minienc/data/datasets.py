"""Image datasets: the real handwritten digits that ship offline, a larger-canvas version of
them, MNIST-style IDX files and CIFAR-10's binary files.

Every loader returns an `ImageDataset`: host NumPy arrays, images float32 (N, C, H, W) in [0, 1]
(C = 1 grey, 3 for CIFAR-10's colour), labels int64 (N,), already split into train and test.
Moving them to a device is the batch iterator's job (`minienc.data.BatchIterator`) or
`evaluate`'s.

    data = load_dataset("digits")          # or "digits-canvas:32", "mnist:PATH", "cifar10:PATH",
    data.x_train.shape, data.y_train.shape # (1347, 1, 8, 8), (1347,)     "folder:PATH"

Your own pictures (a folder with a subfolder per class, or an unlabeled one) load through
minienc/data/folder.py. An unlabeled dataset marks every label UNLABELED (-1).
"""
import dataclasses
import gzip
import math
import os
import zlib

import numpy

from .. import checks

DATA_HELP = ("digits (the 1,797 real 8x8 digits bundled with scikit-learn), digits-canvas[:SIZE] "
             "(the same digits enlarged and placed at random on a SIZE x SIZE canvas, default 32), "
             "mnist:PATH (a folder with the four MNIST or Fashion-MNIST IDX files, raw or .gz), "
             "cifar10:PATH (the folder of CIFAR-10's binary version: data_batch_1..5.bin, "
             "test_batch.bin), or folder:PATH (your own pictures, decoded with Pillow: one "
             "subfolder per class, or train/ and test/ each so, or loose pictures for an "
             "unlabeled set; resized and centre-cropped to --image-size)")
UNLABELED = -1   # the label of every image in an unlabeled dataset


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Train and test images (float32, (N, C, H, W), in [0, 1]) with int64 labels (all
    UNLABELED in an unlabeled dataset); `classes` names the labels where the data does, and
    `skipped` lists the (path, reason) of files a folder held that could not be decoded."""

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    name: str
    classes: tuple = ()
    skipped: tuple = ()

    def __post_init__(self):
        """Checked where it is made (what goes wrong later, a probe on the wrong labels or a NaN
        loss, says nothing of the cause): (N, C, H, W) images, one integer label per image,
        train and test images of one shape, and finite pixels (on the host: one pass)."""
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if getattr(x, "ndim", None) != 4:
                raise ValueError(f"ImageDataset {self.name!r}: {split} images must be (N, C, H, W), "
                                 f"got shape {getattr(x, 'shape', None)}")
            if getattr(y, "ndim", None) != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
                raise ValueError(f"ImageDataset {self.name!r}: {split} labels must be integers of "
                                 f"shape ({len(x)},), one per image, got "
                                 f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', None)}")
            if x.dtype.kind == "f" and isinstance(x, numpy.ndarray) and not numpy.isfinite(x).all():
                raise ValueError(f"ImageDataset {self.name!r}: {split} images hold NaN or inf pixels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"ImageDataset {self.name!r}: train images {self.x_train.shape[1:]} and "
                             f"test images {self.x_test.shape[1:]} differ in shape")

    @property
    def labeled(self):
        """False for an unlabeled dataset (every label UNLABELED)."""
        return bool((self.y_train != UNLABELED).any() or (self.y_test != UNLABELED).any())

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self):
        """0 when unlabeled."""
        return int(max(self.y_train.max(initial=UNLABELED), self.y_test.max(initial=UNLABELED))) + 1

    def standardizer(self):
        """images -> (images - mean) / std with the train images' pixel mean and std: the
        Normalize that ends I-JEPA's and LeJEPA's transforms (apply it after the augmentations)."""
        mean, std = float(self.x_train.mean()), float(self.x_train.std())
        return lambda images: (images - mean) / std

    def __repr__(self):
        classes = f"{self.num_classes} classes" if self.labeled else "unlabeled"
        return (f"ImageDataset({self.name!r}: {len(self.x_train)} train, {len(self.x_test)} test, "
                f"images {self.image_shape}, {classes})")


def stratified_split(labels, test_fraction=0.25, seed=0):
    """Indices (train, test), each sorted: from every class, round(test_fraction * count) samples
    chosen at random go to test. Same labels and seed, same split, on every machine."""
    labels = numpy.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction}")
    checks.non_negative_int("stratified_split", "seed", seed)
    rng = numpy.random.default_rng(seed)
    test = []
    for label in numpy.unique(labels):
        members = numpy.flatnonzero(labels == label)
        take = int(round(test_fraction * len(members)))
        test.append(rng.permutation(members)[:take])
    test = numpy.sort(numpy.concatenate(test))
    train = numpy.setdiff1d(numpy.arange(len(labels)), test)
    return train, test


def stratified_subset(labels, size, seed=0):
    """Sorted host indices of exactly min(size, N) samples, each class in its share of `labels`
    (largest remainders round; every class keeps at least one when size allows), seeded: the
    same subset on every machine and after every resume."""
    labels = numpy.asarray(labels)
    checks.non_negative_int("stratified_subset", "size", size)   # (-1 kept a slice's worth)
    checks.non_negative_int("stratified_subset", "seed", seed)
    if size >= len(labels):
        return numpy.arange(len(labels))
    classes, counts = numpy.unique(labels, return_counts=True)
    quota = size * counts / len(labels)
    take = numpy.floor(quota).astype(numpy.int64)
    take[numpy.argsort(take - quota, kind="stable")[:size - take.sum()]] += 1
    if size >= len(classes):
        while (take == 0).any():   # a class rounded away borrows from the largest share
            take[numpy.argmax(take)] -= 1
            take[numpy.flatnonzero(take == 0)[0]] += 1
    rng = numpy.random.default_rng(seed)
    picks = [rng.permutation(numpy.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    return numpy.sort(numpy.concatenate(picks))


def subset_limits(owner, max_train, max_test):
    """`max_train`, `max_test` checked: None (keep every image) or a positive count (0 or a
    negative count would keep nothing, or a slice's worth, rather than mean "no limit")."""
    return tuple(None if value is None else checks.positive_int(owner, name, value)
                 for name, value in (("max_train", max_train), ("max_test", max_test)))


def subsample(data, max_train=None, max_test=None, seed=0):
    """`data` with at most `max_train` train and `max_test` test images, each a seeded,
    stratified subset (for CPU-sized runs on MNIST or CIFAR-10, or quick smoke runs)."""
    max_train, max_test = subset_limits("subsample", max_train, max_test)
    if max_train is None and max_test is None:
        return data
    train = stratified_subset(data.y_train, max_train or len(data.y_train), seed)
    test = stratified_subset(data.y_test, max_test or len(data.y_test), seed + 1)
    return dataclasses.replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                               x_test=data.x_test[test], y_test=data.y_test[test])


# ----- the bundled digits -------------------------------------------------------------------------

def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn, which ships the 1,797 digits inside its "
                          "package (no download): pip install -e '.[demos]' or pip install "
                          "scikit-learn") from None
    images, labels = sk_load_digits(return_X_y=True)
    # pixel values are counts 0..16 (each 8x8 cell summed a 4x4 block of a 32x32 bitmap)
    return (images.reshape(-1, 1, 8, 8) / 16.0).astype(numpy.float32), labels.astype(numpy.int64)


def load_digits(test_fraction=0.25, seed=0):
    """The 1,797 real 8x8 handwritten digits (UCI optdigits test set, shipped with scikit-learn),
    split train/test with a fixed, seeded, stratified split (default 1,347 / 450)."""
    images, labels = _sklearn_digits()
    train, test = stratified_split(labels, test_fraction, seed)
    return ImageDataset(images[train], labels[train], images[test], labels[test], "digits")


def load_digits_canvas(size=32, copies=1, extent=(0.45, 0.75), degrees=15.0, translate=1.0,
                       test_fraction=0.25, seed=0):
    """The real digits, enlarged with bilinear interpolation and placed with a random affine map
    (scale so the digit spans `extent` of the canvas, rotation +-`degrees`, centre moved by up to
    `translate` times the room left on each side: 1 = anywhere it fits, 0 = centred) on a black
    `size` x `size` canvas. A richer image for patch-based methods (MAE, JEPA),
    where an 8x8 digit is only a handful of patches.

    The train/test split is `load_digits`'s (same seed), so no digit is in both. Every train digit
    is placed `copies` times (different placements, same label); each test digit once."""
    from .augment import affine_matrices, affine_sample   # the same sampler the augmentations use

    checks.positive_int("load_digits_canvas", "size", size)
    checks.positive_int("load_digits_canvas", "copies", copies)
    extent = checks.span("load_digits_canvas", "extent", extent, high=1.0)   # of the canvas
    checks.non_negative("load_digits_canvas", "degrees", degrees)
    checks.in_range("load_digits_canvas", "translate", translate, 0.0, 1.0)
    images, labels = _sklearn_digits()
    train, test = stratified_split(labels, test_fraction, seed)
    rng = numpy.random.default_rng([seed, size])

    def place(x):
        n = len(x)
        scale = rng.uniform(extent[0], extent[1], n) * size / 8     # canvas pixels per digit pixel
        angle = rng.uniform(-degrees, degrees, n) * math.pi / 180
        room = translate * (size - 8 * scale) / 2                    # how far the centre may move
        tx, ty = rng.uniform(-1, 1, n) * room, rng.uniform(-1, 1, n) * room
        theta = affine_matrices(numpy, angle, scale, numpy.zeros(n), tx, ty, numpy.float32)
        return numpy.clip(affine_sample(x, theta, out_hw=(size, size)), 0.0, 1.0)

    x_train = numpy.concatenate([place(images[train]) for _ in range(copies)])
    y_train = numpy.tile(labels[train], copies)
    return ImageDataset(x_train, y_train, place(images[test]), labels[test], f"digits-canvas{size}")


# ----- IDX files (MNIST, Fashion-MNIST) -----------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one IDX file (raw or gzip-compressed, told apart by its first bytes) into a NumPy array.

    Format (LeCun's MNIST page): two zero bytes, a type byte, a byte with the number of
    dimensions d, then d big-endian uint32 sizes, then the values, big-endian, row-major."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:   # bad header, cut short, corrupt data
            raise ValueError(f"{path}: a gzip file that does not decompress: it is truncated or "
                             f"corrupt ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file: the magic number must start with two zero bytes, "
                         f"got {raw[:4].hex()}")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type byte 0x{type_code:02x} (expected one of "
                         f"{', '.join(f'0x{k:02x}' for k in _IDX_TYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header says 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"the file has {len(raw)}")
    shape = tuple(int(s) for s in numpy.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = numpy.dtype(_IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} of {dtype.name} ({expected} bytes of "
                         f"data) but the file holds {found} bytes after the header"
                         + (" (truncated?)" if found < expected else ""))
    return numpy.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder, split, kind):
    """The path of e.g. train-images-idx3-ubyte[.gz] (also the train-images.idx3-ubyte spelling)."""
    idx = "idx3" if kind == "images" else "idx1"
    names = [f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"]
    for name in names:
        for suffix in ("", ".gz"):
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"load_mnist: no {split} {kind} in {folder!r}: looked for "
                            f"{' or '.join(n + '[.gz]' for n in names)}")


def _load_idx_pair(folder, split):
    images_path, labels_path = _find_idx(folder, split, "images"), _find_idx(folder, split, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != numpy.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), got "
                         f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != numpy.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    return (images[:, None].astype(numpy.float32) / 255.0), labels.astype(numpy.int64)


def load_mnist(path, max_train=None, max_test=None, seed=0):
    """MNIST or Fashion-MNIST from the four standard IDX files in the folder `path`
    (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte, each raw or .gz), as an `ImageDataset` with the official split.
    `max_train` / `max_test` keep a seeded, stratified subset (for CPU-sized runs)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_mnist: {path!r} is not a folder; pass the folder that holds "
                                f"train-images-idx3-ubyte[.gz] and the other three IDX files")
    x_train, y_train = _load_idx_pair(path, "train")
    x_test, y_test = _load_idx_pair(path, "t10k")
    data = ImageDataset(x_train, y_train, x_test, y_test, f"mnist:{os.path.basename(os.path.normpath(path))}")
    return subsample(data, max_train, max_test, seed)


# ----- CIFAR-10, the binary version -----------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
_CIFAR10_RECORD = 1 + 3 * 32 * 32   # a label byte, then 1,024 red, 1,024 green, 1,024 blue bytes


def read_cifar10_batch(path):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one CIFAR-10 binary batch file: N
    records of 3,073 bytes, each a label (0-9) then the red, green and blue planes, row-major."""
    size = os.path.getsize(path)
    if size == 0 or size % _CIFAR10_RECORD:
        raise ValueError(f"{path}: {size:,} bytes is not a whole number of 3,073-byte CIFAR-10 "
                         f"records ({size // _CIFAR10_RECORD:,} records and {size % _CIFAR10_RECORD:,} "
                         f"bytes over; truncated, or not the binary version?)")
    records = numpy.fromfile(path, dtype=numpy.uint8).reshape(-1, _CIFAR10_RECORD)
    labels = records[:, 0].astype(numpy.int64)
    if labels.max() > 9:
        bad = int(numpy.flatnonzero(labels > 9)[0])
        raise ValueError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0-9 "
                         f"(is this CIFAR-100, whose records are 3,074 bytes?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(path, max_train=None, max_test=None, seed=0):
    """CIFAR-10 from the binary version's folder (cifar-10-batches-bin, or the folder holding it):
    data_batch_1.bin ... data_batch_5.bin (50,000 train images) and test_batch.bin (10,000), as
    an `ImageDataset` of float32 (N, 3, 32, 32) RGB images in [0, 1]. `max_train` / `max_test`
    keep a seeded, stratified subset, cut before the images become float32 (all 60,000 take
    720 MB as float32, 180 MB as the bytes)."""
    max_train, max_test = subset_limits("load_cifar10", max_train, max_test)
    folder = os.path.expanduser(path)
    if os.path.isdir(os.path.join(folder, "cifar-10-batches-bin")):
        folder = os.path.join(folder, "cifar-10-batches-bin")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"load_cifar10: {path!r} is not a folder; pass the folder that holds "
                                f"data_batch_1.bin ... data_batch_5.bin and test_batch.bin")
    missing = [n for n in CIFAR10_TRAIN + CIFAR10_TEST if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(f"load_cifar10: {folder!r} lacks {', '.join(missing)} (the binary "
                                f"version, cifar-10-binary.tar.gz, holds all six files)")

    def read(names, limit, salt):
        parts = [read_cifar10_batch(os.path.join(folder, n)) for n in names]
        images, labels = (numpy.concatenate(p) for p in zip(*parts))
        keep = stratified_subset(labels, limit, seed + salt) if limit else numpy.arange(len(labels))
        return images[keep].astype(numpy.float32) / 255.0, labels[keep]

    return ImageDataset(*read(CIFAR10_TRAIN, max_train, 0), *read(CIFAR10_TEST, max_test, 1),
                        "cifar10")


# ----- one entry point for demos ------------------------------------------------------------------

def parse_data_spec(spec):
    """(kind, argument) of a demo's `--data` value, checked without loading anything: ("digits",
    None), ("digits-canvas", SIZE), ("mnist", PATH) (also "fashion-mnist"), ("cifar10", PATH) or
    ("folder", PATH); a ValueError that names the value otherwise. A PATH must be a folder."""
    kind, _, arg = spec.partition(":")
    if kind in ("mnist", "fashion-mnist", "cifar10", "folder") and arg:
        path = os.path.expanduser(arg)
        if not os.path.isdir(path):
            raise ValueError(f"{spec!r}: {path!r} is not a folder")
        return ("mnist" if kind == "fashion-mnist" else kind), path
    if kind == "digits" and not arg:
        return kind, None
    if kind == "digits-canvas":
        try:
            size = int(arg) if arg else 32
        except ValueError:
            raise ValueError(f"{spec!r}: the canvas size must be an integer, got {arg!r}") from None
        if size < 1:
            raise ValueError(f"{spec!r}: the canvas size must be a positive integer, got {arg!r}")
        return kind, size
    raise ValueError(f"{spec!r} not understood; expected {DATA_HELP}")


def load_dataset(spec="digits", seed=0, max_train=None, max_test=None, image_size=None, **options):
    """Parse a demo's `--data` value (parse_data_spec) and load it (see `DATA_HELP`): "digits",
    "digits-canvas" / "digits-canvas:SIZE", "mnist:PATH", "cifar10:PATH", "folder:PATH".
    `max_train` / `max_test` keep a seeded, stratified subset; `image_size` is the side a
    folder's pictures are resized and cropped to (default 32; the other kinds have their own
    size); `options` go to the loader (e.g. copies=4 for the canvas)."""
    try:
        kind, arg = parse_data_spec(spec)
    except ValueError as error:
        raise ValueError(f"--data {error}") from None
    max_train, max_test = subset_limits("load_dataset", max_train, max_test)
    if kind == "folder":
        from .folder import load_folder
        return load_folder(arg, image_size=32 if image_size is None else image_size, seed=seed,
                           max_train=max_train, max_test=max_test, **options)
    if image_size is not None:
        raise ValueError(f"--image-size resizes the pictures of --data folder:PATH; --data "
                         f"{spec!r} has its own size")
    if kind == "mnist":
        return load_mnist(arg, max_train, max_test, seed=seed, **options)
    if kind == "cifar10":
        return load_cifar10(arg, max_train, max_test, seed=seed, **options)
    data = load_digits(seed=seed, **options) if kind == "digits" else \
        load_digits_canvas(size=arg, seed=seed, **options)
    return subsample(data, max_train, max_test, seed)
