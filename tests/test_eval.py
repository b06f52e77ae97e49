"""minienc.eval on data with a known answer: probes and k-NN read separable classes (~100%) and
fail on shuffled labels (~chance); RankMe and the embedding std see full rank and collapse;
evaluate() reports the same record for any encoder; plots write PNG files."""
import re

import numpy as np
import pytest

import minienc
from minienc import backend
from minienc import eval as E
from minienc.data import ImageDataset
from minienc.eval import knn as knn_module
from minienc.nn import Flatten, Linear, ReLU, Sequential


def _blobs(device, classes=4, per_class=60, dim=16, spread=0.3, seed=0):
    """Gaussian blobs around random unit centres: well separated when spread is small."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    order = rng.permutation(len(labels))
    x, labels = x[order].astype(np.float32), labels[order]
    half = len(labels) // 2
    put = lambda a: backend.to_device(a, device)   # noqa: E731
    return put(x[:half]), put(labels[:half]), put(x[half:]), put(labels[half:])


def test_probes_and_knn_read_separable_classes(device):
    f_train, y_train, f_test, y_test = _blobs(device)
    assert E.linear_probe(f_train, y_train, f_test, y_test) >= 0.99
    assert E.few_shot_probe(f_train, y_train, f_test, y_test, shots=5, draws=20) >= 0.97
    assert E.knn_accuracy(f_train, y_train, f_test, y_test) >= 0.99


def test_probes_and_knn_are_at_chance_on_shuffled_labels(device):
    f_train, y_train, f_test, y_test = _blobs(device, classes=4, per_class=150, spread=3.0)
    rng = np.random.default_rng(1)
    shuffle = lambda y: backend.to_device(rng.permutation(backend.to_host(y)), device)   # noqa: E731
    y_train, y_test = shuffle(y_train), shuffle(y_test)
    chance = 0.25
    assert abs(E.linear_probe(f_train, y_train, f_test, y_test) - chance) < 0.1
    assert abs(E.few_shot_probe(f_train, y_train, f_test, y_test, draws=20) - chance) < 0.1
    assert abs(E.knn_accuracy(f_train, y_train, f_test, y_test) - chance) < 0.1


def test_probe_accepts_tensors_and_trains_inside_no_grad(device):
    f_train, y_train, f_test, y_test = _blobs(device)
    with minienc.no_grad():
        accuracy = E.linear_probe(minienc.tensor(f_train), minienc.tensor(y_train), f_test, y_test)
    assert accuracy >= 0.99
    assert minienc.is_grad_enabled()


def test_few_shot_draws_take_shots_per_class_without_repeats():
    labels = np.repeat(np.arange(3), [7, 9, 5])
    picks = E.probe.few_shot_indices(labels, shots=4, draws=6, seed=0)
    assert picks.shape == (6, 12)
    for row in picks:
        assert len(set(row)) == 12 and np.array_equal(np.bincount(labels[row]), [4, 4, 4])
    assert np.array_equal(picks, E.probe.few_shot_indices(labels, shots=4, draws=6, seed=0))
    assert not np.array_equal(picks, E.probe.few_shot_indices(labels, shots=4, draws=6, seed=1))
    with pytest.raises(ValueError, match="class 2 has 5 train samples, fewer than shots=6"):
        E.probe.few_shot_indices(labels, shots=6, draws=1)


def test_standardize_uses_train_statistics(device):
    xp = backend.xp_for(device)
    train = xp.asarray(np.random.default_rng(0).normal(3.0, [1.0, 5.0, 0.0], (200, 3)).astype(np.float32))
    test = train[:10] + 1.0
    s_train, s_test = E.standardize(train, test)
    np.testing.assert_allclose(backend.to_host(s_train.mean(0)), 0, atol=1e-5)
    np.testing.assert_allclose(backend.to_host(s_train.std(0)), [1, 1, 0], atol=1e-5)   # constant stays 0
    np.testing.assert_allclose(backend.to_host(s_test - s_train[:10])[:, :2],
                               1 / backend.to_host(train.std(0))[None, :2].repeat(10, 0), rtol=1e-4)
    g_train, = E.standardize(train, mode="global")
    assert abs(float((g_train ** 2).sum(1).mean()) - 3.0) < 1e-3   # unit variance on average
    with pytest.raises(ValueError, match="mode"):
        E.standardize(train, mode="bogus")


def _knn_reference(f_train, y_train, f_test, k, temperature, classes):
    """A direct, loop-based weighted vote (as DINO's eval_knn)."""
    a = f_train / np.linalg.norm(f_train, axis=1, keepdims=True)
    b = f_test / np.linalg.norm(f_test, axis=1, keepdims=True)
    out = []
    for row in b:
        sim = a @ row
        top = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(classes)
        for j in top:
            votes[y_train[j]] += np.exp(sim[j] / temperature)
        out.append(votes.argmax())
    return np.array(out)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5), (200, 1.0)])
def test_knn_matches_a_direct_weighted_vote(device, k, temperature):
    rng = np.random.default_rng(k)
    f_train = rng.standard_normal((80, 6)).astype(np.float32)
    y_train = rng.integers(0, 3, 80)
    f_test = rng.standard_normal((30, 6)).astype(np.float32)
    expected = _knn_reference(f_train.astype(np.float64), y_train, f_test.astype(np.float64),
                              min(k, 80), temperature, 3)
    got = knn_module.knn_predict(backend.to_device(f_train, device), y_train,
                                 backend.to_device(f_test, device), k=k, temperature=temperature)
    assert backend.device_of(got) == device
    assert np.array_equal(backend.to_host(got), expected)


def test_rankme_and_std_see_full_rank_and_collapse(device):
    rng = np.random.default_rng(0)
    put = lambda a: backend.to_device(a.astype(np.float32), device)   # noqa: E731
    gaussian = put(rng.standard_normal((4000, 32)))
    assert 30.0 < E.rankme(gaussian) <= 32.0
    rank_one = put(rng.standard_normal((500, 1)) @ rng.standard_normal((1, 32)))
    assert 1.0 <= E.rankme(rank_one) < 1.05
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    rank_four = put(rng.standard_normal((1000, 4)) @ q[:4] * 10)
    assert 3.7 < E.rankme(rank_four) < 4.05
    assert abs(E.embedding_std(gaussian) - 1 / np.sqrt(32)) < 0.01
    collapsed = put(np.ones((500, 32)) + 1e-4 * rng.standard_normal((500, 32)))
    assert E.embedding_std(collapsed) < 1e-3
    assert E.embedding_std(gaussian, per_dim=True).shape == (32,)


# ----- evaluate, baselines, table -------------------------------------------------------------------

def _image_dataset(seed=0):
    """A small synthetic image set where the class sets which pixel block is bright."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 4, n)
        x = 0.2 * rng.random((n, 1, 6, 6))
        for i, label in enumerate(y):
            x[i, 0, (label // 2) * 3:(label // 2) * 3 + 3, (label % 2) * 3:(label % 2) * 3 + 3] += 0.8
        return x.astype(np.float32), y.astype(np.int64)
    return ImageDataset(*make(120), *make(80), "blocks")


def test_evaluate_gives_one_record_and_prints_its_row(device, capsys):
    data = _image_dataset()
    encoder = Sequential(Flatten(), Linear(36, 32), ReLU(), Linear(32, 8)).to(device)
    encoder.train()
    record = E.evaluate(encoder, data, name="tiny MLP", draws=10)
    assert encoder.training                                         # its mode is given back
    assert set(record) >= {"method", "dim", "linear", "fewshot", "fewshot_std", "knn", "rankme", "std"}
    assert record["method"] == "tiny MLP" and record["dim"] == 8
    assert record["linear"] > 0.9 and record["knn"] > 0.9 and 1.0 <= record["rankme"] <= 8.0
    out = capsys.readouterr().out
    assert re.search(r"tiny MLP\s+8\s+\d+\.\d%\s+\d+\.\d% ±\d+\.\d%\s+\d+\.\d%\s+\d+\.\d", out)
    # a plain function is an encoder too; it gets batches on the device it is asked for
    same = E.evaluate(lambda x: encoder(x), data, name="fn", device=device, verbose=False, draws=10)
    assert same["linear"] == record["linear"] and same["knn"] == record["knn"]


def test_baselines_and_table(device, capsys):
    data = _image_dataset()
    encoder = Sequential(Flatten(), Linear(36, 5)).to(device)
    records = E.baseline_records(data, dim=5, random_encoder=encoder, draws=10, verbose=False)
    assert [r["method"] for r in records] == ["raw pixels", "PCA-5", "random init"]
    assert [r["dim"] for r in records] == [36, 5, 5]
    assert records[0]["linear"] > 0.9
    E.print_table(records, title="baselines")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "baselines" and lines[1].split() == ["method", "dim", "linear", "5-shot",
                                                            "k-NN", "RankMe", "align", "unif"]
    assert len(lines) == 5
    p_train, p_test = E.pca_features(backend.to_device(data.x_train, device), backend.to_device(data.x_test, device), 3)
    assert p_train.shape == (120, 3) and abs(float(p_train.mean())) < 1e-5
    variances = backend.to_host(p_train.var(0))
    assert np.all(np.diff(variances) <= 1e-6)                       # components by falling variance


def test_raw_pixels_on_real_digits():
    pytest.importorskip("sklearn")
    from minienc.data import load_digits
    data = load_digits()
    f_train, f_test = E.raw_pixels(data.x_train), E.raw_pixels(data.x_test)
    assert E.linear_probe(f_train, data.y_train, f_test, data.y_test) > 0.93
    assert E.knn_accuracy(f_train, data.y_train, f_test, data.y_test) > 0.95
    assert 0.7 < E.few_shot_probe(f_train, data.y_train, f_test, data.y_test, draws=20) < 0.95


def test_plots_write_png_files(tmp_path, device):
    pytest.importorskip("matplotlib")
    data = _image_dataset()
    images = backend.to_device(data.x_test[:6], device)
    paths = [
        E.plot_embeddings(E.raw_pixels(images), data.y_test[:6], str(tmp_path / "a" / "scatter.png")),
        E.plot_image_grid([images, minienc.tensor(images) * 2.0], str(tmp_path / "grid.png"),
                          row_titles=["in", "out"], title="grid"),
        E.plot_curves({"loss": [3.0, 2.0, 1.5], "rankme": ([0, 5], [2.0, 3.0])}, str(tmp_path / "c.png"),
                      log_scale=("loss",)),
    ]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        E.plot_embeddings(images.reshape(6, -1)[:, :1], data.y_test[:6], str(tmp_path / "x.png"))


def test_batched_probes_are_independent_problems(device):
    """Solving draws together gives each draw what solving it alone gives (no shared state)."""
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((3, 20, 5)).astype(np.float32))
    y = xp.asarray(rng.integers(0, 3, (3, 20)))
    w, b = E.fit_softmax_regression(x, y, 3, steps=50)
    for i in range(3):
        w_i, b_i = E.fit_softmax_regression(x[i], y[i], 3, steps=50)
        np.testing.assert_allclose(backend.to_host(w[i]), backend.to_host(w_i), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(backend.to_host(b[i]), backend.to_host(b_i), rtol=1e-4, atol=1e-5)


def test_rankme_equals_the_entropy_of_numpys_singular_values(device):
    rng = np.random.default_rng(3)
    for shape in [(300, 20), (15, 40)]:
        z = rng.standard_normal(shape) * np.geomspace(1, 1e-3, shape[1])    # a decaying spectrum
        s = np.linalg.svd(z.astype(np.float32).astype(np.float64), compute_uv=False)
        p = s / s.sum() + 1e-7
        expected = np.exp(-(p * np.log(p)).sum())
        assert abs(E.rankme(backend.to_device(z.astype(np.float32), device)) - expected) < 1e-4 * expected


def test_the_evaluation_kit_refuses_what_would_make_its_numbers_meaningless():
    """Regression (issue 28): one class gave 100%; k <= 0, temperature 0, shots 0, draws 0 and
    empty sets gave raw NumPy errors or NaN; one NaN embedding dropped a probe to chance and made
    RankMe raise LinAlgError without a word about NaN."""
    f_train, y_train, f_test, y_test = _blobs("cpu")
    one_class = np.zeros_like(y_train)
    for fn in (E.linear_probe, E.few_shot_probe, E.knn_accuracy):
        with pytest.raises(ValueError, match=r"the train labels hold a single class \(0\)"):
            fn(f_train, one_class, f_test, y_test)
    for options, said in (({"k": 0}, "knn: k must be a positive integer"),
                          ({"k": -3}, "knn: k must be a positive integer"),
                          ({"temperature": 0}, "knn: temperature must be a finite number > 0")):
        with pytest.raises(ValueError, match=said):
            E.knn_accuracy(f_train, y_train, f_test, y_test, **options)
    for options, said in (({"shots": 0}, "few_shot_probe: shots must be a positive integer"),
                          ({"draws": 0}, "few_shot_probe: draws must be a positive integer")):
        with pytest.raises(ValueError, match=said):
            E.few_shot_probe(f_train, y_train, f_test, y_test, **options)
    with pytest.raises(ValueError, match="probe: steps must be a positive integer"):
        E.linear_probe(f_train, y_train, f_test, y_test, steps=0)
    empty = f_test[:0]
    for fn in (E.linear_probe, E.knn_accuracy):
        with pytest.raises(ValueError, match=r"features_test: no features to evaluate \(shape"):
            fn(f_train, y_train, empty, y_test[:0])
    broken = f_train.copy()
    broken[7, 3] = np.nan
    for call in (lambda: E.linear_probe(broken, y_train, f_test, y_test),
                 lambda: E.rankme(broken), lambda: E.knn_accuracy(broken, y_train, f_test, y_test)):
        with pytest.raises(ValueError, match=r"1 of 120 rows hold NaN or inf \(the first: row 7\)"):
            call()


def test_a_single_class_dataset_is_evaluated_without_probes_not_failed():
    """A run on a one-class folder trained to the end, then evaluate() raised (the probes refuse
    one class): the report, RankMe and std were lost. The accuracies are now left out, as for
    unlabeled images, with a warning that says why; the probes themselves still refuse."""
    rng = np.random.default_rng(0)
    f_train, f_test = rng.standard_normal((40, 6)), rng.standard_normal((20, 6))
    one = np.zeros(40, np.int64)
    with pytest.warns(UserWarning, match=r"^evaluate: the train labels hold a single class"):
        record = E.evaluate_features("one", f_train, one, f_test, np.zeros(20, np.int64), draws=2,
                                     verbose=False)
    assert record["linear"] is None and record["knn"] is None and record["fewshot"] is None
    assert record["rankme"] > 1.0
    with pytest.raises(ValueError, match=r"the train labels hold a single class"):
        E.linear_probe(f_train, one, f_test, np.zeros(20, np.int64))
    data = ImageDataset(rng.random((40, 1, 4, 4)).astype(np.float32), one,
                        rng.random((20, 1, 4, 4)).astype(np.float32), np.zeros(20, np.int64), "one class")
    scores = E.Evaluator(Sequential(Flatten(), Linear(16, 4)), data, train_size=40, test_size=20)()
    assert np.isnan(scores["knn"]) and np.isnan(scores["fewshot"]) and scores["rankme"] > 1.0


@pytest.mark.parametrize("call, message", [
    (lambda enc, data: E.encode(enc, data.x_train, 0), r"^encode: batch_size must be a positive integer, got 0"),
    (lambda enc, data: E.Evaluator(enc, data, train_size=20, test_size=20, batch_size=-1),
     r"^Evaluator: batch_size must be a positive integer, got -1"),
    (lambda enc, data: E.Evaluator(enc, data, train_size=20, test_size=20, shots=True),
     r"^Evaluator: shots must be a positive integer, got True"),
    (lambda enc, data: E.pca_features(data.x_train, data.x_test, -1), r"^PCA: dim must be a positive integer, got -1"),
    (lambda enc, data: E.CollapseGauges(data.x_train, 0, enc=enc), r"^CollapseGauges: every must be a positive integer, got 0"),
])
def test_the_kits_sizes_are_checked_where_given(call, message):
    """batch_size 0 or -1 gave range() / concatenate errors, True passed as 1, PCA dim -1 kept
    every direction but the last (and 0 none), CollapseGauges every 0 or -1 became 1."""
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 1, 4, 4)).astype(np.float32), np.arange(20) % 2
    with pytest.raises(ValueError, match=message):
        call(Sequential(Flatten(), Linear(16, 4)), ImageDataset(x, y, x, y, "two classes"))
