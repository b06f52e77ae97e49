"""benchmarks/benchmark.py runs (a smoke test, never a timing): every workload builds in every
implementation, the implementations agree on the first losses (so the same work is timed, and
minienc's models match their PyTorch twins), the header names the BLAS kernels, the compute
table counts each step's matrix-product FLOPs, the alone table runs each implementation in its
own process, and an unknown workload is refused by name."""
import importlib.util
import pathlib
import sys

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
    assert "kernel" in out.splitlines()[1]                    # the header names NumPy's BLAS kernel
    alone_rows = [line for line in out.splitlines() if line.startswith("| mlp_ae |") and
                  line.count("|") == 4]                       # workload, minienc, floor (no PyTorch: no ratio)
    assert "thread) ms/step" in out or "threads) ms/step" in out
    assert len(alone_rows) == 1, out


def test_the_flop_count_is_the_products_of_a_step():
    """mlp_ae: every Linear (in, out) of a batch of 256 costs 2*256*in*out forward and twice that
    backward, except the first layer's input gradient (the data needs none)."""
    pytest.importorskip("torch")
    bench = load()
    sizes = [64, 256, 256, 32, 256, 256, 64]
    layers = [a * b for a, b in zip(sizes, sizes[1:])]
    expected = 2 * 256 * (3 * sum(layers) - layers[0])
    assert bench.machine.matmul_flops(bench.WORKLOADS["mlp_ae"]()) == expected


def test_every_workload_agrees_with_its_twins(capsys):
    """Small batches keep it quick; PyTorch joins where it is installed."""
    bench = load()
    try:
        import torch  # noqa: F401
        impls = "minienc,numpy,torch"
    except ImportError:
        impls = "minienc,numpy"
    results = bench.main(["--workloads", "all", "--batch", "8", "--repeats", "2", "--warmup", "0",
                          "--inner", "1", "--impls", impls, "--no-alone"])
    assert set(results) == {"mlp_ae", "simclr_mlp", "conv_ae", "vit_mae", "vit_jepa"}
    for name, (times, _, notes) in results.items():
        assert "minienc" in times and ("torch" in times) == ("torch" in impls), name
        assert ("numpy" in times) == (name in ("mlp_ae", "simclr_mlp")), name
        assert not [n for n in notes if "WARNING" in n], notes
    out = capsys.readouterr().out
    assert "| vit_jepa | minienc |" in out
    if "torch" in impls:
        assert "GEMM peak here" in out and "| vit_mae | " in out.split("compute:")[1]


def test_without_pytorch_its_columns_are_skipped_with_how_to_install_it(capsys, monkeypatch):
    """The README command on a machine without PyTorch: no crash (the alone table's PyTorch worker
    used to die on the import), a note that names the CPU build, and no PyTorch columns."""
    monkeypatch.setitem(sys.modules, "torch", None)          # `import torch` now raises ImportError
    bench = load()
    results = bench.main(["--workloads", "mlp_ae", "--batch", "8", "--repeats", "1", "--warmup", "0",
                          "--inner", "1", "--threads", "1"])   # the default --impls asks for PyTorch
    assert set(results["mlp_ae"][0]) == {"minienc", "numpy"}
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if line.startswith("# NOTE: PyTorch is not installed")]
    assert len(note) == 1 and "pip install torch --index-url https://download.pytorch.org/whl/cpu" in note[0]
    assert "PyTorch" not in out.replace(note[0], "")          # no column, table or ratio names it
    assert "compute:" not in out and "alone:" in out          # the alone table ran without it


def test_unknown_workload_is_refused():
    with pytest.raises(SystemExit):
        load().main(["--workloads", "nope"])


def test_compare_trees_times_two_checkouts_side_by_side(capsys):
    spec = importlib.util.spec_from_file_location("compare_trees", PATH.parent / "compare_trees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = str(PATH.parents[1])
    module.main(["--a", root, "--b", root, "--workloads", "mlp_ae", "--batch", "8", "--repeats", "3",
                 "--inner", "1", "--clock", "cpu"])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mlp_ae")][0]
    assert "B/A paired median" in line and float(line.split("A ")[1].split(" ms")[0]) > 0
