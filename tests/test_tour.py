"""demos/tour.py, the notebook tour (percent format), runs as a script from any folder and writes
every picture it shows."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOUR = ROOT / "demos" / "tour.py"


def test_the_tour_is_a_percent_format_notebook():
    text = TOUR.read_text()
    cells = re.findall(r"^# %%( \[markdown\])?$", text, re.M)
    assert text.startswith("# %% [markdown]") and len(cells) >= 10
    assert sum(1 for c in cells if c) >= 5 and sum(1 for c in cells if not c) >= 5   # prose, code


def test_the_tour_runs_as_a_script(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", MINIENC_DEVICE="cpu", OPENBLAS_NUM_THREADS="1",
               TOUR_STEPS="5", TOUR_OUT=str(tmp_path / "tour"))
    run = subprocess.run([sys.executable, str(TOUR)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "BrokenSoftplus is caught" in run.stdout and "Softplus passes: True" in run.stdout
    out = tmp_path / "tour"
    pictures = ["evaluation.png", "loss.png", "embeddings.png"]
    pictures += ["graph_relu.png", "graph_byol.png"] if shutil.which("dot") else []
    for name in pictures + ["graph_relu.dot", "graph_byol.dot", "metrics.jsonl", "checkpoint.npz"]:
        assert (out / name).stat().st_size > 0, name
    assert (out / "graph_byol.dot").read_text().count("no gradient") == 2   # the EMA target's cut
    again = subprocess.run([sys.executable, str(TOUR)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)    # a second tour is refused, not run over the first
    assert again.returncode == 1 and "already holds a tour" in again.stderr and not again.stdout
    assert "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_the_tour_help_prints_its_flags_and_runs_nothing(tmp_path):
    run = subprocess.run([sys.executable, str(TOUR), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg"))
    assert run.returncode == 0 and "--steps" in run.stdout and "--overwrite" in run.stdout
    assert "L =" not in run.stdout and not (tmp_path / "runs").exists()   # no stop of the tour ran
