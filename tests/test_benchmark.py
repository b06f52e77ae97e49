"""benchmarks/benchmark.py runs (a smoke test, never a timing): every workload builds in every
implementation, the implementations agree on the first losses (so the same work is timed, and
minienc's models match their PyTorch twins), and an unknown workload is refused by name."""
import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py"


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


def test_every_workload_agrees_with_its_twins(capsys):
    """Small batches keep it quick; PyTorch joins where it is installed."""
    bench = load()
    try:
        import torch  # noqa: F401
        impls = "minienc,numpy,torch"
    except ImportError:
        impls = "minienc,numpy"
    results = bench.main(["--workloads", "all", "--batch", "8", "--repeats", "2", "--warmup", "0",
                          "--inner", "1", "--impls", impls])
    assert set(results) == {"mlp_ae", "simclr_mlp", "conv_ae", "vit_mae", "vit_jepa"}
    for name, (times, _, notes) in results.items():
        assert "minienc" in times and ("torch" in times) == ("torch" in impls), name
        assert ("numpy" in times) == (name in ("mlp_ae", "simclr_mlp")), name
        assert not [n for n in notes if "WARNING" in n], notes
    assert "| vit_jepa | minienc |" in capsys.readouterr().out


def test_unknown_workload_is_refused():
    with pytest.raises(SystemExit):
        load().main(["--workloads", "nope"])
