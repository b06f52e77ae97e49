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


COMMAND = re.compile(r"python ((?:demos|benchmarks)/\w+\.py)([^`\n|]*)`?(?: \(([^)\n]*)\))?")
BARE = re.compile(r"`(\w+\.py) (--[^`]*)`")   # `dino.py --no-center`, a demo named by its file


def readme_commands():
    """(script, flags) of every command README shows: `python demos/x.py --flag`, a table's
    `python demos/x.py` (`--flag`), and a demo named bare, `x.py --flag`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = [(script, rest + " " + more) for script, rest, more in COMMAND.findall(text)]
    found += [(f"demos/{script}", rest) for script, rest in BARE.findall(text)]
    return sorted({(script, tuple(re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)))
                   for script, rest in found})


def help_text(script, capsys, monkeypatch):
    """`python <script> --help` as the script's own parser prints it (run in this process)."""
    import runpy
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), "--help"])
    monkeypatch.syspath_prepend(str((ROOT / script).parent))
    monkeypatch.syspath_prepend(str(ROOT))
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), f"{script} --help exited {stop.code}"
    return capsys.readouterr().out


def test_every_command_in_readme_names_a_script_and_flags_it_has(capsys, monkeypatch):
    """A renamed flag or a moved script breaks README's commands silently; this catches both."""
    commands = readme_commands()
    assert len(commands) >= 10, commands
    helps = {}
    for script, flags in commands:
        assert (ROOT / script).is_file(), f"README runs {script}, which does not exist"
        if flags and script not in helps:
            helps[script] = help_text(script, capsys, monkeypatch)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[script]), \
                f"README passes {flag} to {script}, whose --help does not list it"


def setup_commands():
    """{number: command} of README's "Set up and run" block: the line after each `# N.` comment."""
    block = re.search(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                      flags=re.S | re.M).group(1)
    return dict(re.findall(r"^# (\d+)\..*\n(.+)$", block, flags=re.M))


def test_readme_test_command_is_what_ci_runs():
    """README's second command is .ci/run's, word for word, and .ci/run sets nothing else that the
    command would need (the test settings are conftest.py's defaults): a reader running README's
    command runs the suite CI runs, the two-process tests included."""
    command = setup_commands()["2"]
    assert "[demos,test,distributed]" in command and command.endswith("python -m pytest -q tests")
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in script, f".ci/run does not run README's command {command!r}"
    assert not [line for line in script if line.startswith("export")], "settings belong in conftest.py"


def test_every_file_the_commands_table_says_a_command_writes_is_written_by_its_code():
    """"What each command takes and writes" (docs/training.md, which README links): each file a
    row names appears in the code of the row's scripts (or the shared code they call), so a
    renamed picture cannot leave the table behind."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    table = text.split("## What each command takes and writes")[1].split("\n## ")[0]
    shared = "".join(p.read_text() for p in [*(ROOT / "demos" / "common").glob("*.py"), *(ROOT / "minienc").rglob("*.py")])
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 10, table
    for command, _, writes in rows:
        scripts = re.findall(r"(\w+\.py)", command)
        code = shared + "".join((ROOT / folder / s).read_text() for s in scripts
                                for folder in ("demos", "benchmarks") if (ROOT / folder / s).exists())
        assert scripts, command
        for name in re.findall(r"`(\w+\.(?:png|json|md|txt|dot))`", writes):
            assert name in code, f"README says {', '.join(scripts)} writes {name}; its code never names it"
