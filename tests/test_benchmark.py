"""demos/benchmark.py runs (a smoke test, never a timing): every implementation builds, they
agree on the first losses, and an unknown workload is refused by name."""
import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "demos" / "benchmark.py"


def load():
    spec = importlib.util.spec_from_file_location("benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_implementations_agree(capsys):
    bench = load()
    results = bench.main(["--repeats", "2", "--warmup", "1", "--inner", "1",
                          "--impls", "minienc,numpy"])
    times, memory, notes = results["mlp_ae"]
    assert set(times) == {"minienc", "numpy"} and all(len(t) == 2 for t in times.values())
    assert not [n for n in notes if "WARNING" in n]     # same losses: the same work is timed
    out = capsys.readouterr().out
    assert "| mlp_ae | minienc |" in out and "vs NumPy floor" in out


def test_unknown_workload_is_refused():
    with pytest.raises(SystemExit):
        load().main(["--workloads", "nope"])
