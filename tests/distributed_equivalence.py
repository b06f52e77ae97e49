"""The two-process equivalence checks (run by tests/distributed_checks.py, which collects them):
W ranks with a global batch of B (B / W each) against this same process computing alone
(distributed.alone()) with the whole batch of B, in float64, after every one of STEPS optimizer
steps, for every objective and SyncBatchNorm; MoCo's queue and its batch shuffled across ranks;
and the gradient check across ranks of all_gather, NT-Xent and sync_batch_norm."""
import numpy as np

import minienc
from minienc import backend, distributed, nn
from minienc.engine import no_grad
from minienc.objectives import MAE, MultiBlockMaskSampler, random_masking
from minienc.objectives.jepa_study import StudyJEPA
from minienc.objectives.barlow import BarlowTwins, barlow_projector
from minienc.objectives.dino import DINO, dino_head
from minienc.objectives.lejepa import LeJEPA
from minienc.objectives.vicreg import VICReg, vicreg_expander
from minienc.objectives.contrastive import MoCo, SimCLR, _in_groups, nt_xent, projection_head
from minienc.optim import LARS, SGD, AdamW

from mpi_check import (F64, STEPS, TOLERANCE, both_runs, check, compare_runs, gradcheck_across_ranks,
                       inputs_on_each_rank, loader, rank, same_on_every_rank, same_runs, world)


# ----- equivalence: W ranks with B/W each == one process with B -----------------------------------

@check
def simclr_global_gather_and_sync_bn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    noise = [0.3 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(2)]

    def build():
        encoder = nn.MLPEncoder(10, (12,), 8, batch_norm=True)
        model = SimCLR(encoder, projection_head(8, 8, 4), temperature=0.5, distributed=True)
        return {"simclr": nn.SyncBatchNorm.convert(model)}

    def step(models, batch):
        images, n1, n2 = (t.astype(F64) for t in batch)
        return models["simclr"].loss_of_views(images + n1, images + n2)["loss"]

    return compare_runs("SimCLR", build, lambda sharded: loader((x, *noise), 8, sharded),
                        lambda m: LARS(m["simclr"].parameters(), lr=0.5, weight_decay=1e-4), step)


def _two_view_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    return (x, *(0.3 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(2)))


def _two_views(batch):
    images, n1, n2 = (t.astype(F64) for t in batch)
    return images + n1, images + n2


def _joint_embedding(name, make_model, seed):
    """A two-view objective with SyncBatchNorm and its batch statistics over every process."""
    arrays = _two_view_data(seed)

    def build():
        return {"model": nn.SyncBatchNorm.convert(make_model())}

    return compare_runs(name, build, lambda sharded: loader(arrays, 8, sharded),
                        lambda m: SGD(m["model"].parameters(), lr=0.05, momentum=0.9),
                        lambda models, batch: models["model"].loss_of_views(*_two_views(batch))["loss"])


@check
def vicreg():
    return _joint_embedding("VICReg", lambda: VICReg(
        nn.MLPEncoder(10, (12,), 8, batch_norm=True), vicreg_expander(8, 8, 8), distributed=True), 6)


@check
def barlow_twins():
    return _joint_embedding("Barlow Twins", lambda: BarlowTwins(
        nn.MLPEncoder(10, (12,), 8, batch_norm=True), barlow_projector(8, 8, 8), distributed=True), 7)


@check
def lejepa():
    """SIGReg's directions are drawn on rank 0 and broadcast: the same as one process draws."""
    arrays = _two_view_data(8)

    def build():
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(10, 8))
        model = LeJEPA(encoder, proj_dim=4, hidden=8, lam=0.3, num_directions=16, embed_dim=8,
                       distributed=True)
        return {"model": nn.SyncBatchNorm.convert(model)}

    def step(models, batch):
        views = [v.reshape(v.shape[0], 1, 2, 5) for v in _two_views(batch)]
        return models["model"].loss_of_views(views)["loss"]

    return compare_runs("LeJEPA", build, lambda sharded: loader(arrays, 8, sharded),
                        lambda m: SGD(m["model"].parameters(), lr=0.05, momentum=0.9), step)


def _state_slice(model, key):
    """Where state_dict()[key] lies in weights(model)'s vector."""
    start = 0
    for name, value in model.state_dict().items():
        if name == key:
            return slice(start, start + np.size(value))
        start += np.size(value)
    raise KeyError(key)


@check
def dino():
    """The teacher's centre moves by the global batch's mean (all-reduced), student and teacher
    normalise over the global batch (SyncBatchNorm in encoder and heads): same weights, same
    centre. Left at distributed=False, the centre is each rank's own mean: the check must fail."""
    arrays = _two_view_data(9) + (0.3 * np.random.default_rng(10).standard_normal((32, 10)),)

    def build(distributed_centre):
        def make():
            encoder = nn.MLPEncoder(10, (12,), 8, batch_norm=True)
            model = DINO(encoder, dino_head(8, 16, 12, 4, batch_norm=True), momentum=0.9,
                         distributed=distributed_centre)
            return {"dino": nn.SyncBatchNorm.convert(model)}
        return make

    def step(models, batch):
        images, *noise = (t.astype(F64) for t in batch)
        crops = [images + n for n in noise]   # 2 global crops, 1 local (of the same size: an MLP)
        return models["dino"].loss_of_views(*crops)["loss"]   # teacher temperature 0.04

    def optimizer(models):
        return SGD(models["dino"].param_groups(), lr=0.02, momentum=0.9)   # gently: the head's Linears before batch norm
        # (init std 0.02, gradients ~ 1 / |w|) still grow ~200x in 5 steps; at lr 0.3 the running
        # variances reach 1e6 and rounding alone, amplified, passes 1e-10

    def ema(models):
        return lambda trainer: models["dino"].after_step(0.0)   # momentum 0.9 at progress 0

    def centre_gaps(runs):
        reference, _, sharded, _ = runs
        return [float(np.abs(a[centre] - b[centre]).max()) for a, b in zip(sharded, reference)]

    def data(sharded):
        return loader(arrays, 8, sharded)

    with distributed.alone():
        centre = _state_slice(build(True)()["dino"], "center")
    runs = both_runs(build(True), data, optimizer, step, callbacks=[ema])
    detail, gaps = same_runs("DINO", runs), centre_gaps(runs)
    assert max(gaps) < TOLERANCE, f"DINO: the centres differ after steps: {gaps}"
    local = both_runs(build(False), data, optimizer, step, callbacks=[ema])
    local_gaps = centre_gaps(local)
    local_weights = max(float(np.abs(a - b).max()) for a, b in zip(local[2], local[0]))
    assert min(local_gaps) > 1e-6 and local_weights > 1e-6, (
        f"DINO without distributed=True matched one process (centre {local_gaps}, weights "
        f"{local_weights:.3g}): the check cannot see the centre's all-reduce")
    return (f"{detail}; centre gap per step {['%.1e' % g for g in gaps]} (distributed=False: "
            f"{min(local_gaps):.1e} to {max(local_gaps):.1e}, weights {local_weights:.1e})")


@check
def mae():
    rng = np.random.default_rng(1)
    images = rng.random((16, 1, 4, 4)).astype(np.float32)
    ids_keep, ids_restore, mask = random_masking(16, 4, 0.5, "cpu", rng=np.random.default_rng(2))

    def build():
        return {"mae": MAE(image_size=4, patch_size=2, dim=8, depth=1, num_heads=2, decoder_dim=8,
                           decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5, norm_pix_loss=True)}

    def step(models, batch):
        x, keep, restore, m = batch
        loss, _, _ = models["mae"].masked_prediction(x.astype(F64), (keep.data, restore.data,
                                                                     m.data.astype(F64)))
        return loss

    # eps 1e-6, not 1e-8: the attention's key bias has an exactly zero gradient (softmax ignores a
    # shift shared by every key), so Adam's step there is rounding noise / eps, which differs
    # between one and two processes (1e-11 per step with eps 1e-8; a hundredth of it here)
    return compare_runs("MAE", build,
                        lambda sharded: loader((images, ids_keep, ids_restore, mask), 4, sharded),
                        lambda m: AdamW(m["mae"].parameters(), lr=1e-2, eps=1e-6), step)


def _ijepa(name, **options):
    rng = np.random.default_rng(3)
    sampler = MultiBlockMaskSampler(2, num_targets=2, target_scale=(0.25, 0.25),
                                    context_scale=(1.0, 1.0), min_context=1, cut="random")
    batches = []  # one global batch of 4 per step, its masks drawn for the whole batch
    for _ in range(STEPS):
        context, targets = sampler(4, rng)
        batches.append((rng.random((4, 1, 4, 4)).astype(np.float32), context, targets))

    def build():
        vit = nn.VisionTransformer(image_size=4, patch_size=2, dim=8, depth=1, num_heads=2)
        jepa = StudyJEPA(vit, predictor_dim=8, predictor_depth=1, **options)   # I-JEPA and the study's guards
        return {"jepa": nn.SyncBatchNorm.convert(jepa)}   # (SIGReg's projector has batch norm)

    def data(sharded):
        if not sharded:
            return batches
        share = slice(rank() * 4 // world(), (rank() + 1) * 4 // world())
        return [tuple(part[share] for part in batch) for batch in batches]

    def step(models, batch):
        images, context, targets = batch
        return models["jepa"].terms(minienc.tensor(images, dtype=F64), context, targets)["loss"]

    def ema(models):
        return lambda trainer: models["jepa"].update_target(0.9)

    return compare_runs(name, build, data,
                        lambda m: AdamW(m["jepa"].param_groups(0.01), lr=1e-2), step,
                        callbacks=[ema])


@check
def ijepa():
    return _ijepa("I-JEPA")


@check
def ijepa_with_batch_statistics():
    """The VICReg terms on the pooled embeddings and the batch-standardised targets, computed
    on the gathered global batch."""
    return _ijepa("I-JEPA + variance terms + layer+batch targets", variance_weight=0.5,
                  covariance_weight=0.5, target_norm="layer+batch", distributed=True)


@check
def ijepa_with_sigreg():
    """SIGReg on the gathered pooled context embeddings, along rank 0's directions."""
    return _ijepa("I-JEPA + SIGReg", sigreg_weight=0.5, num_directions=8, distributed=True)


@check
def ijepa_with_sigreg_in_projection():
    """Predictions and targets through SIGReg's BatchNorm projector (synced), SIGReg gathered."""
    return _ijepa("I-JEPA + SIGReg in the projection", sigreg_weight=0.5, sigreg_on="projection",
                  sigreg_proj_dim=4, sigreg_hidden=8, num_directions=8, distributed=True)


@check
def ijepa_views_with_lejepa():
    """The jepa demo's default: a shared encoder, the predictor's targets behind a stop-gradient,
    and LeJEPA's loss between the two pooled, projected views (SIGReg on the gathered batch)."""
    return _ijepa("I-JEPA views + LeJEPA", target_encoder="shared", stop_gradient=True,
                  sigreg_weight=0.5, sigreg_on="views", sigreg_proj_dim=4, sigreg_hidden=8,
                  target_sees="targets", num_directions=8, distributed=True)


@check
def mlp_with_sync_batch_norm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 5)).astype(np.float32)
    y = (x @ rng.standard_normal((5, 2)) + 1.0).astype(np.float32)

    def build():
        mlp = nn.Sequential(nn.Linear(5, 7), nn.SyncBatchNorm(7), nn.ReLU(), nn.Linear(7, 2))
        return {"mlp": mlp}

    def step(models, batch):
        inputs, targets = (t.astype(F64) for t in batch)
        return ((models["mlp"](inputs) - targets) ** 2).mean()

    detail = compare_runs("SyncBatchNorm MLP", build, lambda sharded: loader((x, y), 6, sharded),
                          lambda m: SGD(m["mlp"].parameters(), lr=0.1, momentum=0.9), step)
    return detail + " (running statistics included)"


# ----- MoCo: the global batch's keys in rank order, the batch shuffled across ranks ---------------

@check
def moco_queue_and_shuffled_bn():
    n, total = 4, 4 * world()
    everyone = np.random.default_rng(5).standard_normal((2, total, 6))
    mine = slice(rank() * n, (rank() + 1) * n)
    view_q, view_k = (minienc.tensor(v[mine], dtype=F64) for v in everyone)
    minienc.manual_seed(11)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
    moco = MoCo(encoder, projection_head(8, 8, 4, batch_norm=False), queue_size=3 * total,
                bn_groups=1, seed=0, distributed=True)
    moco.astype(F64)
    moco.key_encoder.astype(F64)
    distributed.broadcast_parameters(moco, moco.key_encoder)
    before = moco.queue.copy()
    rng_before = backend.rng("cpu").bit_generator.state  # rank 0 draws the permutation from it
    moco.loss_of_views(view_q, view_k)

    # the permutation rank 0 drew, replayed; every rank has the same (it was broadcast)
    replay = np.random.Generator(np.random.PCG64())
    replay.bit_generator.state = distributed.engine().bcast_object(rng_before)
    order = np.argsort(replay.random(total))
    assert set(order[:n]) != set(range(n)), "the permutation kept rank 0's images on rank 0"
    # one process, the whole batch, one batch-norm group per rank in the same shuffled order
    groups = world()  # (inside alone() the world is of one)
    with distributed.alone(), no_grad():
        all_keys = minienc.tensor(everyone[1], dtype=F64)
        expected = minienc.normalize(_in_groups(moco.key_encoder, all_keys, groups, order)).data
    queue = moco.queue   # FIFO, the newest keys last
    gap = float(np.abs(queue[-total:] - expected).max())
    assert gap < 1e-12, f"MoCo: the enqueued keys differ from the global batch's by {gap:.3g}"
    assert np.array_equal(queue[:-total], before[total:]), "MoCo: the older keys did not move up"
    same_on_every_rank(queue, "MoCo queue")
    # BN over a share is not BN over the whole batch: the shuffle across ranks is what matched
    with distributed.alone(), no_grad():
        unshuffled = minienc.normalize(moco.key_encoder(all_keys)).data
    assert np.abs(unshuffled - expected).max() > 1e-6, "the check cannot tell the groups apart"
    return f"keys of {total} samples enqueued in rank order, gap {gap:.1e}; order {order.tolist()}"


# ----- gradients across ranks ----------------------------------------------------------------------

@check
def all_gather_gradcheck():
    # each rank's output reads every rank's rows, through a rank-specific map
    mixing = minienc.tensor(np.random.default_rng(60 + rank()).standard_normal((3, 2)), dtype=F64)
    x, = inputs_on_each_rank((2, 3), seed=0)
    gathered = distributed.all_gather(x)
    assert gathered.shape == (2 * world(), 3)
    everyone = distributed.engine().allgather_object(x.data)
    assert np.array_equal(gathered.data, np.concatenate(everyone)), "all_gather: not in rank order"
    worst = gradcheck_across_ranks(lambda t: minienc.tanh(distributed.all_gather(t) @ mixing), [x])
    a, b = inputs_on_each_rank((3, 4), (3, 4), seed=10)
    worst_ntxent = gradcheck_across_ranks(lambda u, v: nt_xent(u, v, 0.5, distributed=True), [a, b])
    return f"worst error {worst:.1e} (tanh of the gathered rows), {worst_ntxent:.1e} (NT-Xent)"


@check
def sync_batch_norm_gradcheck():
    x, weight, bias = inputs_on_each_rank((3, 2), (2,), (2,), seed=20)
    worst = gradcheck_across_ranks(lambda t, w, b: distributed.sync_batch_norm(t, w, b), [x, weight, bias])
    images, = inputs_on_each_rank((2, 2, 2, 2), seed=30)  # (N, C, H, W): statistics over N, H and W
    worst_2d = gradcheck_across_ranks(lambda t: distributed.sync_batch_norm(t), [images])
    return f"worst error {worst:.1e} (N, C), {worst_2d:.1e} (N, C, H, W)"
