"""The checks that need several processes, run by tests/test_distributed_launches.py as

    mpiexec -n 2 python tests/distributed_checks.py [name ...]

Each check runs on every rank; rank 0 prints one line per check, `CHECK {"name": ..., "ok": ...,
"detail": ...}`, ok only if it passed on every rank. The checks: tests/distributed_equivalence.py
(W ranks with a global batch of B, B / W each, against this same process computing alone,
distributed.alone(), with the whole batch of B, in float64, after every one of 5 optimizer
steps; the gradient check across ranks) and tests/distributed_machinery.py (the collectives, the
Trainer's pieces, signals, the NCCL engine over MPI, refusals on every rank), in that order.
Their helpers: tests/mpi_check.py.
"""
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minienc import distributed  # noqa: E402

from mpi_check import CHECKS, rank  # noqa: E402
import distributed_equivalence  # noqa: E402,F401 (its checks join CHECKS)
import distributed_machinery  # noqa: E402,F401 (its checks join CHECKS)


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
