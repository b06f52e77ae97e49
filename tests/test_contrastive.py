"""Contrastive objectives: gradchecks of every loss, InfoNCE against the explicit cross-entropy
and its logit gradient written out, NT-Xent's symmetries and TensorFlow's normalisation, triplet
hinges, each miner against a brute-force search, MoCo's queue, momentum update and frozen key
encoder, and short training runs."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from minienc.nn import BatchNorm1d, Flatten, Linear, MLPEncoder, ReLU, Sequential
from minienc.objectives.contrastive import (LARGE_NUM, MoCo, SimCLR, _in_groups,
                                            batch_triplet_loss, info_nce, info_nce_logits,
                                            mine_batch_all, mine_batch_hard, mine_semi_hard,
                                            nt_xent, pairwise_distances, projection_head,
                                            triplet_loss, view_triplet_loss)
from minienc.optim import SGD


def t64(array, device, grad=True):
    return minienc.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad,
                          dtype="float64", device=device)


def host(x):
    return backend.to_host(x.data if hasattr(x, "data") else x)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


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


@pytest.mark.parametrize("negatives", ["shared", "per_query", "in_batch"])
def test_info_nce_gradcheck(device, negatives):
    rng = np.random.default_rng(4)
    q, k = t64(rng.standard_normal((4, 3)), device), t64(rng.standard_normal((4, 3)), device)
    shape = {"shared": (6, 3), "per_query": (4, 5, 3)}.get(negatives)
    neg = t64(rng.standard_normal(shape), device) if shape else None
    inputs = (q, k) + ((neg,) if neg is not None else ())
    assert minienc.gradcheck(lambda q, k, *n: info_nce(q, k, n[0] if n else None, 0.3), *inputs)


def test_nt_xent_gradcheck(device):
    rng = np.random.default_rng(5)
    z1, z2 = t64(rng.standard_normal((4, 3)), device), t64(rng.standard_normal((4, 3)), device)
    assert minienc.gradcheck(lambda a, b: nt_xent(a, b, 0.5), z1, z2)


# ----- InfoNCE ------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_info_nce_logit_gradient_is_softmax_minus_onehot_over_rows(device, temperature):
    # with D = 1, unit queries and no normalisation, each logit IS a key entry divided by tau,
    # so the keys' gradients are dL/dlogits / tau, laid out like the logits
    rng = np.random.default_rng(6)
    n, m = 5, 4
    positive = t64(rng.standard_normal((n, 1)), device)
    negative = t64(rng.standard_normal((n, m, 1)), device)
    loss = info_nce(t64(np.ones((n, 1)), device, grad=False), positive, negative, temperature,
                    normalize=False)
    loss.backward()
    logits = np.concatenate([host(positive), host(negative)[..., 0]], axis=1) / temperature
    softmax = np.exp(log_softmax(logits))
    onehot = np.zeros_like(softmax)
    onehot[:, 0] = 1.0
    want = (softmax - onehot) / n
    got = np.concatenate([host(positive.grad), host(negative.grad)[..., 0]], axis=1) * temperature
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@given(n=st.integers(1, 6), m=st.integers(1, 7), dim=st.integers(1, 5),
       temperature=st.floats(0.05, 2.0), seed=st.integers(0, 2**16))
def test_info_nce_equals_cross_entropy_over_cosine_logits(n, m, dim, temperature, seed):
    rng = np.random.default_rng(seed)
    q, k, neg = rng.standard_normal((n, dim)), rng.standard_normal((n, dim)), rng.standard_normal((m, dim))
    got = info_nce(t64(q, "cpu"), t64(k, "cpu"), t64(neg, "cpu"), temperature).item()
    q, k, neg = unit(q), unit(k), unit(neg)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ neg.T], axis=1) / temperature
    want = -log_softmax(logits)[:, 0].mean()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_info_nce_in_batch_negatives_and_mask(device):
    rng = np.random.default_rng(7)
    q, k = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    got = info_nce(t64(q, device), t64(k, device), None, 0.5).item()
    logits = unit(q) @ unit(k).T / 0.5    # positives on the diagonal, the other keys negatives
    want = -np.diag(log_softmax(logits)).mean()
    assert got == pytest.approx(want, rel=1e-9)
    mask = np.zeros((4, 6), dtype=bool)
    mask[:, 2] = True
    logits = info_nce_logits(t64(q, device), t64(k, device), t64(rng.standard_normal((6, 3)), device),
                             negative_mask=backend.to_device(mask, device))
    assert (host(logits)[:, 3] == -LARGE_NUM).all() and (host(logits)[:, 0] > -LARGE_NUM).all()


def test_info_nce_errors_name_the_function_and_shapes():
    q = minienc.randn(4, 3)
    with pytest.raises(ValueError, match=r"info_nce.*\(4, 3\).*\(5, 3\)"):
        info_nce(q, minienc.randn(5, 3))
    with pytest.raises(ValueError, match=r"info_nce.*\(7, 2\)"):
        info_nce(q, q, minienc.randn(7, 2))
    with pytest.raises(ValueError, match="nt_xent"):
        nt_xent(q, minienc.randn(4, 2))


# ----- NT-Xent ------------------------------------------------------------------------------------
def nt_xent_paper(z1, z2, tau):
    """-log exp(s(i, pair)/tau) / sum_{k != i} exp(s(i, k)/tau), averaged over the 2N views."""
    z = unit(np.concatenate([z1, z2]))
    n2 = len(z)
    sim = z @ z.T / tau
    total = 0.0
    for i in range(n2):
        others = [k for k in range(n2) if k != i]
        pair = (i + n2 // 2) % n2
        total += -(sim[i, pair] - np.log(np.exp(sim[i, others]).sum()))
    return total / n2


def nt_xent_tensorflow(z1, z2, tau):
    """SimCLR's TF code: loss_a + loss_b, each the mean over one view's N queries."""
    h1, h2 = unit(z1), unit(z2)
    n = len(h1)
    mask = np.eye(n) * 1e9
    aa, bb, ab, ba = h1 @ h1.T / tau - mask, h2 @ h2.T / tau - mask, h1 @ h2.T / tau, h2 @ h1.T / tau
    loss_a = -np.diag(log_softmax(np.concatenate([ab, aa], 1))[:, :n]).mean()
    loss_b = -np.diag(log_softmax(np.concatenate([ba, bb], 1))[:, :n]).mean()
    return loss_a + loss_b


@given(n=st.integers(2, 6), dim=st.integers(2, 5), temperature=st.floats(0.1, 1.0),
       seed=st.integers(0, 2**16))
def test_nt_xent_is_the_paper_mean_and_half_the_tensorflow_sum(n, dim, temperature, seed):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((n, dim)), rng.standard_normal((n, dim))
    got = nt_xent(t64(z1, "cpu"), t64(z2, "cpu"), temperature).item()
    assert got == pytest.approx(nt_xent_paper(z1, z2, temperature), rel=1e-9)
    assert got == pytest.approx(nt_xent_tensorflow(z1, z2, temperature) / 2, rel=1e-9)


def test_contrastive_losses_refuse_degenerate_batches_and_temperatures():
    one = t64(np.ones((1, 3)), "cpu")
    with pytest.raises(ValueError, match=r"nt_xent: a batch of 1 image has no negatives"):
        nt_xent(one, one)        # the paper's formula is 0 here: nothing would be learned
    with pytest.raises(ValueError, match=r"info_nce: in-batch negatives need at least 2 queries"):
        info_nce(one, one)
    two = t64(np.eye(2, 3), "cpu")
    with pytest.raises(ValueError, match=r"info_nce: temperature must be a finite number > 0, got 0"):
        nt_xent(two, two, temperature=0)
    with pytest.raises(ValueError, match=r"triplet loss: margin must be a finite number, got nan"):
        triplet_loss(two, two, two, margin=float("nan"))
    with pytest.raises(ValueError, match=r"SimCLR: temperature must be a finite number > 0"):
        SimCLR(nn.Identity(), nn.Identity(), temperature=0.0)
    with pytest.raises(ValueError, match=r"MoCo: queue_size must be a positive integer, got 0"):
        small_moco("cpu", queue_size=0)


@given(n=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_nt_xent_invariant_to_pair_order_and_symmetric_in_views(n, seed):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
    perm = rng.permutation(n)
    base = nt_xent(t64(z1, "cpu"), t64(z2, "cpu"), 0.3).item()
    assert nt_xent(t64(z1[perm], "cpu"), t64(z2[perm], "cpu"), 0.3).item() == pytest.approx(base, rel=1e-12)
    assert nt_xent(t64(z2, "cpu"), t64(z1, "cpu"), 0.3).item() == pytest.approx(base, rel=1e-12)
    # permuting one view alone breaks the pairs: a different loss
    if not np.array_equal(perm, np.arange(n)):
        assert nt_xent(t64(z1[perm], "cpu"), t64(z2, "cpu"), 0.3).item() != pytest.approx(base, rel=1e-9)


def test_nt_xent_backward_is_finite_for_identical_views_in_float32(device):
    z = minienc.tensor(np.random.default_rng(8).standard_normal((6, 4)), requires_grad=True, device=device)
    loss = nt_xent(z, z, 0.05)      # positives equal to their queries; the self logits are masked
    loss.backward()
    assert z.grad.dtype == np.float32 and np.isfinite(host(z.grad)).all()
    assert loss.dtype == np.float32 and np.isfinite(loss.item())


# ----- triplet loss and miners --------------------------------------------------------------------
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


# ----- MoCo ---------------------------------------------------------------------------------------
def small_moco(device, queue_size=8, bn_groups=1, batch_norm=False):
    minienc.set_device(device)
    try:
        encoder = Sequential(Flatten(), MLPEncoder(16, (8,), 6, batch_norm=batch_norm))
        head = projection_head(6, 8, 5, batch_norm=False)
        return MoCo(encoder, head, queue_size=queue_size, momentum=0.9, bn_groups=bn_groups, seed=0)
    finally:
        minienc.set_device("cpu")


def images(n, device, seed=0):
    return minienc.tensor(np.random.default_rng(seed).random((n, 1, 4, 4)), device=device)


def test_moco_queue_is_fifo_with_fixed_size_and_the_keys_as_content(device):
    moco = small_moco(device, queue_size=8)
    start = host(moco.queue).copy()
    np.testing.assert_allclose(np.linalg.norm(start, axis=1), 1.0, rtol=1e-6)
    keys = [np.full((n, 5), float(i)).astype(np.float32) for i, n in ((1, 4), (2, 4), (3, 3))]
    moco.enqueue(backend.to_device(keys[0], device))   # the newest last
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([start[4:], keys[0]]))
    moco.enqueue(backend.to_device(keys[1], device))
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([keys[0], keys[1]]))
    moco.enqueue(backend.to_device(keys[2], device))   # the oldest (keys[0]) goes first
    np.testing.assert_array_equal(host(moco.queue), np.concatenate([keys[0][3:], keys[1], keys[2]]))
    assert moco.queue.shape == (8, 5)
    with pytest.raises(ValueError, match=r"MoCo.enqueue: 9 keys for a queue of 8"):
        moco.enqueue(backend.to_device(np.zeros((9, 5), np.float32), device))
    with pytest.raises(ValueError, match=r"keys of shape \(2, 4\) for a queue of shape \(8, 5\)"):
        moco.enqueue(backend.to_device(np.zeros((2, 4), np.float32), device))


def test_moco_loss_uses_the_old_queue_then_enqueues_the_normalised_keys(device):
    moco = small_moco(device, queue_size=8)
    x_q, x_k = images(4, device, 1), images(4, device, 2)
    old = host(moco.queue).copy()
    q = host(moco.query_encoder(x_q))
    k = unit(host(moco.key_encoder(x_k)))
    loss = moco.loss(x_q, x_k)
    want = info_nce(t64(q, "cpu"), t64(k, "cpu"), t64(old, "cpu"), 0.2).item()
    assert loss.item() == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(host(moco.queue)[4:], k, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(host(moco.queue)[:4], old[4:])
    loss.backward()   # enqueueing did not disturb the negatives the graph saved
    assert moco.encoder.parameters()[0].grad is not None


def test_momentum_one_keeps_the_key_encoder_and_zero_copies_the_query_encoder(device):
    moco = small_moco(device)
    for p in moco.query_encoder.parameters():
        p.data += 1.0   # query and key encoders now differ
    before = [host(p).copy() for p in moco.key_encoder.parameters()]
    moco.update_key_encoder(1.0)
    for b, p in zip(before, moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(p), b)
    moco.update_key_encoder(0.9)
    for b, p, q in zip(before, moco.key_encoder.parameters(), moco.query_encoder.parameters()):
        np.testing.assert_allclose(host(p), 0.9 * b + 0.1 * host(q), rtol=1e-6, atol=1e-6)
    moco.update_key_encoder(0.0)
    for p, q in zip(moco.key_encoder.parameters(), moco.query_encoder.parameters()):
        np.testing.assert_array_equal(host(p), host(q))


def test_key_encoder_never_receives_gradients_nor_moves_under_the_optimizer(device):
    moco = small_moco(device, bn_groups=2, batch_norm=True)
    key_ids = {id(p) for p in moco.key_encoder.parameters()}
    assert not key_ids & {id(p) for p in moco.query_encoder.parameters()}
    assert key_ids <= {id(p) for p in moco.parameters()}   # a child: saved, moved and cast with MoCo
    assert all(not p.requires_grad for p in moco.key_encoder.parameters())
    opt = SGD(moco.parameters(), lr=0.5, weight_decay=0.1)
    before = [host(p).copy() for p in moco.key_encoder.parameters()]
    for step in range(2):
        opt.zero_grad()
        moco.loss(images(4, device, step), images(4, device, step + 10)).backward()
        assert all(p.grad is None for p in moco.key_encoder.parameters())
        opt.step()
    for b, p in zip(before, moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(p), b)   # only update_key_encoder moves it


def test_moco_to_moves_the_key_encoder_and_the_queue_too(device):
    moco = small_moco("cpu").to(device)
    assert moco.queue.__class__ is minienc.tensor([1.0], device=device).data.__class__
    assert {p.device for p in moco.key_encoder.parameters()} == {device}
    assert {p.device for p in moco.parameters()} == {device}


def test_moco_astype_casts_the_key_encoder_and_the_queue_too(device):
    moco = small_moco(device, batch_norm=True).astype("float64")
    assert moco.queue.dtype == np.float64
    assert {p.dtype for p in moco.key_encoder.parameters()} == {np.dtype("float64")}
    assert {a.dtype for _, a in moco.key_encoder.named_buffers()} == {np.dtype("float64")}
    loss = moco.loss(images(4, device).astype("float64"), images(4, device, 1).astype("float64"))
    assert loss.dtype == np.float64


def test_moco_state_dict_holds_the_key_encoder_and_the_queue(device):
    moco = small_moco(device)
    moco.update_key_encoder(0.0)
    moco.enqueue(backend.to_device(np.ones((4, 5), np.float32), device))
    state = moco.state_dict()
    assert {k.split(".")[0] for k in state} == {"query_encoder", "key_encoder", "queue"}
    other = small_moco(device)
    for p in other.query_encoder.parameters():
        p.data = p.data + 1.0
    other.load_state_dict(state)
    for a, b in zip(other.key_encoder.parameters(), moco.key_encoder.parameters()):
        np.testing.assert_array_equal(host(a), host(b))
    np.testing.assert_array_equal(host(other.queue), host(moco.queue))


def test_grouped_forward_is_per_sub_batch_and_returns_the_original_order(device):
    minienc.set_device(device)
    try:
        net = Sequential(Linear(3, 4), BatchNorm1d(4), ReLU())
    finally:
        minienc.set_device("cpu")
    x = minienc.tensor(np.random.default_rng(11).standard_normal((8, 3)), device=device)
    order = backend.to_device(np.array([3, 6, 0, 5, 1, 7, 2, 4]), device)
    got = host(_in_groups(net, x, 2, order))
    first, second = host(net(x[order[:4]])), host(net(x[order[4:]]))   # each group on its own
    want = np.empty_like(got)
    want[host(order)[:4]], want[host(order)[4:]] = first, second
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, host(net(x)), atol=1e-3)   # not the whole-batch statistics
    with pytest.raises(ValueError, match="3 batch-norm groups"):
        _in_groups(net, x, 3)


# ----- SimCLR and short runs ----------------------------------------------------------------------
def test_simclr_loss_is_nt_xent_of_the_projected_views_and_forward_is_the_representation(device):
    minienc.set_device(device)
    try:
        encoder = Sequential(Flatten(), MLPEncoder(16, (8,), 6))
        model = SimCLR(encoder, projection_head(6, 8, 5, batch_norm=False), temperature=0.3)
    finally:
        minienc.set_device("cpu")
    v1, v2 = images(4, device, 1), images(4, device, 2)
    z1, z2 = model.head(encoder(v1)), model.head(encoder(v2))
    assert model.loss(v1, v2).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-5)
    np.testing.assert_array_equal(host(model(v1)), host(encoder(v1)))
    head = projection_head(6, 8, 5)       # SimCLR's: Linear-BN-ReLU, then a Linear without ReLU
    assert [type(m).__name__ for m in head.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


@pytest.mark.parametrize("method", ["simclr", "moco", "triplet"])
def test_short_runs_on_digits_lower_the_loss(method):
    from minienc.data import BatchIterator, contrastive_augment, load_digits
    x = load_digits().x_train[:512]
    encoder = Sequential(Flatten(), MLPEncoder(64, (64,), 16, batch_norm=True))
    augment = contrastive_augment()
    if method == "simclr":
        model = SimCLR(encoder, projection_head(16, 64, 16), temperature=0.5)
        params, loss_fn = model.parameters(), model.loss
    elif method == "moco":
        model = MoCo(encoder, projection_head(16, 64, 16, batch_norm=False), queue_size=256, bn_groups=2)
        params, loss_fn = model.parameters(), model.loss
    else:
        params = encoder.parameters()
        loss_fn = lambda a, b: view_triplet_loss(encoder(a), encoder(b), margin=0.5)  # noqa: E731
    start = copy.deepcopy([p.numpy() for p in params])
    opt = SGD(params, lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(8):
        for batch in BatchIterator(x, batch_size=128, drop_last=True, seed=epoch):
            opt.zero_grad()
            loss = loss_fn(augment(batch), augment(batch))
            loss.backward()
            opt.step()
            if method == "moco":
                model.update_key_encoder()
            losses.append(loss.item())
    # MoCo starts from a random queue (easy negatives): compare from the first step whose
    # queue holds only real keys (K = 256 is two batches)
    first = 2 if method == "moco" else 0
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[first:first + 4])
    assert any(not np.array_equal(s, p.numpy()) for s, p in zip(start, params))
