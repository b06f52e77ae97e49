"""The two-process checks of what lies under the equivalences (run by tests/distributed_checks.py,
which collects them): the engine's collectives, the batch mean of unequal shards, the gradient
reducer's buckets, the loader's shards, the Trainer's resume on every rank; a signal on one rank
stopping every rank after the same step; the NCCL engine's own code over MPI (NcclOverMPI); and
refusals raised on every rank, with the ranks named, instead of garbage or a hang."""
import json
import os
import shutil
import tempfile

import numpy as np

import minienc
from minienc import backend, distributed, nn
from minienc.data import BatchIterator
from minienc.optim import SGD
from minienc.train import Trainer

from mpi_check import F64, check, rank, same_on_every_rank, weights, world
from distributed_equivalence import simclr_global_gather_and_sync_bn


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
