"""minienc.distributed in one process: a world of one (no launcher), the BatchIterator's shards,
and the NCCL engine's logic at world size 1 (against a stand-in for cupy.cuda.nccl on the CPU,
the real NCCL where a GPU is visible). The checks that need two processes, and the ways a rank
can part from the others, each a launch of `mpiexec -n 2`: tests/test_distributed_launches.py."""
import ctypes
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minienc
from minienc import backend, distributed, nn
from minienc.data import BatchIterator
from minienc.distributed.engines import NCCLEngine, WorldOfOne
from minienc.objectives.contrastive import SimCLR, nt_xent, projection_head
from minienc.optim import SGD
from minienc.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
F64 = np.float64


@pytest.fixture(autouse=True)
def _world_of_one():
    distributed.shutdown()
    yield
    distributed.shutdown()


# ----- a world of one --------------------------------------------------------------------------

def test_importing_minienc_imports_no_mpi():
    code = ("import sys, minienc, minienc.train, minienc.objectives, minienc.distributed; "
            "from minienc import distributed; distributed.init(); "
            "print(distributed.world_size(), distributed.rank(), 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    assert out == ["1", "0", "False"], out


def test_world_of_one_makes_every_call_a_no_op(device):
    assert isinstance(distributed.init(), WorldOfOne) and not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = minienc.randn(3, 2, device=device, requires_grad=True)
    assert distributed.all_gather(x) is x
    p = nn.Linear(2, 2).to(device)
    before = p.weight.data.copy()
    distributed.broadcast_parameters(p)
    (p(x) ** 2).sum().backward()
    grad = p.weight.grad
    distributed.GradientReducer(p.parameters())()
    assert p.weight.grad is grad and np.array_equal(backend.to_host(p.weight.data), backend.to_host(before))
    assert distributed.data_parallel([p], SGD(p.parameters(), lr=0.1)) is None


def test_init_refuses_an_unknown_engine():
    with pytest.raises(ValueError, match="engine must be one of"):
        distributed.init("gloo")


def test_nt_xent_and_info_nce_at_world_of_one_are_the_local_losses(device):
    u = minienc.randn(5, 3, device=device)
    v = minienc.randn(5, 3, device=device)
    assert np.allclose(nt_xent(u, v, 0.3, distributed=True).numpy(), nt_xent(u, v, 0.3).numpy())
    assert np.allclose(minienc.objectives.info_nce(u, v, distributed=True).numpy(),
                       minienc.objectives.info_nce(u, v).numpy())


def test_sync_batch_norm_alone_is_batch_norm_and_passes_gradcheck(device):
    minienc.manual_seed(3)
    plain = nn.BatchNorm1d(4).to(device)
    synced = nn.SyncBatchNorm.convert(nn.Sequential(plain))[0]
    assert isinstance(synced, nn.SyncBatchNorm) and synced.weight is plain.weight
    x = minienc.randn(6, 4, device=device)
    expected = minienc.batch_norm(x, plain.weight, plain.bias)
    assert np.allclose(synced(x).numpy(), expected.numpy(), atol=1e-6)
    xs = minienc.tensor(np.random.default_rng(0).standard_normal((5, 3)), dtype=F64,
                        device=device, requires_grad=True)
    w, b = (minienc.tensor(np.random.default_rng(i).standard_normal(3), dtype=F64, device=device,
                           requires_grad=True) for i in (1, 2))
    minienc.gradcheck(lambda t, ww, bb: distributed.sync_batch_norm(t, ww, bb), xs, w, b)


def test_sync_batch_norm_convert_keeps_each_layers_shapes_and_eval_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    conv = nn.BatchNorm2d(2)
    nn.SyncBatchNorm.convert(model)
    synced = nn.SyncBatchNorm.convert(conv)
    with pytest.raises(ValueError, match=r"SyncBatchNorm\(2\).*\(N, C, H, W\)"):
        synced(minienc.randn(4, 2))                   # a BatchNorm2d still wants images
    model.eval()
    x = minienc.randn(1, 3)                           # evaluation: running statistics, batch of one
    assert model(x).shape == (1, 4)


def test_broadcast_covers_every_parameter_and_buffer_the_module_holds():
    """Regression: the broadcast walked direct attributes only, so a frozen Parameter in a list
    (parameters() and state_dict() find it) would have kept each rank's own random values."""
    from minienc.distributed.parallel import _arrays_of

    class Holder(nn.Module):
        def __init__(self):
            self.frozen = [nn.Parameter(minienc.randn(2).data, requires_grad=False)]
            self.norm = nn.BatchNorm1d(2)
    holder = Holder()
    found = {id(a) for a in _arrays_of([holder])}
    wanted = [p.data for p in holder.parameters()] + [a for _, a in holder.named_buffers()]
    assert len(wanted) == 5 and all(id(a) in found for a in wanted)


def test_sync_batch_norm_convert_reaches_every_batch_norm_the_module_holds():
    """Regression: convert walked only direct attributes and flat lists, so a batch norm in a dict
    or a nested list (which parameters() and state_dict() find) silently stayed local."""
    class Holder(nn.Module):
        def __init__(self):
            self.heads = {"a": nn.BatchNorm1d(2)}
            self.stages = [[nn.BatchNorm1d(2)], (nn.BatchNorm1d(2),)]
            self.norm = nn.BatchNorm1d(2)
    holder = Holder()
    weights = [p for p in holder.parameters()]
    nn.SyncBatchNorm.convert(holder)
    norms = [m for m in holder.modules() if isinstance(m, nn.BatchNorm1d) or isinstance(m, nn.SyncBatchNorm)]
    assert len(norms) == 4 and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert [p for p in holder.parameters()] == weights and isinstance(holder.stages[1], tuple)


@given(n=st.integers(1, 60), per_rank=st.integers(1, 6), world=st.integers(1, 4),
       drop_last=st.booleans(), shuffle=st.booleans())
def test_batch_iterator_shards_are_disjoint_slices_of_the_one_process_batches(
        n, per_rank, world, drop_last, shuffle):
    x = np.arange(n, dtype=np.float32)
    batch = per_rank * world
    one = [b.numpy() for b in BatchIterator(x, batch_size=batch, drop_last=drop_last, seed=4,
                                            shuffle=shuffle, rank=0, world_size=1)]
    shards = [[b.numpy() for b in BatchIterator(x, batch_size=batch, drop_last=drop_last, seed=4,
                                                shuffle=shuffle, rank=r, world_size=world)]
              for r in range(world)]
    steps = {len(s) for s in shards}
    assert len(steps) == 1, "every rank must take the same number of steps"
    assert len(BatchIterator(x, batch_size=batch, drop_last=drop_last, rank=1 % world,
                             world_size=world)) == steps.pop()
    seen = []
    for i, parts in enumerate(zip(*shards)):
        assert len({len(p) for p in parts}) == 1, "shares of one batch differ in size"
        joined = np.concatenate(parts)
        assert np.array_equal(joined, one[i][:len(joined)])   # rank order = the batch's order
        assert len(one[i]) - len(joined) < world               # at most W - 1 left out
        seen.extend(joined.tolist())
    assert len(seen) == len(set(seen)), "a sample went to two ranks"
    if world == 1:
        assert len(shards[0]) == len(one)


def test_batch_iterator_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="batch_size 10 does not split into 3"):
        BatchIterator(np.zeros(12), batch_size=10, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank 3 is not one of world_size 2"):
        BatchIterator(np.zeros(12), batch_size=4, rank=3, world_size=2)


# ----- the NCCL engine at world size 1: a stand-in on the CPU, the real NCCL on a GPU -----------

class FakeNccl:
    """cupy.cuda.nccl's calls for a world of one, on host memory: each collective copies
    count * itemsize bytes from the send to the receive address (what NCCL does for one rank),
    and every call is recorded."""
    NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_INT64 = 0, 1, 2, 4
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 6, 7, 8, 0
    SIZES = {0: 1, 1: 1, 2: 4, 4: 8, 6: 2, 7: 4, 8: 8}

    def __init__(self):
        self.calls = []
        fake = self

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                assert (size, unique_id, rank) == (1, b"fake-id", 0)

            def allReduce(self, send, recv, count, dtype, op, stream):
                fake.calls.append(("allReduce", count, dtype, send == recv))
                ctypes.memmove(recv, send, count * FakeNccl.SIZES[dtype])

            def bcast(self, buff, count, dtype, root, stream):
                fake.calls.append(("bcast", count, dtype, root))

            def allGather(self, send, recv, count, dtype, stream):
                fake.calls.append(("allGather", count, dtype))
                ctypes.memmove(recv, send, count * FakeNccl.SIZES[dtype])

            def reduceScatter(self, send, recv, count, dtype, op, stream):
                fake.calls.append(("reduceScatter", count, dtype))
                ctypes.memmove(recv, send, count * FakeNccl.SIZES[dtype])

        self.NcclCommunicator = NcclCommunicator


def _nccl_engine(device):
    """(engine, calls): the real NCCL engine on one GPU, or the stand-in on the CPU."""
    if device == "cuda":
        return distributed.make_nccl_engine(None), None
    fake = FakeNccl()
    return NCCLEngine(0, 1, b"fake-id", fake), fake.calls


class OneHostRank:
    """An MPI-like engine of one rank that really runs its (trivial) collectives."""
    name, rank, size = "mpi", 0, 1

    def allreduce_(self, a):
        return a


@pytest.mark.parametrize("engine, counted_at", [("mpi", [1, 2, 3]), ("nccl", [2, 3])])
def test_the_stop_vote_is_read_at_once_on_host_buffers_and_a_reduction_late_on_nccl(
        device, engine, counted_at):
    """Regression: reading the vote from NCCL's device buffer would wait for the GPU every step,
    so under NCCL a signal stopped the job at once; now the vote travels to the host behind the
    reduction and is read at the next one, the same step on every rank."""
    if engine == "mpi" and device == "cuda":
        pytest.skip("MPI moves host arrays")
    engine = OneHostRank() if engine == "mpi" else _nccl_engine(device)[0]
    xp = backend.xp_for(device)
    weight = nn.Parameter(xp.ones(3, dtype=xp.float32))
    reduce = distributed.GradientReducer([weight], engine=engine)
    counted = []
    for step in range(4):
        reduce.on_stop = lambda: counted.append(step)
        weight.grad = xp.full(3, step, dtype=xp.float32)
        if step == 1:
            reduce.vote_stop()
        reduce()
        assert np.array_equal(backend.to_host(weight.grad), np.full(3, step))
    assert counted == counted_at


def test_to_host_later_is_the_value_when_it_was_asked_for(device):
    xp = backend.xp_for(device)
    a = xp.arange(4, dtype=xp.float32)
    later = backend.to_host_later(a[1:3])
    a[...] = -1   # enqueued after the copy: not seen by it
    got = later()
    assert isinstance(got, np.ndarray) and np.array_equal(got, [1, 2])


def test_the_event_behind_an_nccl_collective_is_done_once_the_gpu_has_run_it(device):
    """What the watchdog reads on NCCL: `.done` of the CUDA event recorded behind a collective
    (stand-in events elsewhere; this one is CUDA's)."""
    if device != "cuda":
        pytest.skip("CUDA's events need a GPU (tests/distributed_exits.py uses stand-ins)")
    from minienc.distributed.engines import _record_cuda_event
    engine, _ = _nccl_engine(device)
    engine.allreduce_(backend.cupy().ones(1 << 20, dtype=np.float32))
    event = _record_cuda_event()
    event.synchronize()
    assert event.done


def test_nccl_engine_collectives_at_world_size_one(device):
    engine, calls = _nccl_engine(device)
    xp = backend.xp_for(device)
    a = xp.arange(6, dtype=xp.float64).reshape(2, 3)
    assert engine.allreduce_(a) is a and np.array_equal(backend.to_host(a), np.arange(6.0).reshape(2, 3))
    assert np.array_equal(backend.to_host(engine.allgather(a[:, 1:])), [[1, 2], [4, 5]])
    assert np.array_equal(backend.to_host(engine.reduce_scatter(a.astype(xp.float32))),
                          np.arange(6.0).reshape(2, 3))
    order = xp.arange(5, dtype=xp.int64)
    engine.broadcast_(order)
    with pytest.raises(ValueError, match="contiguous"):
        engine.allreduce_(a[:, 1:])
    with pytest.raises(TypeError, match="NCCL has no type for complex128"):
        engine.broadcast_(xp.zeros(2, dtype=xp.complex128))
    # counted with the host's collectives, so the watchdog finds a rank that left before one
    assert engine.watchdog.count == 4
    if calls is not None:
        assert calls == [("allReduce", 6, FakeNccl.NCCL_FLOAT64, True),
                         ("allGather", 4, FakeNccl.NCCL_FLOAT64),
                         ("reduceScatter", 6, FakeNccl.NCCL_FLOAT32),
                         ("bcast", 5, FakeNccl.NCCL_INT64, 0)]


def test_sync_batch_norm_takes_three_all_reduces_per_training_step(device):
    """Collectives cost a latency each: the count travels with the first sum, and backward sums
    both of its averages in one all-reduce."""
    engine, calls = _nccl_engine(device)
    if calls is None:
        pytest.skip("counts the stand-in's calls")
    distributed.init(engine)
    x = minienc.randn(6, 4, requires_grad=True)
    w, b = minienc.ones(4, requires_grad=True), minienc.zeros(4, requires_grad=True)
    y = distributed.sync_batch_norm(x, w, b)
    assert [c[:2] for c in calls] == [("allReduce", 5), ("allReduce", 4)]   # (sum x, count), var
    (y * y.detach()).sum().backward()
    assert [c[:2] for c in calls[2:]] == [("allReduce", 8)]                 # both averages
    distributed.shutdown()
    expected = minienc.batch_norm(x.detach(), w.detach(), b.detach())
    assert np.allclose(y.numpy(), expected.numpy(), atol=1e-6)


def test_batch_mean_takes_one_all_reduce_and_is_the_mean(device):
    """DINO's centre: the local sum and the row count travel together, no gradient."""
    x = minienc.tensor(np.random.default_rng(0).standard_normal((5, 3)), dtype=F64, device=device)
    alone = distributed.batch_mean(x)
    assert alone.shape == (1, 3) and np.allclose(backend.to_host(alone), x.numpy().mean(axis=0))
    engine, calls = _nccl_engine(device)
    distributed.init(engine)
    through_engine = distributed.batch_mean(x)
    distributed.shutdown()
    assert np.allclose(backend.to_host(through_engine), backend.to_host(alone), rtol=1e-14)
    if calls is not None:
        assert [c[:2] for c in calls] == [("allReduce", 4)]


def test_dino_centre_at_world_of_one_is_the_local_mean(device):
    from minienc.objectives.dino import DINO, dino_head
    crops = [minienc.randn(6, 5, device=device) for _ in range(3)]
    centres = []
    for flag in (False, True):
        minienc.manual_seed(2)
        dino = DINO(nn.MLPEncoder(5, (6,), 4).to(device), dino_head(4, 8, 6, 3).to(device),
                    distributed=flag)
        dino.loss_of_views(*crops)
        centres.append(backend.to_host(dino.center))
    assert np.abs(centres[0]).max() > 0 and np.array_equal(centres[0], centres[1])


def _simclr_run(device, steps=3):
    """Weights after each step of a tiny SimCLR (SyncBatchNorm, gathered negatives), float64."""
    minienc.manual_seed(1)
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    model = SimCLR(nn.MLPEncoder(6, (8,), 4, batch_norm=True), projection_head(4, 8, 3),
                   distributed=True)
    nn.SyncBatchNorm.convert(model).to(device).astype(F64)
    history = []

    def step(batch):
        batch = batch.astype(F64)
        return model.loss_of_views(batch * 1.1, batch * 0.9 + 0.1)

    trainer = Trainer(step, SGD(model.parameters(), lr=0.2, momentum=0.9), models=model,
                      progress=False, log_every=1,
                      callbacks=[lambda t: history.append(np.concatenate(
                          [v.ravel() for v in model.state_dict().values()]))])
    trainer.fit(BatchIterator(x, batch_size=8, seed=1, device=device), steps=steps)
    return history, sum(p.size for p in model.parameters())


def test_training_through_the_nccl_engine_at_world_size_one_matches_one_process(device):
    """The whole data-parallel path (broadcast, bucketed all-reduce, SyncBatchNorm, all_gather
    with its reduce-scatter backward) through the NCCL engine of one rank gives the weights of
    a process without any engine, step after step; one all-reduce per bucket, not per tensor."""
    reference, _ = _simclr_run(device)
    engine, calls = _nccl_engine(device)
    distributed.init(engine)
    through_engine, parameter_count = _simclr_run(device)
    assert len(through_engine) == len(reference) == 3
    for a, b in zip(reference, through_engine):
        assert np.abs(a - b).max() < 1e-12
    if calls is not None:
        kinds = {c[0] for c in calls}
        assert {"bcast", "allGather", "reduceScatter"} <= kinds, kinds
        # all the gradients fit one bucket: one all-reduce of every parameter's values (and the
        # two flags, "I have a batch" and "stop") per step
        bucket_sums = [c for c in calls if c[0] == "allReduce" and c[1] == parameter_count + 2]
        assert len(bucket_sums) == 3, calls
