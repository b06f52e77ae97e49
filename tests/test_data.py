"""minienc.data: the real digits and their split, IDX files (good and malformed), the text corpus
and tokenizer, the batch iterator, CIFAR-10's binary files, and the counts and sizes each refuses.
The on-device augmentations: tests/test_augment.py."""
import gzip
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minienc import data as D
from minienc.data import text as text_data


# ----- digits ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="load_digits reads the digits bundled with scikit-learn")
    return D.load_digits()


def test_digits_are_the_real_1797_as_float_images(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == np.float32
    assert digits.y_train.dtype == np.int64
    assert len(digits.x_train) + len(digits.x_test) == 1797
    everything = np.concatenate([digits.x_train, digits.x_test])
    assert everything.min() == 0.0 and everything.max() == 1.0
    assert digits.num_classes == 10 and digits.image_shape == (1, 8, 8)


def test_digits_split_is_stratified_fixed_and_disjoint(digits):
    labels = np.concatenate([digits.y_train, digits.y_test])
    counts, test_counts = np.bincount(labels), np.bincount(digits.y_test)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 0.5 + 1e-9)   # round(0.25 * count) per class
    again = D.load_digits()
    assert np.array_equal(again.x_test, digits.x_test) and np.array_equal(again.y_train, digits.y_train)
    other = D.load_digits(seed=1)
    assert not np.array_equal(other.x_test, digits.x_test)
    train, test = D.stratified_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)


def test_digits_canvas_places_the_same_split_on_a_larger_canvas(digits):
    canvas = D.load_digits_canvas(size=24, copies=2, seed=0)
    assert canvas.x_train.shape == (2 * len(digits.x_train), 1, 24, 24)
    assert canvas.x_train.dtype == np.float32 and 0.0 <= canvas.x_train.min() and canvas.x_train.max() <= 1.0
    assert np.array_equal(canvas.y_test, digits.y_test)
    assert np.array_equal(canvas.y_train, np.tile(digits.y_train, 2))
    assert np.array_equal(canvas.x_test, D.load_digits_canvas(size=24, copies=2, seed=0).x_test)
    # ink is conserved up to the enlargement: every placed digit has some
    assert np.all(canvas.x_test.reshape(len(canvas.x_test), -1).max(axis=1) > 0.3)


def test_load_dataset_parses_demo_flags(tmp_path, digits):
    assert D.load_dataset("digits").x_train.shape == digits.x_train.shape
    assert D.load_dataset("digits-canvas:16").image_shape == (1, 16, 16)
    _write_mnist(tmp_path, n_train=6, n_test=4)
    assert len(D.load_dataset(f"mnist:{tmp_path}").x_train) == 6
    for bad in ("cifar", "digits-canvas:big", "mnist:"):
        with pytest.raises(ValueError, match="not understood|integer"):
            D.load_dataset(bad)


# ----- IDX files ------------------------------------------------------------------------------------

def _idx_bytes(array, type_code=0x08):
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.asarray(array, dtype).tobytes()


def _write(path, payload, compress=False):
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)
    return path


def _write_mnist(folder, n_train, n_test, compress=False, spelling="-"):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 5, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        _write(os.path.join(folder, f"{split}-images{spelling}idx3-ubyte{suffix}"), _idx_bytes(images), compress)
        _write(os.path.join(folder, f"{split}-labels{spelling}idx1-ubyte{suffix}"), _idx_bytes(labels), compress)
        arrays[split] = images, labels
    return arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("spelling", ["-", "."])
def test_load_mnist_reads_idx_files_raw_and_gzipped(tmp_path, compress, spelling):
    arrays = _write_mnist(tmp_path, n_train=7, n_test=3, compress=compress, spelling=spelling)
    data = D.load_mnist(str(tmp_path))
    images, labels = arrays["train"]
    assert data.x_train.shape == (7, 1, 5, 3) and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train[:, 0], images / 255.0, rtol=1e-6)
    assert data.y_train.dtype == np.int64 and np.array_equal(data.y_train, labels)
    assert np.array_equal(data.y_test, arrays["t10k"][1])
    small = D.load_mnist(str(tmp_path), max_train=4, seed=3)
    assert len(small.x_train) == 4 and set(small.y_train) <= set(labels)


def test_read_idx_other_types(tmp_path):
    ints = np.arange(-3, 9, dtype=np.int32).reshape(3, 4)
    floats = np.linspace(-1, 1, 6, dtype=np.float32)
    assert np.array_equal(D.read_idx(_write(tmp_path / "i", _idx_bytes(ints, 0x0C))), ints)
    assert np.array_equal(D.read_idx(_write(tmp_path / "f", _idx_bytes(floats, 0x0D), compress=True)), floats)


good = _idx_bytes(np.zeros((2, 3, 3), np.uint8))


@pytest.mark.parametrize("payload, message", [
    (b"", "shorter than the 4-byte magic"),
    (b"\x01\x02\x08\x03" + good[4:], "two zero bytes"),
    (b"\x00\x00\x07\x03" + good[4:], "unknown IDX type byte 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (good[:9], "truncated IDX header"),
    (good[:-1], r"holds 17 bytes after the header \(truncated\?\)"),
    (good + b"\x00", "holds 19 bytes"),
    (b"\x1f\x8b" + b"not really gzip", "does not decompress"),
    (gzip.compress(good, mtime=0)[:-12], r"does not decompress: it is truncated or corrupt \(EOFError"),
    (gzip.compress(good, mtime=0)[:10] + bytes(b ^ 0x55 for b in gzip.compress(good, mtime=0)[10:-8])
     + gzip.compress(good, mtime=0)[-8:], r"does not decompress: it is truncated or corrupt \(error"),  # zlib.error
])
def test_read_idx_rejects_malformed_files_naming_file_and_problem(tmp_path, payload, message):
    path = _write(tmp_path / "bad-images-idx3-ubyte", payload)
    with pytest.raises(ValueError, match=message) as info:
        D.read_idx(str(path))
    assert "bad-images-idx3-ubyte" in str(info.value)


def test_load_mnist_rejects_inconsistent_or_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        D.load_mnist(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\]"):
        D.load_mnist(str(tmp_path))
    _write_mnist(tmp_path, n_train=4, n_test=2)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="holds 4 images but .* holds 5 labels"):
        D.load_mnist(str(tmp_path))
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros((4, 2), np.uint8)))
    with pytest.raises(ValueError, match=r"labels of shape \(N,\)"):
        D.load_mnist(str(tmp_path))


# ----- text -----------------------------------------------------------------------------------------

def test_builtin_corpus_is_real_prose():
    sentences = D.builtin_corpus()
    assert len(sentences) > 1000 and len(set(sentences)) == len(sentences)
    for s in sentences[:500]:
        assert s[0].isupper() and s[-1] in ".!?" and ">>>" not in s and "=" not in s
    words = [w for s in sentences for w in D.tokenize(s)]
    assert {"the", "a", "is", "of"} <= set(words)


def test_split_sentences_and_load_text(tmp_path):
    text = "It was late, e.g. past ten. The `rain` fell!\nIt did\nnot stop.\n\nA new paragraph here. Then x = 3"
    path = tmp_path / "story.txt"
    path.write_text(text, encoding="utf-8")
    assert D.load_text(str(path)) == ["It was late, e.g. past ten.", "The rain fell!",
                                      "It did not stop.", "A new paragraph here.", "Then x = 3"]
    assert D.load_text(str(path), prose_only=True)[-1] == "A new paragraph here."
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        D.load_text(str(tmp_path / "latin1.txt"))
    train, test = D.split_corpus([str(i) for i in range(100)], test_fraction=0.1, seed=0)
    assert len(test) == 10 and sorted(train + test, key=int) == [str(i) for i in range(100)]


SENTENCES = ["The cat sat on the mat.", "The dog sat on the cat!", "A bird can't sit, can it?",
             "The mat is red."]
TOKENIZER = D.Tokenizer.fit(SENTENCES, min_freq=2)


def test_tokenizer_vocabulary_and_specials():
    tok = TOKENIZER
    assert tok.itos[:5] == list(D.SPECIAL_TOKENS) and tok.pad_id == 0
    assert tok.itos[5:8] == ["the", ".", "cat"] or tok.itos[5] == "the"   # most frequent first
    assert "bird" not in tok.stoi and "sat" in tok.stoi                   # frequency cut at 2
    assert tok.encode("The bird") == [tok.stoi["the"], tok.unk_id]
    assert tok.encode("[MASK] sat") == [tok.mask_id, tok.stoi["sat"]]
    batch = tok.encode_batch(["the cat sat on the mat", "cat"], max_len=5, add_sep=True)
    assert batch.dtype == np.int64 and batch.shape == (2, 5)
    assert batch[0, 0] == tok.cls_id and batch[0, -1] == tok.sep_id           # cut to fit, [SEP] kept
    assert list(batch[1]) == [tok.cls_id, tok.stoi["cat"], tok.sep_id, tok.pad_id, tok.pad_id]
    assert tok.decode(batch[1]) == "[CLS] cat [SEP]"
    with pytest.raises(IndexError, match="outside the vocabulary"):
        tok.decode([len(tok)])


words = st.sampled_from(sorted(TOKENIZER.stoi) + ["bird", "Cat", "MAT", "don't", "[mask]", "é"])
texts = st.one_of(st.text(max_size=40), st.lists(words, max_size=12).map(" ".join))


@given(texts)
def test_tokenizer_encode_decode_round_trip(text):
    tok = TOKENIZER
    ids = tok.encode(text)
    decoded = tok.decode(ids, skip_pad=False)
    assert decoded == " ".join(t if t in tok.stoi else "[UNK]" for t in D.tokenize(text))
    assert tok.encode(decoded) == ids        # decoding loses nothing the vocabulary keeps


# ----- batch iterator -------------------------------------------------------------------------------

@given(n=st.integers(1, 40), batch_size=st.integers(1, 16), shuffle=st.booleans(), drop_last=st.booleans())
def test_batches_cover_every_sample_once_per_epoch(n, batch_size, shuffle, drop_last):
    x = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 3))
    y = np.arange(n)
    loader = D.BatchIterator(x, y, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, device="cpu")
    for _ in range(2):
        seen = []
        batches = list(loader)
        assert len(batches) == len(loader)
        for xb, yb in batches:
            assert xb.dtype == np.float32 and yb.dtype == np.int64 and len(xb) == len(yb)
            assert np.array_equal(xb.numpy()[:, 0], yb.numpy())      # rows stay paired
            assert len(yb) == batch_size or not drop_last
            seen += list(yb.numpy())
        assert len(seen) == len(set(seen))
        if drop_last:
            assert len(seen) == n - n % batch_size
        else:
            assert sorted(seen) == list(range(n))


def test_batch_iterator_is_seeded_per_epoch_and_places_on_device(device):
    tokens = np.arange(60).reshape(30, 2)
    a = D.BatchIterator(tokens, batch_size=8, seed=3, device=device)
    b = D.BatchIterator(tokens, batch_size=8, seed=3, device=device)
    first = [t.numpy() for t in a]
    assert all(t.device == device and t.dtype == np.int64 for t in b)
    assert all(np.array_equal(p, q.numpy()) for p, q in zip(first, D.BatchIterator(tokens, batch_size=8, seed=3, device=device)))
    second = [t.numpy() for t in a]   # next epoch: a new order
    assert not all(np.array_equal(p, q) for p, q in zip(first, second))
    a.set_epoch(0)
    assert all(np.array_equal(p, q.numpy()) for p, q in zip(first, a))
    with pytest.raises(ValueError, match="differ in length"):
        D.BatchIterator(tokens, np.arange(5))


@given(st.lists(st.integers(0, 4), min_size=10, max_size=200), st.integers(1, 250),
       st.integers(0, 3))
def test_a_stratified_subset_has_the_size_asked_and_every_class_it_can(labels, size, seed):
    labels = np.array(labels)
    picked = D.stratified_subset(labels, size, seed)
    assert np.array_equal(picked, D.stratified_subset(labels, size, seed))     # seeded
    assert len(picked) == min(size, len(labels)) and np.all(np.diff(picked) > 0)
    if size >= len(set(labels)):
        assert set(labels[picked]) == set(labels)
    counts = np.bincount(labels[picked], minlength=5)
    shares = size * np.bincount(labels, minlength=5) / len(labels)
    if size < len(labels) and (shares >= 1).all():   # no class needed to borrow a place
        assert np.all(np.abs(counts - shares) < 1), (counts, shares)


# ----- CIFAR-10 (binary version), on small files the tests write ----------------------------------

def _write_cifar10(folder, per_batch=6, test=4, seed=0):
    """Six files of 3,073-byte records (label, then the R, G and B planes); returns the arrays."""
    rs = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    written, offset = {}, 0
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", test)]:
        labels, offset = (offset + np.arange(n)) % 10, offset + n
        images = rs.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(n, -1)], axis=1)
        records.tofile(os.path.join(folder, name))
        written[name] = (images, labels)
    return written


def test_load_cifar10_reads_the_binary_records(tmp_path):
    written = _write_cifar10(tmp_path / "cifar-10-batches-bin")
    for path in (tmp_path / "cifar-10-batches-bin", tmp_path):   # the folder, or its parent
        data = D.load_dataset(f"cifar10:{path}")
        assert data.x_train.shape == (30, 3, 32, 32) and data.x_train.dtype == np.float32
        assert data.x_test.shape == (4, 3, 32, 32) and data.y_test.dtype == np.int64
        images, labels = written["data_batch_2.bin"]
        np.testing.assert_allclose(data.x_train[6:12], images / 255.0, rtol=1e-6)  # R, G, B planes
        assert np.array_equal(data.y_train[6:12], labels) and data.num_classes == 10
    small = D.load_dataset(f"cifar10:{tmp_path}", max_train=10, max_test=2)
    assert len(small.x_train) == 10 and sorted(small.y_train) == list(range(10))
    assert len(small.x_test) == 2


def test_load_cifar10_names_what_is_wrong(tmp_path):
    folder = tmp_path / "c"
    _write_cifar10(folder)
    os.remove(folder / "data_batch_4.bin")
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4.bin"):
        D.load_cifar10(str(folder))
    _write_cifar10(folder)
    with open(folder / "data_batch_3.bin", "ab") as f:
        f.write(b"\x00" * 100)   # 100 stray bytes
    with pytest.raises(ValueError, match=r"data_batch_3.bin: 18,538 bytes is not a whole number of "
                                         r"3,073-byte CIFAR-10 records \(6 records and 100 bytes over"):
        D.load_cifar10(str(folder))
    _write_cifar10(folder)
    raw = bytearray((folder / "test_batch.bin").read_bytes())
    raw[3073] = 42   # the second record's label
    (folder / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="test_batch.bin: record 1 has label 42; CIFAR-10 labels are 0-9"):
        D.load_cifar10(str(folder))
    (folder / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="test_batch.bin: 0 bytes"):
        D.load_cifar10(str(folder))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        D.load_cifar10(str(tmp_path / "nowhere"))


def test_the_standardizer_uses_the_train_pixels_statistics():
    from minienc.data import load_dataset
    data = load_dataset("digits", max_train=300, max_test=100)
    standardize = data.standardizer()
    z = standardize(data.x_train)
    assert z.dtype == data.x_train.dtype and abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4
    assert float(standardize(data.x_test).mean()) != float(data.x_test.mean())   # test pixels shifted alike


def test_builtin_corpus_by_module_labels_each_sentence_with_its_source_module():
    from minienc.data.text import builtin_corpus_by_module
    sentences, labels, names = builtin_corpus_by_module(5, per_module=50)
    assert len(names) == 5 and len(set(names)) == 5
    assert len(sentences) == len(labels) and set(labels.tolist()) == set(range(5))
    assert np.bincount(labels).max() <= 50
    corpus = set(D.builtin_corpus())
    assert all(s in corpus for s in sentences)   # the same sentences, now with a label


# ----- counts and sizes in the wrong form (issue 28) ------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(max_train=0), r"^load_dataset: max_train must be a positive integer, got 0"),
    (dict(max_train=-5), r"^load_dataset: max_train must be a positive integer, got -5"),
    (dict(max_test=0), r"^load_dataset: max_test must be a positive integer, got 0"),
    (dict(max_train=2.5), r"^load_dataset: max_train"),
])
def test_a_subset_of_no_images_is_refused_not_read_as_no_limit(options, message):
    with pytest.raises(ValueError, match=message):
        D.load_dataset("digits", **options)


def test_every_loader_refuses_a_subset_of_no_images(tmp_path, digits):
    _write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"^load_cifar10: max_train must be a positive integer, got 0"):
        D.load_cifar10(str(tmp_path), max_train=0)     # 0 was "no limit" for CIFAR
    with pytest.raises(ValueError, match=r"^load_dataset: max_test must be a positive integer"):
        D.load_dataset(f"cifar10:{tmp_path}", max_test=-1)
    with pytest.raises(ValueError, match=r"^subsample: max_train must be a positive integer, got -5"):
        D.subsample(digits, max_train=-5)               # kept 676 images (a slice to -5)
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match=r"^load_folder: max_test must be a positive integer, got 0"):
        D.load_folder(str(tmp_path), max_test=0)


@pytest.mark.parametrize("spec", ["digits-canvas:0", "digits-canvas:-3"])
def test_a_canvas_of_no_pixels_is_a_bad_data_value(spec):
    with pytest.raises(ValueError, match=rf"^--data '{spec}': the canvas size must be a positive integer"):
        D.load_dataset(spec)


@pytest.mark.parametrize("max_len", [-1, 0, 2.5])
def test_encode_batch_refuses_a_length_that_is_not_a_positive_count(max_len):
    with pytest.raises(ValueError, match=r"^encode_batch: max_len must be a positive integer"):
        TOKENIZER.encode_batch(["the cat"], max_len=max_len)


@pytest.mark.parametrize("options, argument", [
    (dict(size=0), "size"),       # was a dataset of (1, 0, 0) images
    (dict(size=-4), "size"),      # was NumPy's "expected non-negative integer"
    (dict(size=16, copies=0), "copies"),
    (dict(size=16, copies=1.5), "copies"),
])
def test_the_canvas_loader_names_a_bad_size_or_count(options, argument):
    with pytest.raises(ValueError, match=rf"^load_digits_canvas: {argument} must be a positive integer"):
        D.load_digits_canvas(**options)


@pytest.mark.parametrize("options, message", [
    (dict(extent=(0.9, 0.1)), r"^load_digits_canvas: extent must be \(min, max\)"),   # NumPy's "high - low < 0"
    (dict(extent=(0.5, 2.0)), r"^load_digits_canvas: extent must be \(min, max\)"),   # taken
    (dict(degrees=float("nan")), r"^load_digits_canvas: degrees must be a finite number >= 0"),
    (dict(translate=-1.0), r"^load_digits_canvas: translate must be in \[0.0, 1.0\]"),   # taken
    (dict(translate=float("nan")), r"^load_digits_canvas: translate must be in"),          # taken
    (dict(seed=-1), r"^stratified_split: seed must be an integer >= 0, got -1"),
])
def test_the_canvas_loader_names_a_bad_placement(options, message):
    with pytest.raises(ValueError, match=message):
        D.load_digits_canvas(size=16, **options)


def _blank(n):
    return np.zeros((n, 1, 2, 2), np.float32)


@pytest.mark.parametrize("make, message", [
    (lambda: D.ImageDataset(_blank(10), np.zeros(5, np.int64), _blank(4), np.zeros(4, np.int64), "m"),
     r"^ImageDataset 'm': train labels must be integers of shape \(10,\), one per image, got int64 \(5,\)"),
    (lambda: D.ImageDataset(np.zeros((10, 4), np.float32), np.zeros(10, np.int64), _blank(4),
                            np.zeros(4, np.int64), "m"),
     r"^ImageDataset 'm': train images must be \(N, C, H, W\), got shape \(10, 4\)"),
    (lambda: D.ImageDataset(_blank(10), np.zeros(10), _blank(4), np.zeros(4, np.int64), "m"),
     r"^ImageDataset 'm': train labels must be integers"),
    (lambda: D.ImageDataset(_blank(10), np.zeros(10, np.int64), np.full((4, 1, 2, 2), np.nan, np.float32),
                            np.zeros(4, np.int64), "m"), r"^ImageDataset 'm': test images hold NaN or inf"),
    (lambda: D.ImageDataset(_blank(10), np.zeros(10, np.int64), np.zeros((4, 1, 3, 3), np.float32),
                            np.zeros(4, np.int64), "m"), r"^ImageDataset 'm': train images \(1, 2, 2\) and test images"),
    (lambda: D.BatchIterator(_blank(4), batch_size=True), r"^BatchIterator: batch_size must be a positive integer, got True"),
    (lambda: D.BatchIterator(_blank(4), batch_size=None), r"^BatchIterator: batch_size must be a positive integer, got None"),
    (lambda: D.BatchIterator(_blank(4), seed=-1), r"^BatchIterator: seed must be an integer >= 0, got -1"),
    (lambda: D.stratified_subset(np.zeros(10), -1), r"^stratified_subset: size must be an integer >= 0, got -1"),
])
def test_datasets_and_batches_are_checked_where_made(make, message):
    """Each was taken, and failed later or never: 10 images with 5 labels, flat images, float
    labels and NaN pixels made a dataset; batch_size True was 1; seed -1 failed at the first
    epoch; a subset of -1 kept a slice's worth."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: D.Tokenizer.fit(SENTENCES, min_freq=0), r"^Tokenizer.fit: min_freq must be a positive integer"),
    (lambda: D.Tokenizer.fit(SENTENCES, max_size=-5), r"^Tokenizer.fit: max_size must be an integer >= 5"),
    (lambda: D.Tokenizer.fit(SENTENCES, max_size=3), r"^Tokenizer.fit: max_size .* \(the special tokens\)"),
    (lambda: D.split_corpus(SENTENCES, test_fraction=1.0), r"^split_corpus: test_fraction must be in \[0.0, 1.0\)"),
    (lambda: D.split_corpus(SENTENCES, test_fraction=-0.1), r"^split_corpus: test_fraction"),
    (lambda: text_data.builtin_corpus_by_module(0), r"^builtin_corpus_by_module: modules must be a positive integer"),
    (lambda: text_data.builtin_corpus_by_module(2, per_module=0), r"^builtin_corpus_by_module: per_module"),
])
def test_text_counts_and_fractions_are_checked_where_given(make, message):
    with pytest.raises(ValueError, match=message):
        make()
