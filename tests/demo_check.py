"""Test helpers shared by the demo tests: run a demo as a script in its own process (what
README's commands do) or in this process (runpy, as `python demos/x.py` would: the suite pays
the imports -- NumPy, matplotlib, scikit-learn -- once, and they cost more than a smoke run's
training, its evaluation and its figures together).

Pass the demos `--threads 1` (THREADS): their start-up probe may otherwise pick two threads
on a moment's idle CPU, and on a machine that other work keeps busy two threads of a tiny model
wait for each other at several times the CPU of one."""
import contextlib
import os
import pathlib
import runpy
import subprocess
import sys
import traceback

from minienc import run_folder

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
    monkeypatch.syspath_prepend(str(DEMOS))
    held = set(run_folder._claimed)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "argv", [str(DEMOS / script), *map(str, args)])
            runpy.run_path(str(DEMOS / script), run_name="__main__")
    finally:   # the demo's process would end here, and with it its claim on --out
        for folder in set(run_folder._claimed) - held:
            run_folder.release_folder(folder)


def call_in_process(monkeypatch):
    """A stand-in for subprocess.call that runs a command `[python, demos/<script>, *args]`
    (what compare.py launches for each objective) through run_in_process instead, its output
    into the file given as stdout, and returns the exit status the process would have had."""
    def call(command, stdout=None, stderr=None):
        _, script, *args = command
        errors = stdout if stderr == subprocess.STDOUT else stderr
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(errors):
            try:
                run_in_process(pathlib.Path(script).name, *args, monkeypatch=monkeypatch)
            except SystemExit as stop:
                if stop.code in (None, 0):
                    return 0
                print(stop.code, file=sys.stderr)
                return stop.code if isinstance(stop.code, int) else 1
            except Exception:
                traceback.print_exc()
                return 1
        return 0
    return call
