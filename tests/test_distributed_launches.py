"""minienc.distributed across two processes, each launch of `mpiexec -n 2` bounded in time
(skipped, with the reason, without mpi4py and a launcher): the checks of
tests/distributed_checks.py, run once and each made a test of its own; the ways a rank can part
from the others (tests/distributed_exits.py); a normal end, a demo refused on every rank, and a
demo trained by two. In one process (a world of one, the NCCL engine at world size 1):
tests/test_distributed.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from minienc import distributed
from minienc.data import BatchIterator

from distributed_checks import CHECKS
# _world_of_one is autouse: each test here also begins and ends in a world of one
from test_distributed import ROOT, _world_of_one  # noqa: F401


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed: pip install -e '.[distributed]' (mpi4py and mpich)"
    if shutil.which("mpiexec") is None:
        return "no mpiexec on PATH: pip install -e '.[distributed]' brings MPICH's"
    return None


def _launcher_env():
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env.update(PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", MINIENC_DEVICE="cpu",
               MPLBACKEND="Agg")
    # a collective that hangs ends the job with its name well before the test's own timeout
    env.setdefault("MINIENC_DISTRIBUTED_TIMEOUT", "100")
    return env


@pytest.fixture(scope="module")
def two_ranks():
    missing = _mpi_missing()
    if missing:
        pytest.skip(missing)
    run = subprocess.run(["mpiexec", "-n", "2", sys.executable,
                          str(ROOT / "tests" / "distributed_checks.py")],
                         capture_output=True, text=True, timeout=240, env=_launcher_env(), cwd=ROOT)
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("CHECK "):
            record = json.loads(line[len("CHECK "):])
            results[record["name"]] = record
    return results, run.stdout[-3000:] + run.stderr[-3000:]


def _two_processes(*args, timeout=120, **env):
    """`mpiexec -n 2 python *args`, bounded in time (a hang fails the test, it cannot stall the
    suite): the finished process. env: variables to add."""
    missing = _mpi_missing()
    if missing:
        pytest.skip(missing)
    return subprocess.run(["mpiexec", "-n", "2", sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**_launcher_env(), **env}, cwd=ROOT)


def test_an_exception_on_one_rank_ends_every_rank():
    code = ("import numpy as np; from minienc import distributed; e = distributed.init(); "
            "assert e.rank != 1, 'rank 1 fails'; e.allreduce_(np.zeros(3)); print('finished')")
    run = _two_processes("-c", code)
    assert run.returncode != 0 and "rank 1 fails" in run.stderr, run.stdout + run.stderr
    assert "rank 1 ended with AssertionError" in run.stderr and "finished" not in run.stdout


# the timeout is far above what each scenario needs, so the message shows what ended the job
@pytest.mark.parametrize("scenario, timeout, said", [
    ("exit_mid_step", "100", r"rank 1 has left \(its process ended: the end of its script, "
                             r"sys.exit or SystemExit\) after (\d+) collectives, but rank 0 "
                             r"waits in allreduce_ \(collective #(\d+)\)"),
    ("data_of_different_lengths", "100", r"rank 0's data ended after 2 batches of this epoch "
                                         r"while 1 other rank\(s\) still had a batch"),
    ("collective_timeout", "3", r"rank 0 has waited 3 s in allreduce_ \(collective #\d+\) for "
                                r"the other ranks, past the timeout of 3 s"),
    ("nccl_collective_never_finishes", "3", r"rank 0's allreduce_ \(collective #\d+\) has not "
                                            r"finished on the GPU 3 s after it was enqueued: it "
                                            r"waits for the other ranks, past the timeout of 3 s"),
    ("nccl_reports_an_error", "100", r"rank 0: NCCL reports an error in a collective "
                                     r"\(RuntimeError: NCCL_ERROR_REMOTE_ERROR"),
])
def test_a_rank_that_parts_from_the_others_ends_every_rank(scenario, timeout, said):
    """Regression: a rank that left (sys.exit), whose data ended first or that was stuck left
    the other waiting in a collective forever, spinning a core."""
    run = _two_processes(ROOT / "tests" / "distributed_exits.py", scenario,
                         MINIENC_DISTRIBUTED_TIMEOUT=timeout)
    found = re.search(said, run.stderr)
    assert run.returncode != 0 and found, run.stdout + run.stderr
    if scenario == "exit_mid_step":   # rank 0 waits in the very next collective
        assert int(found[2]) == int(found[1]) + 1, found[0]
    assert "finished" not in run.stdout, run.stdout


def test_a_normal_end_waits_for_the_slower_rank_and_a_refused_timeout():
    """The goodbye at exit is no error: rank 0 ends 5 s after rank 1, which waits asleep and
    past the collectives' timeout (3 s here): at its end rank 0 evaluates and plots for as long
    as that takes, and nobody waits on the rank that has finished."""
    code = ("import time, numpy as np; from minienc import distributed; e = distributed.init(); "
            "e.allreduce_(np.zeros(3)); time.sleep(5 * (e.rank == 0)); print('finished')")
    run = _two_processes("-c", code, MINIENC_DISTRIBUTED_TIMEOUT="3")
    assert run.returncode == 0 and run.stdout.count("finished") == 2, run.stdout + run.stderr
    for bad in ("0", "-1", "inf", "nan", "soon"):
        os.environ[distributed.TIMEOUT_VARIABLE] = bad
        try:
            with pytest.raises(ValueError, match="MINIENC_DISTRIBUTED_TIMEOUT"):
                distributed.init("mpi")
        finally:
            del os.environ[distributed.TIMEOUT_VARIABLE]
    assert distributed.timeout_from() == distributed.DEFAULT_TIMEOUT == 600
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        distributed.init("mpi", timeout=True)


def test_a_demo_refused_on_rank_0_is_refused_on_every_rank(tmp_path):
    """Regression (issue 26): the same `mpiexec -n 2 ... --distributed --out D` run twice: rank 0
    refused the finished run and left, rank 1 trained and waited forever."""
    (tmp_path / "results.json").write_text("{}")
    run = _two_processes(ROOT / "demos" / "simclr.py", "--distributed", "--out", tmp_path,
                         "--epochs", "1", "--threads", "1")
    assert run.returncode != 0, run.stdout + run.stderr
    assert run.stderr.count("already holds a finished run (results.json)") == 1, run.stderr
    assert "has left" not in run.stderr and "step" not in run.stdout   # both refused, at once


@pytest.mark.parametrize("name", list(CHECKS))
def test_under_two_processes(two_ranks, name):
    results, output = two_ranks
    assert name in results, f"{name} did not report; mpiexec output:\n{output}"
    assert results[name]["ok"], results[name]["detail"]


def test_demos_run_under_two_processes(tmp_path):
    """README's command: rank 0 alone prints and writes the run; the other rank's output goes
    to a temporary folder that is gone afterwards."""
    missing = _mpi_missing()
    if missing:
        pytest.skip(missing)

    def launch(*args):
        run = subprocess.run(["mpiexec", "-n", "2", sys.executable, *map(str, args)],
                             capture_output=True, text=True, timeout=300, env=_launcher_env(),
                             cwd=ROOT)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return run.stdout

    def leftovers():
        return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("minienc-rank1-")}

    before = leftovers()
    out = launch(ROOT / "demos" / "simclr.py", "--distributed", "--epochs", "1", "--draws", "3",
                 "--out", tmp_path)
    assert "distributed: 2 processes (mpi)" in out and out.count("evaluation on digits") == 1, out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == len(BatchIterator(np.zeros(1347), batch_size=256, drop_last=True,
                                                    rank=0, world_size=1))
    assert {"results.json", "checkpoint.npz", "loss.png"} <= set(os.listdir(tmp_path))
    assert leftovers() == before, "rank 1's temporary output folder was left behind"
