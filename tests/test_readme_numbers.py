"""docs/numbers.py, the registry of every result number README and docs/ quote: complete for
README's results (every percentage there has an entry), never stale (every entry's text is still
in its file), runnable (every command's script takes the flags it is given), and its check reads
a run's results.json as the registry says."""
import collections
import importlib.util
import json
import re

import pytest

from demo_check import ROOT
from test_readme import help_text

RESULTS_SECTIONS = ("## Every objective, side by side", "## JEPA: predicting embeddings, not pixels",
                    "## Several processes", "## Speed", "## On a GPU")


def numbers():
    spec = importlib.util.spec_from_file_location("numbers", ROOT / "docs" / "numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^(?=## )", text, flags=re.M)
    found = [s for s in sections if s.startswith(RESULTS_SECTIONS)]
    assert len(found) == len(RESULTS_SECTIONS), "a results section of README was renamed"
    return "".join(found)


def test_every_percentage_in_readmes_results_has_an_entry():
    quoted = collections.Counter(n.quoted for n in numbers().registry() if n.file == "README.md")
    percentages = collections.Counter(re.findall(r"\d+(?:\.\d+)?%", readme_results()))
    missing = percentages - quoted
    assert not missing, f"README quotes these without an entry in docs/numbers.py: {dict(missing)}"


def test_every_entry_is_still_quoted_in_its_file():
    registry = numbers().registry()
    assert len(registry) > 300
    texts = {}
    for n in registry:
        text = texts.setdefault(n.file, (ROOT / n.file).read_text(encoding="utf-8"))
        assert n.quoted in text, f"{n.file} no longer quotes {n.quoted} (docs/numbers.py: {n.command})"


def test_every_command_runs_a_script_that_takes_its_flags(capsys, monkeypatch):
    commands = {c for n in numbers().registry() for c in n.command.split("; ") if c.startswith("python ")}
    assert any("demos/jepa.py" in c for c in commands)
    helps = {}
    for command in commands:
        script = re.match(r"python (?:-m pytest -q )?(\S+\.py)", command).group(1)
        assert (ROOT / script).is_file(), command
        if script.startswith("demos/"):
            helps.setdefault(script, help_text(script, capsys, monkeypatch))
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", command):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[script]), (command, flag)


def test_the_check_reads_a_run_as_the_registry_says(tmp_path):
    module = numbers()
    entry = next(n for n in module.registry() if n.file == "README.md" and n.key == "fewshot"
                 and n.record == {"method": "SimCLR"})
    assert module.lookup(entry, root=tmp_path) is None                     # no run yet: not checked
    path = tmp_path / entry.results
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"method": "raw pixels", "fewshot": 0.5},
                                {"method": "SimCLR", "fewshot": 0.94567}]))
    assert module.lookup(entry, root=tmp_path) == "94.6%"
    collapse = module.Number("README.md", "1.1", "", "c.json", {"name": "no-sg"}, "rankme[-1]", "f1")
    (tmp_path / "c.json").write_text(json.dumps([{"name": "no-sg", "rankme": [2.8, 1.64]}]))
    assert module.lookup(collapse, root=tmp_path) == "1.6"
    with pytest.raises(KeyError, match="no record with name 'nope'"):
        module.lookup(module.Number("x", "1", "", "c.json", {"name": "nope"}, "rankme"), root=tmp_path)
