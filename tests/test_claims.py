"""The claims lab (demos/claims.py): every claim runs end to end for a few steps and gives a row
(an experiment, its numbers, a verdict from the stated rule) and its figure; the rule itself
counts a difference only beyond twice its standard error over seeds."""
import json

import numpy as np
import pytest

from demo_check import DEMOS, THREADS, run_in_process
from test_demo_runs import mnist_folder  # noqa: F401  (the fixture: a 60 + 30 image MNIST folder)

SMOKE = ["--quick", "--steps", "3", "--draws", "2", "--max-train", "600", "--max-test", "150", *THREADS]
VERDICTS = {"holds", "holds only partly", "does not hold"}


@pytest.fixture
def claims(monkeypatch):
    monkeypatch.syspath_prepend(str(DEMOS))
    import claims
    return claims


@pytest.mark.parametrize("name", ["autoencoder", "denoising", "vae", "negatives", "masking", "jepa"])
def test_each_claim_runs_and_gives_a_verdict_and_a_figure(name, tmp_path, monkeypatch, capsys):
    run_in_process("claims.py", "--claim", name, *SMOKE, "--out", tmp_path, monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    assert row["name"] == name and row["verdict"] in VERDICTS, out
    assert row["experiment"] and row["numbers"] and row["detail"]
    assert (tmp_path / f"claim_{name}.png").stat().st_size > 0
    table = (tmp_path / "claims.md").read_text()
    assert f"**{row['verdict']}**" in table and table.count("\n| ") == 2   # header and one row


def test_a_difference_counts_only_beyond_twice_its_standard_error(claims):
    assert claims.counts([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])[0]           # clear: +0.11 +- 0.006
    ok, diff, se = claims.counts([0.9, 0.7, 0.95], [0.8, 0.8, 0.8])        # +0.05 +- 0.076
    assert not ok and diff == pytest.approx(0.05) and se > diff / 2
    assert not claims.counts([0.7, 0.71, 0.72], [0.8, 0.8, 0.8])[0]        # clearly worse
    assert not claims.counts([0.99], [0.1])[0]                              # one seed: no spread
    # paired by seed: a constant offset on noisy values counts
    a = np.array([0.5, 0.9, 0.7])
    assert claims.counts(a + 0.01, a)[0]


def test_a_claim_holds_when_every_comparison_counts(claims):
    assert claims.verdict([True, True]) == "holds"
    assert claims.verdict([True, False]) == "holds only partly"
    assert claims.verdict([False, False]) == "does not hold"


@pytest.mark.parametrize("claim", ["denoising", "vae"])
def test_the_lab_runs_on_the_canvas_and_an_mnist_folder(claim, tmp_path, monkeypatch, mnist_folder):
    for data in ("digits-canvas:32", f"mnist:{mnist_folder}"):
        run_in_process("claims.py", "--claim", claim, "--data", data, *SMOKE,
                       "--out", tmp_path / data[:5], monkeypatch=monkeypatch)
        (row,) = json.loads((tmp_path / data[:5] / "results.json").read_text())["rows"]
        assert row["verdict"] in VERDICTS
