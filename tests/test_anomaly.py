"""Anomaly scores and their AUROC (minienc/eval/anomaly.py), and the robustness corruptions
(minienc/data/corrupt.py)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minienc
from minienc import backend
from minienc.data.corrupt import KINDS, STRENGTHS, Contrast, Shift, StrokeWidth, corruption
from minienc.eval.anomaly import (autoencoder_scores, average_ranks, knn_scores, pca_scores,
                                  roc_auc, vae_scores)
from minienc.objectives.reconstruction import build_model


# ----- roc_auc ---------------------------------------------------------------------------------

def test_a_perfect_score_has_auroc_one_and_its_reverse_zero():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert roc_auc(scores, labels) == 1.0
    assert roc_auc(-scores, labels) == 0.0


def test_a_random_score_has_auroc_near_one_half():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.3
    assert abs(roc_auc(rng.standard_normal(20000), labels) - 0.5) < 0.02


def test_ties_count_one_half():
    # a constant score cannot order anything: exactly 0.5
    assert roc_auc(np.ones(6), [0, 1, 0, 1, 1, 0]) == 0.5
    # one anomaly tied with one of two normals, above the other: (1 + 0.5) / 2
    assert roc_auc([1.0, 2.0, 2.0], [0, 0, 1]) == 0.75


def test_auroc_equals_the_pairwise_definition():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 40).astype(float)    # many ties
    labels = rng.random(40) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)


def test_one_empty_class_is_a_clear_error():
    with pytest.raises(ValueError, match="0 anomalous and 3 normal"):
        roc_auc([1.0, 2.0, 3.0], [0, 0, 0])
    with pytest.raises(ValueError, match="2 anomalous and 0 normal"):
        roc_auc([1.0, 2.0], [1, 1])


def test_mismatched_lengths_and_nan_scores_are_errors():
    with pytest.raises(ValueError, match="same length"):
        roc_auc([1.0, 2.0], [0, 1, 1])
    with pytest.raises(ValueError, match="not finite"):
        roc_auc([1.0, float("nan")], [0, 1])


@pytest.mark.parametrize("labels, shown", [([0, 1, 2], "[2]"), ([-1, 0, 1], "[-1]"),
                                           ([0.0, 0.5, 1.0], "[0.5]"), ([0.0, float("nan"), 1.0], "[nan]"),
                                           (["no", "yes", "no"], "no")])
def test_labels_other_than_booleans_or_0_1_are_refused(labels, shown):
    """-1 for "anomalous" (scikit-learn's outlier detectors) or a class index counted as
    anomalous by a cast to bool: the AUROC of the wrong question, with no word."""
    with pytest.raises(ValueError, match=r"^roc_auc: is_anomaly must be booleans or 0/1") as error:
        roc_auc([1.0, 2.0, 3.0], labels)
    assert shown in str(error.value)
    assert roc_auc([1.0, 2.0, 3.0], np.array([0.0, 0.0, 1.0])) == 1.0   # 0/1 floats are labels


def test_scores_that_are_not_numbers_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^roc_auc: scores must be numbers, got dtype <U1"):
        roc_auc(["a", "b"], [0, 1])


def test_average_ranks_share_the_mean_rank_of_a_tie():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


@given(st.lists(st.integers(-400, 400), min_size=4, max_size=40), st.integers(0, 2 ** 32 - 1))
def test_auroc_is_invariant_to_increasing_transforms(values, seed):
    scores = np.array(values) / 4.0   # quarters: distinct values stay distinct after exp
    labels = np.arange(len(scores)) % 2 == 0
    labels = np.random.default_rng(seed).permutation(labels)
    base = roc_auc(scores, labels)
    assert 0.0 <= base <= 1.0
    assert roc_auc(np.exp(scores / 50.0), labels) == pytest.approx(base, abs=1e-12)
    assert roc_auc(3.0 * scores + 7.0, labels) == pytest.approx(base, abs=1e-12)
    # and flipping the score flips the AUROC
    assert roc_auc(-scores, labels) == pytest.approx(1.0 - base, abs=1e-12)


# ----- scores ------------------------------------------------------------------------------------

def _images(n=12, seed=0):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


def test_vae_scores_add_up_and_match_the_vae_loss_with_one_sample():
    minienc.manual_seed(0)
    vae = build_model("vae", (1, 8, 8), latent_dim=4)
    x = _images()
    scores = vae_scores(vae, x, samples=4)
    assert scores["neg_elbo"].shape == (12,)
    np.testing.assert_allclose(scores["neg_elbo"], scores["reconstruction"] + scores["kl"])
    assert (scores["kl"] >= 0).all()
    # the KL per image, averaged, is the VAE's own (batch-averaged) KL term
    eps = minienc.tensor(np.zeros((12, 4), np.float32))
    terms = vae.loss(minienc.tensor(x), eps=eps)
    assert scores["kl"].mean() == pytest.approx(float(terms["kl"].data), rel=1e-4)


def test_autoencoder_scores_are_the_per_image_loss():
    minienc.manual_seed(0)
    model = build_model("autoencoder", (1, 8, 8), latent_dim=4)
    x = _images()
    scores = autoencoder_scores(model, x, batch_size=5)   # batches of 5, 5, 2
    assert scores.mean() == pytest.approx(float(model.loss(minienc.tensor(x))["loss"].data), rel=1e-4)
    assert scores[3] == pytest.approx(float(model.loss(minienc.tensor(x[3:4]))["loss"].data), rel=1e-4)


def test_pca_scores_vanish_inside_the_subspace_and_knn_scores_at_train_points():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((2, 64))
    train = (rng.standard_normal((50, 2)) @ basis).reshape(50, 1, 8, 8)
    inside = (rng.standard_normal((5, 2)) @ basis).reshape(5, 1, 8, 8)
    outside = inside + rng.standard_normal((5, 1, 8, 8))
    assert pca_scores(train, inside, 2).max() < 1e-8
    assert pca_scores(train, outside, 2).min() > 1.0
    assert knn_scores(train, train[:4], k=1).max() < 1e-6
    with pytest.raises(ValueError, match="k must be in"):
        knn_scores(train, inside, k=51)


BASELINE_CASES = {
    "knn k 0": (lambda x: knn_scores(x, x, k=0), r"^knn_scores: k must be a positive integer, got 0"),
    "knn k True": (lambda x: knn_scores(x, x, k=True), r"^knn_scores: k must be a positive integer, got True"),
    "knn k 2.5": (lambda x: knn_scores(x, x, k=2.5), r"^knn_scores: k must be a positive integer, got 2.5"),
    "knn batch 0": (lambda x: knn_scores(x, x, batch_size=0), r"^knn_scores: batch_size"),
    "knn empty test": (lambda x: knn_scores(x, x[:0]), r"^knn_scores: images: no features"),
    "knn empty train": (lambda x: knn_scores(x[:0], x), r"^knn_scores: train_images: no features"),
    "knn NaN train image": (lambda x: knn_scores(np.where(np.arange(12)[:, None, None, None] == 0, np.nan, x), x),
                            r"^knn_scores: train_images: 1 of 12 rows hold NaN or inf \(the first: row 0\)"),
    "knn other image size": (lambda x: knn_scores(x, x[:, :, :4, :4]),
                             r"^knn_scores: images have 16 values each but train_images 64"),
    "pca dim 0": (lambda x: pca_scores(x, x, 0), r"^pca_scores: dim must be a positive integer, got 0"),
    "pca dim -1": (lambda x: pca_scores(x, x, -1), r"^pca_scores: dim must be a positive integer, got -1"),
    "pca dim True": (lambda x: pca_scores(x, x, True), r"^pca_scores: dim must be a positive integer, got True"),
    "pca more directions than images": (lambda x: pca_scores(x[:3], x, 3),
                                        r"^pca_scores: 3 train images span at most 2 principal directions"),
    "pca NaN image": (lambda x: pca_scores(x, np.full_like(x, np.nan), 2), r"^pca_scores: images: 12 of 12 rows hold NaN"),
    "pca empty train": (lambda x: pca_scores(x[:0], x, 2), r"^pca_scores: train_images: no features"),
    "pca other image size": (lambda x: pca_scores(x, x[:, :, :4, :4], 2), r"^pca_scores: images have 16"),
}


@pytest.mark.parametrize("case", list(BASELINE_CASES))
def test_baseline_scores_refuse_what_they_cannot_score_by_name(case):
    """Each used to give a raw NumPy error (reshape, range, matmul, SVD did not converge), or a
    silent answer: a NaN train image left out of every k-NN, k=True as k=1, dim -1 as every
    direction but the last, more PCA directions than the train images span (arbitrary ones)."""
    make, message = BASELINE_CASES[case]
    with pytest.raises(ValueError, match=message):
        make(_images(12))


def test_an_anomalous_class_scores_higher_for_every_baseline():
    """Normal: images of small values; anomalies: bright noise. Every score separates them."""
    rng = np.random.default_rng(0)
    normal = (0.1 * rng.random((60, 1, 8, 8))).astype(np.float32)
    anomalous = rng.random((10, 1, 8, 8)).astype(np.float32)
    test = np.concatenate([normal[40:], anomalous])
    labels = np.r_[np.zeros(20), np.ones(10)]
    assert roc_auc(knn_scores(normal[:40], test), labels) == 1.0
    assert roc_auc(pca_scores(normal[:40], test, 4), labels) == 1.0


# ----- corruptions ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_strength_zero_leaves_the_images_and_others_keep_shape(kind):
    x = _images(6)
    zero = 0 if kind in ("shift", "stroke") else 0.0
    np.testing.assert_array_equal(corruption(kind, zero)(x, rng=0), x)
    for s in STRENGTHS[kind]:
        out = corruption(kind, s)(x, rng=0)
        assert out.shape == x.shape and out.dtype == x.dtype


def test_shift_moves_a_pixel_by_exactly_the_strength():
    x = np.zeros((200, 1, 8, 8), np.float32)
    x[:, 0, 3, 3] = 1.0
    out = Shift(1)(x, rng=0)
    rows, cols = np.nonzero(out[:, 0].reshape(200, 8, 8).sum(axis=0))
    moved = {(int(r) - 3, int(c) - 3) for r, c in zip(rows, cols)}
    assert moved == {(-1, 0), (1, 0), (0, -1), (0, 1)}   # all four directions, nothing else
    assert out.sum() == 200


def test_contrast_keeps_the_mean_and_scales_the_spread():
    x = _images(4)
    out = Contrast(0.5)(x)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 0.5 * x.std(axis=(1, 2, 3)), rtol=1e-4)


def test_stroke_width_dilates_and_erodes_a_plus():
    x = np.zeros((1, 1, 8, 8), np.float32)
    x[0, 0, 3, 3] = 1.0
    thick = StrokeWidth(1)(x)
    assert thick.sum() == 5 and thick[0, 0, 2, 3] == 1 and thick[0, 0, 3, 4] == 1   # a plus
    np.testing.assert_array_equal(StrokeWidth(-1)(thick), x)   # erosion takes the plus back
    # erosion treats the outside as absent, so a full image stays full
    np.testing.assert_array_equal(StrokeWidth(-1)(np.ones((1, 1, 8, 8), np.float32)), 1.0)
    with pytest.raises(ValueError, match="whole number"):
        StrokeWidth(0.5)


@pytest.mark.parametrize("rounds", [float("nan"), float("inf"), None, True])
def test_stroke_width_refuses_what_is_not_a_whole_number_by_name(rounds):
    """NaN, inf and None leaked int()'s errors; True passed as one round."""
    with pytest.raises(ValueError, match=r"^StrokeWidth: rounds must be a whole number"):
        corruption("stroke", rounds)


def test_a_shift_as_large_as_the_image_is_refused():
    """Shifting 8x8 images by 8 or more pixels blanked every image without a word."""
    x = _images(3)
    assert Shift(7)(x, rng=0).shape == x.shape
    with pytest.raises(ValueError, match=r"^Shift: 8 pixels moves every 8x8 image out of view"):
        Shift(8)(x, rng=0)


def test_unknown_corruption_names_the_choices():
    with pytest.raises(ValueError, match="kind must be one of"):
        corruption("blur", 1.0)


def test_corruptions_keep_the_device(device):
    x = backend.to_device(_images(3), device)
    for kind in KINDS:
        out = corruption(kind, STRENGTHS[kind][-1])(x, rng=0)
        assert backend.device_of(out) == device


@pytest.mark.parametrize("call, message", [
    (lambda m, x: autoencoder_scores(m, x, batch_size=0), r"^autoencoder_scores: batch_size must be a positive integer, got 0"),
    (lambda m, x: autoencoder_scores(m, x, batch_size=-1), r"^autoencoder_scores: batch_size must be a positive integer, got -1"),
    (lambda m, x: vae_scores(build_model("vae", (1, 8, 8), latent_dim=2), x, samples=0),
     r"^vae_scores: samples must be a positive integer, got 0"),
    (lambda m, x: vae_scores(build_model("vae", (1, 8, 8), latent_dim=2), x, batch_size=True),
     r"^vae_scores: batch_size must be a positive integer, got True"),
])
def test_model_scores_check_their_batching_by_name(call, message):
    """batch_size 0 was a bare range() error, -1 'need at least one array to concatenate',
    samples 0 a ZeroDivisionError."""
    with pytest.raises(ValueError, match=message):
        call(build_model("autoencoder", (1, 8, 8), latent_dim=2), _images(4))
