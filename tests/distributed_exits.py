"""Ways one rank can part from the others, each a run of its own, started by
tests/test_distributed.py as

    mpiexec -n 2 python tests/distributed_exits.py <scenario>

Each must end the whole job promptly, with a line that names the rank and what it was doing,
never leave a rank waiting in a collective (docs/distributed.md, "Errors").

A script, not a test module (pytest collects no file of this name): the assertions are in
tests/test_distributed.py::test_a_rank_that_parts_from_the_others_ends_every_rank, which fails a
scenario whose job ends with status 0, whose stderr lacks its expected line, in which a rank
prints "finished", or that outlasts the launch's time limit (a rank left waiting)."""
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


if __name__ == "__main__":
    distributed.init()
    SCENARIOS[sys.argv[1]]()
    print(f"rank {distributed.rank()} finished", flush=True)
