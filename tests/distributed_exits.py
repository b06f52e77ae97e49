"""Ways one rank can part from the others, each a run of its own, started by
tests/test_distributed_launches.py as

    mpiexec -n 2 python tests/distributed_exits.py <scenario>

Each must end the whole job promptly, with a line that names the rank and what it was doing,
never leave a rank waiting in a collective (docs/distributed.md, "Errors").

A script, not a test module (pytest collects no file of this name): the assertions are in
tests/test_distributed_launches.py::test_a_rank_that_parts_from_the_others_ends_every_rank, which
fails a scenario whose job ends with status 0, whose stderr lacks its expected line, in which a
rank prints "finished", or that outlasts the launch's time limit (a rank left waiting)."""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minienc import distributed, nn  # noqa: E402
from minienc.optim import SGD  # noqa: E402
from minienc.train import Trainer  # noqa: E402

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def fit(data, on_step=lambda step: None, **options):
    model = nn.Linear(2, 1)

    def step(batch):
        on_step(trainer.step)
        return (model(batch) ** 2).mean()

    trainer = Trainer(step, SGD(model.parameters(), lr=0.1), models=model, progress=False)
    return trainer.fit(data, **options)


X = np.ones((4, 2), dtype=np.float32)


@scenario
def exit_mid_step():
    """sys.exit on rank 1 inside its third step: rank 0 waits in the gradient reduction."""
    def on_step(step):
        if step == 2 and distributed.rank() == 1:
            sys.exit("rank 1 leaves")
    fit([X] * 10, on_step, steps=10)


@scenario
def data_of_different_lengths():
    """Epochs of unknown length (a function epoch -> batches): 2 batches on rank 0, 3 on rank 1."""
    fit(lambda epoch: iter([X] * (2 + distributed.rank())), epochs=2)


@scenario
def collective_timeout():
    """Rank 1 stuck for a minute in its second step; the timeout is 3 s (set by the test)."""
    def on_step(step):
        if step == 1 and distributed.rank() == 1:
            time.sleep(60)
    fit([X] * 4, on_step, steps=4)


class StandInNccl:
    """cupy.cuda.nccl's calls on host memory, for a world of any size: a collective does
    nothing (what the ranks would exchange does not matter here); `failing` makes
    check_async_error raise, as NCCL does once a peer has failed."""
    NCCL_FLOAT64, NCCL_SUM = 8, 0

    def __init__(self, failing=False):
        stand_in = self

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                pass

            def allReduce(self, send, recv, count, dtype, op, stream):
                pass

            def check_async_error(self):
                if stand_in.failing:
                    raise RuntimeError("NCCL_ERROR_REMOTE_ERROR: remote process exited or "
                                       "there was a network error")

        self.NcclCommunicator, self.failing = NcclCommunicator, failing


class Unfinished:
    """A CUDA event behind a collective the other rank never joins: never done."""
    done = False


def nccl_engine(nccl):
    host = distributed.engine()
    return distributed.NCCLEngine(host.rank, host.size, b"stand-in", nccl, host, Unfinished)


@scenario
def nccl_collective_never_finishes():
    """Rank 0's all-reduce, enqueued on its 'GPU', never finishes (rank 1 never joins it) while
    its host goes on (NCCL returns once enqueued); the timeout is 3 s (set by the test)."""
    engine = nccl_engine(StandInNccl())
    if distributed.rank() == 0:
        engine.allreduce_(np.ones(3))
    time.sleep(60)


@scenario
def nccl_reports_an_error():
    """NCCL reports an asynchronous error on rank 0 (a peer failed): the job ends at once."""
    nccl_engine(StandInNccl(failing=distributed.rank() == 0))
    time.sleep(60)


if __name__ == "__main__":
    distributed.init()
    SCENARIOS[sys.argv[1]]()
    print(f"rank {distributed.rank()} finished", flush=True)
