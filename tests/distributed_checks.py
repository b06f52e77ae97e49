"""The checks that need several processes, run by tests/test_distributed.py as

    mpiexec -n 2 python tests/distributed_checks.py [name ...]

Each check runs on every rank; rank 0 prints one line per check, `CHECK {"name": ..., "ok": ...,
"detail": ...}`, ok only if it passed on every rank. The equivalence checks compare W ranks with
a global batch of B (B / W each) against this same process computing alone (distributed.alone())
with the whole batch of B, in float64, after every one of 5 optimizer steps. Their helpers, and
the gradient check across ranks: tests/mpi_check.py.
"""
import json
import os
import shutil
import sys
import tempfile
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minienc  # noqa: E402
from minienc import backend, distributed, nn  # noqa: E402
from minienc.data import BatchIterator  # noqa: E402
from minienc.engine import no_grad  # noqa: E402
from minienc.objectives import MAE, MultiBlockMaskSampler, random_masking  # noqa: E402
from minienc.objectives.jepa_study import StudyJEPA  # noqa: E402
from minienc.objectives.barlow import BarlowTwins, barlow_projector  # noqa: E402
from minienc.objectives.dino import DINO, dino_head  # noqa: E402
from minienc.objectives.lejepa import LeJEPA  # noqa: E402
from minienc.objectives.vicreg import VICReg, vicreg_expander  # noqa: E402
from minienc.objectives.contrastive import MoCo, SimCLR, _in_groups, nt_xent, projection_head  # noqa: E402
from minienc.optim import LARS, SGD, AdamW  # noqa: E402
from minienc.train import Trainer  # noqa: E402

from mpi_check import (F64, STEPS, TOLERANCE, both_runs, compare_runs, gradcheck_across_ranks,  # noqa: E402
                       inputs_on_each_rank, loader, rank, same_on_every_rank, same_runs, weights,
                       world)

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


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


# ----- the pieces under the Trainer ----------------------------------------------------------------

@check
def engine_collectives():
    engine, r, w = distributed.engine(), rank(), world()
    a = np.full((2, 3), float(r + 1))
    engine.allreduce_(a)
    assert np.all(a == w * (w + 1) / 2), a
    b = np.arange(4.0) + 10 * r
    engine.broadcast_(b, root=0)
    assert np.array_equal(b, np.arange(4.0)), b
    gathered = engine.allgather(np.full((1, 2), r, dtype=np.int64))
    assert gathered.tolist() == [[i, i] for i in range(w)], gathered
    scattered = engine.reduce_scatter(np.arange(2.0 * w)[:, None] * (r + 1))
    assert scattered.ravel().tolist() == [(2 * r + i) * w * (w + 1) / 2 for i in range(2)], scattered
    return "allreduce_, broadcast_, allgather, reduce_scatter"


@check
def batch_mean_of_unequal_shards():
    rows = [3 + r for r in range(world())]   # rank r holds 3 + r rows
    everyone = np.random.default_rng(12).standard_normal((sum(rows), 4))
    start = sum(rows[:rank()])
    mean = distributed.batch_mean(everyone[start:start + rows[rank()]])
    gap = float(np.abs(mean - everyone.mean(axis=0, keepdims=True)).max())
    assert mean.shape == (1, 4) and gap < 1e-14, (mean.shape, gap)
    return f"shards of {rows} rows: gap {gap:.1e} to the mean of all {sum(rows)}"


@check
def gradient_reducer_buckets():
    minienc.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    distributed.broadcast_parameters(model)
    x = minienc.tensor(np.random.default_rng(rank()).standard_normal((6, 4)))
    (model(x) ** 2).mean().backward()
    own = [p.grad.copy() for p in model.parameters()]
    expected = [np.mean(g, axis=0) for g in zip(*distributed.engine().allgather_object(own))]
    small = distributed.GradientReducer(model.parameters(), bucket_bytes=64)
    assert len(small.buckets) > 1, small.buckets
    small()
    for p, e in zip(model.parameters(), expected):
        assert np.allclose(p.grad, e, rtol=1e-6, atol=1e-7), (p.shape, p.grad, e)
    whole = distributed.GradientReducer(model.parameters())
    assert len(whole.buckets) == 1
    return f"{len(small.buckets)} small buckets and 1 whole bucket average alike"


@check
def loader_shards():
    x = np.arange(30, dtype=np.float32)
    for drop_last in (True, False):
        one = list(BatchIterator(x, batch_size=8, drop_last=drop_last, seed=1, rank=0, world_size=1))
        mine = list(BatchIterator(x, batch_size=8, drop_last=drop_last, seed=1))
        everyone = distributed.engine().allgather_object([b.data for b in mine])
        assert len({len(batches) for batches in everyone}) == 1, "ranks take different step counts"
        for i, batch in enumerate(one):
            joined = np.concatenate([batches[i] for batches in everyone])
            cut = len(joined)
            assert np.array_equal(joined, batch.data[:cut]), (i, joined, batch.data)
    return "every rank's share, joined in rank order, is the one-process batch"


@check
def trainer_resume_restores_every_rank():
    made = tempfile.mkdtemp(prefix="minienc-dist-") if distributed.is_main() else None
    shared = distributed.engine().bcast_object(made)
    # rank 0 writes in the shared folder; the others are given a folder of their own
    out = shared if distributed.is_main() else tempfile.mkdtemp(prefix="minienc-rank-")
    x = np.random.default_rng(8).standard_normal((24, 3)).astype(np.float32)

    def run(steps, resume, out_dir):
        minienc.manual_seed(5 + rank())  # a different random stream on every rank
        model = nn.Sequential(nn.Linear(3, 4), nn.SyncBatchNorm(4), nn.Tanh(), nn.Linear(4, 1))

        def step(batch):
            # the noise comes from each rank's own host RNG: resuming must restore each
            noise = backend.host_rng().standard_normal(batch.shape).astype(np.float32)
            return (model(batch + minienc.tensor(noise)) ** 2).mean()

        trainer = Trainer(step, SGD(model.parameters(), lr=0.05, momentum=0.9), models=model,
                          out_dir=out_dir, checkpoint_every=3, log_every=1, progress=False)
        trainer.fit(BatchIterator(x, batch_size=4, seed=2), steps=steps, resume=resume)
        return weights(model), trainer.losses

    straight, straight_losses = run(8, False, None)
    run(3, False, out)                                   # stops at the step-3 checkpoint
    resumed, resumed_losses = run(8, True, out)
    assert np.array_equal(straight, resumed), "resumed weights differ from an uninterrupted run"
    assert straight_losses == resumed_losses, (straight_losses, resumed_losses)
    # the other ranks keep only metrics.jsonl in their own folder, with rank 0's numbers
    if not distributed.is_main():
        kept = sorted(os.listdir(out))   # (and the lock by which its process claims the folder)
        assert kept == [".minienc-lock", "metrics.jsonl"], f"rank {rank()} wrote {kept}"
    with open(os.path.join(out, "metrics.jsonl")) as f:
        logged = [json.loads(line)["loss"] for line in f if line.strip()]
    assert logged == resumed_losses, (logged, resumed_losses)
    same_on_every_rank(np.array(logged), "metrics.jsonl's losses")
    same_on_every_rank(resumed, "resumed weights")   # (also: rank 0 is done reading the files)
    shutil.rmtree(out)
    return "8 steps straight == 3 steps, checkpoint, resume to 8 (weights and losses)"


@check
def a_signal_on_one_rank_stops_every_rank_after_the_same_step():
    """SIGTERM (or Ctrl-C) reaching one rank is a vote in the gradient reduction: every rank
    stops after the same step, the checkpoint is saved, and the resumed run equals the
    uninterrupted one (regression: under several processes a signal lost the run)."""
    # the vote is counted by the next step's reduction: every rank stops after step 4
    return _signal_on_the_last_rank(stops_after=4)


class NcclOverMPI:
    """cupy.cuda.nccl's calls on host memory, each collective carried out by MPI on the
    addresses NCCLEngine passes: the NCCL engine's own code path across real processes."""
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT64, NCCL_SUM = 7, 8, 4, 0
    TYPES = {7: np.float32, 8: np.float64, 4: np.int64}

    def __init__(self, comm):
        from mpi4py import MPI

        def at(address, count, dtype):
            kind = np.ctypeslib.as_ctypes_type(self.TYPES[dtype])
            return np.ctypeslib.as_array((kind * count).from_address(address))

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                pass

            def allReduce(self, send, recv, count, dtype, op, stream):
                comm.Allreduce(MPI.IN_PLACE if send == recv else at(send, count, dtype),
                               at(recv, count, dtype), op=MPI.SUM)

            def bcast(self, buff, count, dtype, root, stream):
                comm.Bcast(at(buff, count, dtype), root=root)

            def allGather(self, send, recv, count, dtype, stream):
                comm.Allgather(at(send, count, dtype), at(recv, comm.size * count, dtype))

            def reduceScatter(self, send, recv, count, dtype, op, stream):
                comm.Reduce_scatter_block(at(send, comm.size * count, dtype),
                                          at(recv, count, dtype), op=MPI.SUM)

        self.NcclCommunicator = NcclCommunicator


class Finished:
    done = True


def on_the_nccl_engine(run):
    """run() with NCCLEngine's code as on GPUs, its collectives carried out over MPI."""
    host = distributed.engine()
    nccl = distributed.NCCLEngine(host.rank, host.size, b"stand-in", NcclOverMPI(host.comm),
                                  host, lambda: Finished)
    distributed.shutdown()
    distributed.init(nccl)
    try:
        return run()
    finally:
        distributed.shutdown()
        distributed.init(host)


@check
def on_nccl_a_signal_stops_every_rank_one_step_later():
    """The NCCL engine's vote is read one reduction late, so reading it waits for no GPU; every
    rank still stops after the same step (regression: on NCCL a signal stopped the job at once,
    without a checkpoint)."""
    return on_the_nccl_engine(lambda: _signal_on_the_last_rank(stops_after=5))


@check
def on_nccl_simclr_equals_one_process():
    """The SimCLR equivalence through NCCLEngine's code (flags in the bucket, gathers with their
    shape agreement, reduce-scatter, broadcast), not only at a world of one."""
    return on_the_nccl_engine(simclr_global_gather_and_sync_bn)


def _signal_on_the_last_rank(stops_after):
    import signal
    made = tempfile.mkdtemp(prefix="minienc-signal-") if distributed.is_main() else None
    shared = distributed.engine().bcast_object(made)
    out = shared if distributed.is_main() else tempfile.mkdtemp(prefix="minienc-rank-")
    x = np.random.default_rng(9).standard_normal((24, 3)).astype(np.float32)

    def run(steps, resume, out_dir, signal_at=None):
        minienc.manual_seed(11)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

        def raise_on_last_rank(trainer):
            if trainer.step == signal_at and rank() == world() - 1:
                signal.raise_signal(signal.SIGTERM)
        trainer = Trainer(lambda batch: (model(batch) ** 2).mean(),
                          SGD(model.parameters(), lr=0.05, momentum=0.9), models=model,
                          out_dir=out_dir, log_every=1, progress=False,
                          callbacks=[raise_on_last_rank])
        try:
            trainer.fit(BatchIterator(x, batch_size=4, seed=2), steps=steps, resume=resume)
            stopped = False
        except KeyboardInterrupt:
            stopped = True
        return weights(model), trainer.losses, trainer.step, stopped

    straight, straight_losses, _, _ = run(8, False, None)
    _, _, stopped_at, stopped = run(8, False, out, signal_at=3)
    everyone = distributed.engine().allgather_object((stopped_at, stopped))
    assert everyone == [(stops_after, True)] * world(), everyone
    resumed, resumed_losses, step, _ = run(8, True, out)
    assert step == 8 and np.array_equal(straight, resumed), "resumed run differs"
    assert straight_losses == resumed_losses, (straight_losses, resumed_losses)
    same_on_every_rank(resumed, "resumed weights")
    shutil.rmtree(out)
    return (f"SIGTERM on the last rank after step 3: all stopped after step {stops_after}, "
            f"resumed to 8 exactly")


# ----- refused on every rank, with the ranks named, instead of garbage or a hang -----------------

def refused_on_every_rank(fn, *fragments, kind=ValueError):
    """Run fn() on every rank; assert it raised `kind` on every rank with each of `fragments` in
    the message. Returns rank 0's message."""
    try:
        fn()
        message = None
    except kind as error:
        message = str(error)
    everyone = distributed.engine().allgather_object(message)
    for r, said in enumerate(everyone):
        assert said is not None, f"rank {r} was not refused ({kind.__name__} expected)"
        for fragment in fragments:
            assert fragment in said, f"rank {r}: {fragment!r} not in {said!r}"
    return everyone[0]


@check
def all_gather_refuses_unequal_shapes():
    """Regression: 4 rows on rank 0 and 3 on rank 1 gave 8 rows, one of uninitialised memory."""
    rows = minienc.tensor(np.ones((4 - rank(), 3), dtype=np.float32))
    said = refused_on_every_rank(lambda: distributed.all_gather(rows),
                                 "rank 0: (4, 3) float32", "rank 1: (3, 3) float32")
    mixed = np.zeros(2, dtype=[np.float32, F64][rank() % 2])
    refused_on_every_rank(lambda: distributed.engine().allgather(mixed),
                          "rank 0: (2,) float32", "rank 1: (2,) float64")
    same = distributed.all_gather(minienc.tensor(np.full((2, 3), rank(), dtype=np.float32)))
    assert same.numpy()[:, 0].tolist() == [r for r in range(world()) for _ in range(2)]
    return said


@check
def broadcast_refuses_models_that_differ():
    """Regression: different shapes gave MPICH's 'message sizes do not match', naming nothing;
    equal sizes in other shapes trained on silently."""
    transposed = nn.Linear(3, 4) if rank() == 0 else nn.Linear(4, 3)   # 12 weights on both
    said = refused_on_every_rank(lambda: distributed.broadcast_parameters(transposed),
                                 "Linear[0].weight", "rank 0 has", "rank 1 has")
    deeper = nn.Sequential(*[nn.Linear(2, 2) for _ in range(1 + rank())])
    refused_on_every_rank(lambda: distributed.broadcast_parameters(deeper),
                          "rank 0 has 2 parameters and buffers, rank 1 has 4")
    same = nn.Linear(2, 2)
    distributed.broadcast_parameters(same)
    same_on_every_rank(weights(same), "a model that agrees is broadcast")
    return said


def _tiny_trainer(out_dir, **options):
    model = nn.Linear(2, 1)
    return Trainer(lambda batch: (model(batch) ** 2).mean(), SGD(model.parameters(), lr=0.1),
                   models=model, out_dir=out_dir, progress=False, **options)


@check
def fit_refuses_ranks_that_would_run_different_steps():
    """Regression: out_dir on rank 0 only hung at the first checkpoint, and ranks whose data
    gave different numbers of batches hung where the shorter one stopped."""
    x = np.ones((8, 2), dtype=np.float32)
    out = tempfile.mkdtemp(prefix="minienc-check-") if distributed.is_main() else None
    said = refused_on_every_rank(lambda: _tiny_trainer(out, checkpoint_every=1).fit(
        BatchIterator(x, batch_size=4, rank=0, world_size=1), steps=2),
        "out_dir (set or None)", "rank 0: True", "rank 1: False")
    longer = BatchIterator(x[:4 + 4 * rank()], batch_size=2, rank=0, world_size=1)
    refused_on_every_rank(lambda: _tiny_trainer(None).fit(longer, epochs=1),
                          "batches per epoch", "rank 0: 2", "rank 1: 4")
    refused_on_every_rank(lambda: _tiny_trainer(None).fit([x[:2]] * 3, steps=2 + rank()),
                          "steps", "rank 0: 2", "rank 1: 3")
    # the numbers a step logs are averaged by position: their names must agree
    model = nn.Linear(2, 1)

    def step(batch):
        loss = (model(batch) ** 2).mean()
        return {"loss": loss, ["alpha", "beta"][rank() % 2]: loss * 0}
    refused_on_every_rank(lambda: Trainer(step, SGD(model.parameters(), lr=0.1), models=model,
                                          progress=False).fit([x[:2]] * 3, steps=2),
                          "Trainer: the logged numbers", "'alpha'", "'beta'")
    if out:
        shutil.rmtree(out)
    return said


@check
def one_fresh_out_dir_shared_by_every_rank():
    """Regression: the same fresh out_dir on every rank raced (rank 1 found the metrics.jsonl
    rank 0 had just made and refused: 3 launches in 5)."""
    x = np.ones((8, 2), dtype=np.float32)
    for attempt in range(5):
        made = tempfile.mkdtemp(prefix="minienc-shared-") if distributed.is_main() else None
        out = distributed.engine().bcast_object(made)
        _tiny_trainer(out, log_every=1).fit(BatchIterator(x, batch_size=4), steps=2)
        distributed.barrier()
        if distributed.is_main():
            shutil.rmtree(out)
    return "5 fresh folders shared by every rank, none refused"


@check
def a_refusal_on_one_rank_is_raised_on_every_rank():
    error = FileExistsError("the folder is taken") if rank() == world() - 1 else None
    said = refused_on_every_rank(lambda: distributed.raise_together(error),
                                 "the folder is taken", kind=FileExistsError)
    distributed.raise_together(None)   # nobody refuses: nothing raised
    return said


def main(names):
    distributed.init()
    assert distributed.world_size() > 1, "run under mpiexec -n 2 (or more)"
    for name in names or list(CHECKS):
        try:
            detail, ok = CHECKS[name](), True
        except Exception:
            detail, ok = traceback.format_exc(limit=4), False
            print(f"rank {rank()}: {name} failed (a rank that fails mid-check can leave the "
                  f"others waiting in a collective):\n{detail}", file=sys.stderr, flush=True)
        outcomes = distributed.engine().allgather_object((ok, str(detail)))
        if distributed.is_main():
            failed = [f"rank {r}: {d}" for r, (good, d) in enumerate(outcomes) if not good]
            print("CHECK " + json.dumps({"name": name, "ok": not failed,
                                         "detail": "\n".join(failed) or outcomes[0][1]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
