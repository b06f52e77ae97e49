"""Triplet losses: gradchecks, the hinge zero exactly when every margin is met, each miner
(batch-all, batch-hard, semi-hard) against a brute-force search, pairwise distances, errors,
and the Triplet objective (views or labels) against the functional losses, gradchecked."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend
from minienc import ops
from minienc.objectives.triplet import (Triplet, batch_triplet_loss, mine_batch_all,
                                        mine_batch_hard, mine_semi_hard, pairwise_distances,
                                        triplet_loss, view_triplet_loss)

from ssl_check import gradcheck_objective, host, on_device, t64, tiny_encoder, two_views, unit


# ----- gradchecks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero", "sum", "none"])
def test_triplet_loss_gradcheck(device, squared, normalize, reduction):
    rng = np.random.default_rng(1)
    a, p, n = (t64(rng.standard_normal((5, 3)), device) for _ in range(3))
    assert minienc.gradcheck(lambda a, p, n: triplet_loss(a, p, n, margin=0.5, squared=squared,
                                                          normalize=normalize, reduction=reduction),
                             a, p, n)


@pytest.mark.parametrize("miner", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("squared,normalize,reduction", [(False, True, "mean"),
                                                         (True, False, "mean_nonzero")])
def test_batch_triplet_loss_gradcheck(device, miner, squared, normalize, reduction):
    rng = np.random.default_rng(2)
    x = t64(rng.standard_normal((8, 3)), device)
    labels = backend.to_device(np.array([0, 0, 1, 1, 1, 2, 2, 3]), device)
    assert minienc.gradcheck(lambda x: batch_triplet_loss(x, labels, miner, margin=0.3,
                                                          squared=squared, normalize=normalize,
                                                          reduction=reduction), x)


def test_view_triplet_loss_gradcheck(device):
    rng = np.random.default_rng(3)
    z1, z2 = t64(rng.standard_normal((4, 3)), device), t64(rng.standard_normal((4, 3)), device)
    assert minienc.gradcheck(lambda a, b: view_triplet_loss(a, b, margin=0.5), z1, z2)



# ----- the hinge and the miners ------------------------------------------------------------------
@given(n=st.integers(1, 6), seed=st.integers(0, 2**16), squared=st.booleans(), normalize=st.booleans())
def test_triplet_loss_is_zero_exactly_when_every_margin_is_met(n, seed, squared, normalize):
    rng = np.random.default_rng(seed)
    a, p, neg = (rng.standard_normal((n, 3)) for _ in range(3))
    f = (lambda v: unit(v)) if normalize else (lambda v: v)
    dist = lambda u, v: ((f(u) - f(v)) ** 2).sum(1) ** (1.0 if squared else 0.5)  # noqa: E731
    gap = (dist(a, neg) - dist(a, p)).min()
    ta, tp, tn = t64(a, "cpu"), t64(p, "cpu"), t64(neg, "cpu")
    met = triplet_loss(ta, tp, tn, margin=gap - 1e-3, squared=squared, normalize=normalize)
    met.backward()
    assert met.item() == 0.0 and not host(ta.grad).any()
    missed = triplet_loss(t64(a, "cpu"), t64(p, "cpu"), t64(neg, "cpu"), margin=gap + 1e-3,
                          squared=squared, normalize=normalize, reduction="none")
    assert host(missed).max() == pytest.approx(1e-3, abs=1e-9)


def test_batch_triplet_loss_zero_for_separated_clusters(device):
    centres = np.eye(3) * 10
    x = np.repeat(centres, 3, axis=0) + 0.01 * np.random.default_rng(9).standard_normal((9, 3))
    labels = backend.to_device(np.repeat(np.arange(3), 3), device)
    for miner in ("batch_all", "batch_hard", "semi_hard"):
        loss = batch_triplet_loss(t64(x, device), labels, miner, margin=0.5, normalize=False)
        assert loss.item() == 0.0


def distance_matrix(draw_values, n):
    d = np.zeros((n, n))
    iu = np.triu_indices(n, 1)
    d[iu] = draw_values
    return d + d.T


@st.composite
def labelled_distances(draw):
    n = draw(st.integers(2, 9))
    labels = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    values = draw(st.lists(st.floats(0.01, 10.0), min_size=n * (n - 1) // 2,
                           max_size=n * (n - 1) // 2))
    return distance_matrix(values, n), labels


def brute_force(d, labels):
    """Every valid triplet, and per anchor / pair what each miner should choose (as distances)."""
    n = len(labels)
    positives = {a: [p for p in range(n) if p != a and labels[p] == labels[a]] for a in range(n)}
    negatives = {a: [k for k in range(n) if labels[k] != labels[a]] for a in range(n)}
    every = {(a, p, k) for a in range(n) for p in positives[a] for k in negatives[a]}
    return positives, negatives, every


@given(labelled_distances())
def test_batch_all_miner_equals_brute_force(case):
    d, labels = case
    _, _, every = brute_force(d, labels)
    t = mine_batch_all(labels)
    a, p, k = np.broadcast_arrays(t.anchor, t.positive, t.negative)
    assert set(zip(a[t.valid], p[t.valid], k[t.valid])) == every


@given(labelled_distances())
def test_batch_hard_miner_equals_brute_force(case):
    d, labels = case
    positives, negatives, _ = brute_force(d, labels)
    t = mine_batch_hard(d, labels)
    for a in range(len(labels)):
        assert t.valid[a] == bool(positives[a] and negatives[a])
        if t.valid[a]:
            assert t.anchor[a] == a
            assert d[a, t.positive[a]] == max(d[a, p] for p in positives[a])
            assert d[a, t.negative[a]] == min(d[a, k] for k in negatives[a])
            assert t.positive[a] in positives[a] and t.negative[a] in negatives[a]


@given(labelled_distances())
def test_semi_hard_miner_equals_brute_force(case):
    d, labels = case
    positives, negatives, _ = brute_force(d, labels)
    t = mine_semi_hard(d, labels)
    anchors, pos = np.broadcast_arrays(t.anchor, t.positive)
    for a in range(len(labels)):
        for p in range(len(labels)):
            assert t.valid[a, p] == (p in positives[a] and bool(negatives[a]))
            if not t.valid[a, p]:
                continue
            assert (anchors[a, p], pos[a, p]) == (a, p)
            chosen = t.negative[a, p]
            beyond = [d[a, k] for k in negatives[a] if d[a, k] > d[a, p]]
            assert chosen in negatives[a]
            assert d[a, chosen] == (min(beyond) if beyond else max(d[a, k] for k in negatives[a]))


def test_semi_hard_negative_at_the_positive_distance_is_not_beyond_it():
    labels = np.array([0, 0, 1, 2, 3])
    d = distance_matrix([1.0, 1.0, 2.0, 0.5,   3, 3, 3,   3, 3,   3], 5)  # anchor 0: p=1 at 1.0
    t = mine_semi_hard(d, labels)
    assert t.negative[0, 1] == 3          # 2 ties with the positive, 4 is closer: 3 (at 2.0)
    d[0, 3] = d[3, 0] = 0.9
    assert mine_semi_hard(d, labels).negative[0, 1] == 2   # none beyond now: the farthest (the tie)


@given(labelled_distances(), st.sampled_from(["batch_all", "batch_hard", "semi_hard"]))
def test_batch_triplet_loss_is_the_mean_hinge_of_the_mined_triplets(case, miner):
    d, labels = case
    # embeddings whose squared distances are d: classical MDS of a valid Euclidean matrix
    x = np.random.default_rng(len(labels)).standard_normal((len(labels), 4))
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    _, _, every = brute_force(d, labels)
    positives, negatives, _ = brute_force(d, labels)
    if miner == "batch_all":
        triplets = every
    elif miner == "batch_hard":
        triplets = {(a, max(positives[a], key=lambda p: d[a, p]), min(negatives[a], key=lambda k: d[a, k]))
                    for a in positives if positives[a] and negatives[a]}
    else:
        triplets = set()
        for a in positives:
            for p in positives[a]:
                if negatives[a]:
                    beyond = [k for k in negatives[a] if d[a, k] > d[a, p]]
                    k = min(beyond, key=lambda k: d[a, k]) if beyond else max(negatives[a], key=lambda k: d[a, k])
                    triplets.add((a, p, k))
    hinges = [max(0.0, d[a, p] - d[a, k] + 1.0) for a, p, k in triplets]
    got = batch_triplet_loss(t64(x, "cpu"), labels, miner, margin=1.0, squared=True, normalize=False)
    want = sum(hinges) / max(len(hinges), 1)
    assert got.item() == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_pairwise_distances_match_numpy_and_have_finite_gradients_on_the_diagonal(device):
    x = np.random.default_rng(10).standard_normal((5, 3))
    tx = t64(x, device)
    d = pairwise_distances(tx, squared=False, normalize=False)
    np.testing.assert_allclose(host(d), np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)), atol=1e-6)
    d.sum().backward()
    assert np.isfinite(host(tx.grad)).all()


def test_triplet_errors_name_the_function_and_shapes():
    x = minienc.randn(4, 3)
    with pytest.raises(ValueError, match=r"batch_triplet_loss.*\(4, 3\).*\(5,\)"):
        batch_triplet_loss(x, np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="miner"):
        batch_triplet_loss(x, np.zeros(4, dtype=np.int64), miner="hardest")
    with pytest.raises(ValueError, match=r"triplet_loss.*\(4, 3\).*\(4, 2\)"):
        triplet_loss(x, x, minienc.randn(4, 2))




@pytest.mark.parametrize("labels", [None, np.array([0, 1, 0, 2, 1])])
def test_triplet_objective_is_the_functional_loss_of_both_views_and_gradchecks(device, labels):
    model = on_device(device, lambda: Triplet(tiny_encoder(), labels=labels is not None,
                                              miner="semi_hard", margin=0.5))
    v1, v2 = two_views(device)
    z = model.encoder(ops.concatenate([v1, v2]))   # one batch: batch norm sees both views
    if labels is None:
        want = view_triplet_loss(z[:5], z[5:], miner="semi_hard", margin=0.5)
    else:
        want = batch_triplet_loss(z, np.concatenate([labels, labels]), miner="semi_hard", margin=0.5)
    extra = () if labels is None else (backend.to_device(labels, device),)
    assert model.loss_of_views(v1, v2, *extra)["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert gradcheck_objective(model, lambda a, b: model.loss_of_views(a, b, *extra), v1, v2,
                               directions=2)


def test_a_batch_of_one_image_is_refused_not_a_loss_of_zero():
    """One image has no negative: the triplet loss was 0 on every step, with and without labels,
    and the encoder never trained (nt_xent already refused it)."""
    views = [minienc.tensor(np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32))
             for _ in range(2)]
    with pytest.raises(ValueError, match=r"^view_triplet_loss: a batch of 1 image has no negatives"):
        view_triplet_loss(*views)
    model = Triplet(minienc.nn.Linear(4, 3), augment=lambda x: x, labels=True)
    with pytest.raises(ValueError, match=r"^Triplet: a batch of 1 image has no negatives"):
        model.loss((views[0], np.array([0])))
