"""README.md cannot rot: its Python blocks run in order in one namespace, as a reader would paste
them, and the main demo it points to trains with a falling loss."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def python_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run():
    blocks = python_blocks()
    assert len(blocks) >= 2, "README.md lost its Python examples"
    namespace = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)


def test_quickstart_loss_falls():
    env = dict(os.environ, MPLBACKEND="Agg", MINIENC_DEVICE="cpu")
    run = subprocess.run([sys.executable, str(ROOT / "demos" / "quickstart.py"), "--steps", "60"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    losses = [float(v) for v in re.findall(r"loss\s+([0-9.]+(?:e-?\d+)?)", run.stdout)]
    assert len(losses) >= 2, run.stdout
    assert losses[-1] < 0.5 * losses[0], run.stdout
