"""The helpers of the checks that run under `mpiexec -n 2` (tests/distributed_checks.py runs
those of tests/distributed_equivalence.py and tests/distributed_machinery.py): the registry each
check joins by @check, who this rank is, every weight as one vector, the same value on every
rank, and the two runs an equivalence check compares (this process alone with the whole batch,
inside distributed.alone(), against every rank with its share) for STEPS optimizer steps in
float64; and a gradient check whose function reads every rank's inputs."""
import numpy as np

import minienc
from minienc import distributed
from minienc.data import BatchIterator
from minienc.engine import no_grad
from minienc.train import Trainer

F64 = np.float64
STEPS = 5
TOLERANCE = 1e-10

# name -> check, in the order they were defined; here, not in distributed_checks.py, because that
# runs as __main__: a module importing `check` from it would load it again, with a second registry
CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def rank():
    return distributed.rank()


def world():
    return distributed.world_size()


def weights(*models):
    """Every parameter and buffer, flattened, as one float64 host vector."""
    parts = []
    for m in models:
        parts += [np.asarray(v, dtype=F64).ravel() for v in m.state_dict().values()]
    return np.concatenate(parts)


def same_on_every_rank(vector, what):
    everyone = distributed.engine().allgather_object(vector)
    spread = max(float(np.abs(v - everyone[0]).max()) for v in everyone)
    assert spread == 0.0, f"{what}: the ranks differ by {spread:.3g}"


def train(build, make_data, make_optimizer, step, sharded, callbacks=()):
    """Train what `build()` returns for STEPS steps; returns (weights after each step, losses).
    sharded=False: this process alone with the whole batch. sharded=True: every rank with its
    share, from a different initialisation on each rank (the broadcast must undo it)."""
    minienc.manual_seed(7 + (100 * rank() if sharded else 0))
    models = build()
    for m in models.values():
        m.astype(F64)
    history = []

    def record(trainer):
        history.append(weights(*models.values()))

    trainer = Trainer(lambda batch: step(models, batch), make_optimizer(models), models=models,
                      callbacks=[*(cb(models) for cb in callbacks), record], log_every=1,
                      progress=False)
    trainer.fit(make_data(sharded), steps=STEPS)
    return history, trainer.losses


def both_runs(build, make_data, make_optimizer, step, callbacks=()):
    """(one process's weights after each step, its losses, the ranks' weights, their losses)."""
    with distributed.alone():
        reference, ref_losses = train(build, make_data, make_optimizer, step, False, callbacks)
    sharded, losses = train(build, make_data, make_optimizer, step, True, callbacks)
    assert len(sharded) == len(reference) == STEPS, (len(sharded), len(reference))
    return reference, ref_losses, sharded, losses


def compare_runs(name, build, make_data, make_optimizer, step, callbacks=()):
    return same_runs(name, both_runs(build, make_data, make_optimizer, step, callbacks))


def same_runs(name, runs):
    """Assert that both_runs's two runs agree (weights and losses, within TOLERANCE), that the
    weights moved, and that every rank holds the same weights; a line of the gaps."""
    reference, ref_losses, sharded, losses = runs
    worst = [float(np.abs(a - b).max()) for a, b in zip(sharded, reference)]
    assert max(worst) < TOLERANCE, f"{name}: weights differ from one process after steps: {worst}"
    loss_gap = max(abs(a - b) for a, b in zip(losses, ref_losses))
    assert loss_gap < TOLERANCE, f"{name}: logged losses differ by {loss_gap:.3g}"
    moved = float(np.abs(reference[-1] - reference[0]).max())
    assert moved > 1e-4, f"{name}: the weights barely moved ({moved:.3g}): the check is vacuous"
    same_on_every_rank(sharded[-1], name)
    return f"max weight gap per step {['%.1e' % w for w in worst]}, loss gap {loss_gap:.1e}"


def loader(arrays, batch_size, sharded):
    return BatchIterator(*arrays, batch_size=batch_size, drop_last=True, seed=3,
                         rank=rank() if sharded else 0, world_size=world() if sharded else 1)


# ----- gradients across ranks ----------------------------------------------------------------------

def gradcheck_across_ranks(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6):
    """Finite differences of F = sum over ranks of <fn(inputs on that rank), u_r> (u_r random,
    never all ones) against the gradient each rank's backward gives its own inputs: one entry of
    one rank's inputs moved at a time, F summed over the ranks."""
    engine = distributed.engine()
    out = fn(*inputs)
    upstream = np.random.default_rng(50 + rank()).standard_normal(out.shape)
    out.backward(upstream)
    analytic = [x.grad.copy() for x in inputs]

    def total():
        with no_grad():
            local = float((fn(*inputs).data * upstream).sum())
        return sum(engine.allgather_object(local))

    worst = 0.0
    for owner in range(world()):
        for k, x in enumerate(inputs):
            for index in np.ndindex(*x.shape):  # every rank's inputs have the same shapes
                moves = rank() == owner
                if moves:
                    x.data[index] += eps
                plus = total()
                if moves:
                    x.data[index] -= 2 * eps
                minus = total()
                if moves:
                    x.data[index] += eps
                    numeric = (plus - minus) / (2 * eps)
                    error = abs(numeric - analytic[k][index])
                    assert error <= atol + rtol * abs(numeric), (
                        f"input {k} {index} on rank {owner}: numeric {numeric:.8g}, "
                        f"analytic {analytic[k][index]:.8g}")
                    worst = max(worst, error)
    return worst


def inputs_on_each_rank(*shapes, seed):
    """float64 tensors that require grad, of `shapes`, drawn apart on every rank."""
    rng = np.random.default_rng(seed + rank())
    return [minienc.tensor(rng.standard_normal(s), requires_grad=True, dtype=F64) for s in shapes]
