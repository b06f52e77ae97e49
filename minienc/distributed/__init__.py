"""Data-parallel training over MPI (NumPy, CPUs) or NCCL (CuPy, GPUs): minienc.distributed.

    mpiexec -n 2 python demos/simclr.py --distributed

    from minienc import distributed
    distributed.init()                   # joins the launcher's processes; alone: a world of one
    distributed.rank(), distributed.world_size(), distributed.is_main()

Every process builds the same model and runs the same code on its own share of each batch:

    BatchIterator(x, batch_size=B)       each rank gets rows [r B/W, (r+1) B/W) of the global batch
    Trainer(...).fit(...)                rank 0's weights everywhere, then per step: backward,
                                         gradients averaged over the ranks in flat buckets
                                         (GradientReducer), the same optimizer step everywhere;
                                         rank 0 alone logs, plots and writes checkpoints
    all_gather(z)                        every rank's z stacked, with a gradient: NT-Xent's
                                         negatives and MoCo's queue see the global batch
    nn.SyncBatchNorm                     batch statistics over the global batch
    batch_mean(x)                        the global batch's mean, no gradient (DINO's centre)
    shuffled_forward(key_encoder, x)     MoCo's batch-norm shuffle across ranks

The engine: `init()` picks MPI when minienc's default device is "cpu" and NCCL when it is
"cuda" (one GPU per process, NCCL's unique id broadcast over MPI); `init("mpi")` or
`init("nccl")` asks for one. Without a launcher (no mpiexec around the process) `init()` leaves
a world of one in which every call below is a no-op, so a script written for many processes
runs unchanged on one. mpi4py is imported by `init()` only, never by importing minienc.
"""
import contextlib
import os
import sys

from .engines import MPIEngine, NCCLEngine, WorldOfOne, make_nccl_engine  # noqa: F401
from .ops import all_gather, batch_mean, shuffled_forward, sync_batch_norm  # noqa: F401
from .watchdog import DEFAULT_TIMEOUT, TIMEOUT_VARIABLE, timeout_from  # noqa: F401
from .parallel import (DataParallel, GradientReducer, agree, broadcast_parameters,  # noqa: F401
                       data_parallel, raise_together)

ENGINES = ("mpi", "nccl")
# set by the MPI launchers (MPICH/Hydra, Open MPI, PMIx e.g. under Slurm) in every process
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

_engine = WorldOfOne()


def launched():
    """Whether this process was started by an MPI launcher."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def init(engine=None, timeout=None):
    """Join the launcher's processes and return the engine. engine: "mpi", "nccl", None (NCCL
    when the default device is cuda, else MPI; a world of one without a launcher), or an engine
    object (the tests' stand-ins). Asked for by name without a launcher, an engine still starts,
    as a world of one whose collectives really run (how the GPU check tests NCCL on one GPU).
    timeout: the seconds a collective may wait for the other ranks before the job ends with a
    message naming the rank and the operation (None: $MINIENC_DISTRIBUTED_TIMEOUT, else 600;
    minienc/distributed/watchdog.py). Calling init() again returns the engine already joined."""
    global _engine
    if not isinstance(_engine, WorldOfOne):
        return _engine
    if engine is not None and not isinstance(engine, str):
        _engine = engine
        return _engine
    if engine is None:
        if not launched():
            return _engine
        from .. import backend
        engine = "nccl" if backend.get_device() == "cuda" else "mpi"
    if engine not in ENGINES:
        raise ValueError(f"distributed.init: engine must be one of {ENGINES} or None, "
                         f"got {engine!r}")
    timeout = timeout_from(timeout)   # checked before any process is joined
    if engine == "mpi":
        _engine = MPIEngine(timeout=timeout)
    else:
        _engine = make_nccl_engine(MPIEngine(timeout=timeout) if launched() else None)
    if _engine.size > 1:
        _abort_every_rank_on_uncaught_exceptions(_engine)
    return _engine


def _abort_every_rank_on_uncaught_exceptions(engine):
    """An exception that ends one rank would leave the others waiting in their next collective
    forever (the launcher does not stop them): print it, then abort every rank (what
    `python -m mpi4py` does). A rank that ends otherwise (sys.exit, SystemExit, the end of its
    script) is the watchdog's to report (minienc/distributed/watchdog.py)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        if issubclass(kind, KeyboardInterrupt):
            # every rank gets the launcher's Ctrl-C or SIGTERM and ends; a rank that did not is
            # found by the watchdog (its next collective waits for one that left)
            return
        print(f"minienc.distributed: rank {engine.rank} ended with {kind.__name__}. Ending every "
              f"rank.", file=sys.stderr, flush=True)
        engine.abort(1)

    sys.excepthook = hook


def shutdown():
    """Back to a world of one (the tests use it; MPI itself is finalised when Python exits)."""
    global _engine
    _engine = WorldOfOne()


@contextlib.contextmanager
def alone():
    """Inside this block this process computes as a world of one (no collective runs): a
    reference computation, or work that one rank does by itself (evaluation on rank 0)."""
    global _engine
    joined, _engine = _engine, WorldOfOne()
    try:
        yield
    finally:
        _engine = joined


def engine():
    """The engine init() joined (a WorldOfOne before, or without a launcher)."""
    return _engine


def is_initialized():
    return not isinstance(_engine, WorldOfOne)


def rank():
    return _engine.rank


def world_size():
    return _engine.size


def is_main():
    """Rank 0: the process that logs, plots and writes."""
    return _engine.rank == 0


def barrier():
    _engine.barrier()
