"""Test helpers shared by the demo tests: run a demo as a script in its own process (what
README's commands do) or in this process (runpy, as `python demos/x.py` would: the suite pays
the imports once, which cost more than a smoke run's training).

Pass the demos `--threads 1` (THREADS): their start-up probe may otherwise pick two threads
on a moment's idle CPU, and on a machine that other work keeps busy two threads of a tiny model
wait for each other at several times the CPU of one."""
import os
import pathlib
import runpy
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"
ENV = dict(os.environ, MPLBACKEND="Agg", MINIENC_DEVICE="cpu", OPENBLAS_NUM_THREADS="1")
THREADS = ["--threads", "1"]


def run_demo(script, *args, timeout=600):
    """`python demos/<script> args` in a fresh process; asserts it exits 0; returns its stdout."""
    run = subprocess.run([sys.executable, str(DEMOS / script), *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT, env=ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def run_in_process(script, *args, monkeypatch):
    """demos/<script> run as __main__ in this process with sys.argv = [script, *args]."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [str(DEMOS / script), *map(str, args)])
    monkeypatch.syspath_prepend(str(DEMOS))
    runpy.run_path(str(DEMOS / script), run_name="__main__")
