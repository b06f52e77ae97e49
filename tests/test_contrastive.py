"""InfoNCE and NT-Xent: gradchecks, InfoNCE against the explicit cross-entropy and its logit
gradient written out, NT-Xent's symmetries and TensorFlow's normalisation, SimCLR, and short
training runs of SimCLR, MoCo and triplets. Triplets and their miners: tests/test_triplet.py;
MoCo's queue and key encoder: tests/test_moco.py."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from minienc.nn import Flatten, MLPEncoder, Sequential
from minienc.objectives.contrastive import (LARGE_NUM, MoCo, SimCLR, info_nce, info_nce_logits,
                                            nt_xent, projection_head)
from minienc.objectives.triplet import Triplet, triplet_loss
from minienc.optim import SGD

from ssl_check import (assert_loss_of_projected_views, host, layer_names, on_device, t64, two_views,
                       unit)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ----- gradchecks ---------------------------------------------------------------------------------
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
        MoCo(nn.Identity(), nn.Identity(), queue_size=0)


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


# ----- SimCLR and short runs ----------------------------------------------------------------------
def test_simclr_loss_is_nt_xent_of_the_projected_views_and_embed_is_the_representation(device):
    encoder = on_device(device, lambda: Sequential(Flatten(), MLPEncoder(16, (8,), 6)))
    model = on_device(device, lambda: SimCLR(encoder, projection_head(6, 8, 5, batch_norm=False),
                                             temperature=0.3))
    assert_loss_of_projected_views(model, model.head, lambda a, b: nt_xent(a, b, 0.3),
                                   *two_views(device, 4))
    head = projection_head(6, 8, 5)       # SimCLR's: Linear-BN-ReLU, then a Linear without ReLU
    assert layer_names(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


@pytest.mark.parametrize("method", ["simclr", "moco", "triplet"])
def test_short_runs_on_digits_lower_the_loss(method):
    from minienc.data import BatchIterator, contrastive_augment, load_digits
    x = load_digits().x_train[:512]
    encoder = Sequential(Flatten(), MLPEncoder(64, (64,), 16, batch_norm=True))
    augment = contrastive_augment()
    if method == "simclr":
        model = SimCLR(encoder, projection_head(16, 64, 16), augment, temperature=0.5)
    elif method == "moco":
        model = MoCo(encoder, projection_head(16, 64, 16, batch_norm=False), augment,
                     queue_size=256, bn_groups=2)
    else:
        model = Triplet(encoder, augment, margin=0.5)
    params = [p for g in model.param_groups() for p in g["params"]]
    start = copy.deepcopy([p.numpy() for p in params])
    opt = SGD(model.param_groups(), lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(8):
        for step, batch in enumerate(BatchIterator(x, batch_size=128, drop_last=True, seed=epoch)):
            loss = model.loss(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.after_step((4 * epoch + step) / 32)
            losses.append(loss.item())
    # MoCo starts from a random queue (easy negatives): compare from the first step whose
    # queue holds only real keys (K = 256 is two batches)
    first = 2 if method == "moco" else 0
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[first:first + 4])
    assert any(not np.array_equal(s, p.numpy()) for s, p in zip(start, params))
