"""Every demo command README names runs end to end (a few steps each: a smoke run, so README
cannot point at a broken script). The numbers they print are not asserted here beyond being
accuracies; each objective's own tests check that its training lowers its loss.

The demos run in this process (tests/demo_check.py: the imports are paid once), compare.py's
too, each as `python demos/x.py` would run it; tests/test_demo_runs.py runs one in processes of
its own (it stops it with a real Ctrl-C), as do tests/test_readme.py and
test_distributed_launches.py."""
import ast
import json
import subprocess

import numpy as np
import pytest

from demo_check import DEMOS, ROOT, THREADS, call_in_process, run_in_process
from minienc import run_folder

SUBSET = ["--max-train", "300", "--max-test", "100"]   # of the digits (a smoke run's data)


def test_compare_runs_every_image_objective(tmp_path, monkeypatch, capsys):
    """compare.py's own code from end to end; the process it starts for each objective runs in
    this one instead (call_in_process: the same command, its output into the same log.txt)."""
    monkeypatch.setattr(subprocess, "call", call_in_process(monkeypatch))
    run_in_process("compare.py", "--quick", "--draws", "3", *THREADS, "--out", tmp_path,
                   monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "compare.json").read_text())
    trained = [r["method"] for r in rows if not r.get("baseline")]
    assert trained == ["autoencoder", "denoising AE", "VAE", "triplet", "SimCLR", "MoCo v2", "MAE",
                       "JEPA", "LeJEPA", "BYOL", "SimSiam", "VICReg", "Barlow Twins", "DINO"], out
    for r in rows:
        assert 0.0 <= r["fewshot"] <= 1.0 and 0.0 <= r["linear"] <= 1.0 and r["rankme"] >= 1.0 - 1e-6
    random_rows = [r["method"] for r in rows if r["method"].startswith("random ")]
    for label in trained:  # every encoder's random init is shown (merged where they score the same)
        assert any(label in name for name in random_rows), (label, random_rows)
    assert "raw pixels" in {r["method"] for r in rows}
    assert not any("context encoder" in r["method"] for r in rows), "a demo's extra row is no baseline"
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert "| **SimCLR** |" in (tmp_path / "compare.md").read_text()
    for name in ("ae", "dae", "vae", "triplet", "simclr", "moco", "mae", "jepa", "lejepa"):
        assert list((tmp_path / name).glob("*.png")), f"{name} saved no figure"
    for name in ("byol", "simsiam", "vicreg", "barlow", "dino"):   # loss and collapse gauges over training
        assert (tmp_path / name / "curves.png").stat().st_size > 0, f"{name} drew no curves"
        gauges = json.loads((tmp_path / name / "gauges.json").read_text())
        assert gauges["step"][0] == 0 and len(gauges["RankMe (encoder)"]) == len(gauges["step"]) >= 2
        assert (tmp_path / name / "gauges.png").stat().st_size > 0


def test_mlm_demo_runs(tmp_path, monkeypatch, capsys):
    run_in_process("mlm.py", "--steps", "10", "--dim", "32", "--depth", "1", "--heads", "2",
                   *THREADS, "--out", tmp_path, monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "frequency" in out.lower(), out


def test_augmentations_demo_runs(tmp_path, monkeypatch):
    run_in_process("augmentations.py", "--out", tmp_path, monkeypatch=monkeypatch)
    assert list(tmp_path.glob("*.png"))


def test_jepa_demo_runs_with_its_mae_row(tmp_path, monkeypatch, capsys):
    """README's main demo, with the side-by-side MAE run that compare.py skips. The MAE run at
    the same CPU time exists only where an MAE step is cheaper than a JEPA step, which 6 steps
    of a 16-wide ViT on a busy machine need not show (it failed a run of the suite): the demo
    then says why in its budget lines, and the test holds it to one or the other."""
    run_in_process("jepa.py", "--steps", "6", "--eval-every", "3", "--draws", "3", "--dim", "16",
                   "--depth", "1", *SUBSET, *THREADS, "--out", tmp_path, monkeypatch=monkeypatch)
    methods = [r["method"] for r in json.loads((tmp_path / "results.json").read_text())]
    assert methods[0] == "JEPA (pooled)", methods
    same_time = "MAE (same CPU time)" in methods
    assert "MAE (same steps)" in methods, methods
    assert same_time or "MAE, same CPU time: not run" in capsys.readouterr().out, methods
    assert "I-JEPA context encoder" not in methods, "a shared encoder is its own target"
    for name in ("masks", "curves", "jepa_vs_mae", "loss", "mae/loss") + \
            (("mae_same_time/loss",) if same_time else ()):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    runs = json.loads((tmp_path / "jepa_vs_mae.json").read_text())
    assert set(runs) == {"JEPA", "MAE (same steps)"} | ({"MAE (same CPU time)"} if same_time else set())
    assert runs["JEPA"]["step"][0] == 0 and len(runs["JEPA"]["cpu_s"]) == len(runs["JEPA"]["fewshot"])


def test_lejepa_demo_runs_with_augmented_masked_and_local_views(tmp_path, monkeypatch):
    for i, flags in enumerate([["--num-views", "2", "--local-views", "2"],
                               ["--views", "mask", "--local-views", "1"]]):
        folder = tmp_path / str(i)
        run_in_process("lejepa.py", "--steps", "4", "--eval-every", "2", "--draws", "3",
                       "--dim", "16", "--depth", "1", *SUBSET, *THREADS, "--out", folder, *flags,
                       monkeypatch=monkeypatch)
        records = json.loads((folder / "results.json").read_text())
        assert records[0]["method"] == "LeJEPA" and "random init" in [r["method"] for r in records], records
        terms = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert {"prediction", "sigreg"} <= set(terms[-1]), terms[-1]
        assert (folder / "views.png").stat().st_size > 0 and (folder / "curves.png").stat().st_size > 0


def test_the_collapse_ablations_are_one_flag_away(tmp_path, monkeypatch):
    """SimSiam without its stop-gradient and DINO without centring (and with multi-crop) run;
    their rows and gauges say which variant ran."""
    for script, flags, name in [("simsiam.py", ["--no-stop-gradient"], "SimSiam (no stop-gradient)"),
                                ("dino.py", ["--no-center", "--local-crops", "2"], "DINO (no centring)")]:
        out = tmp_path / script
        run_in_process(script, *flags, "--steps", "5", "--monitor-every", "5", "--draws", "3",
                       *SUBSET, *THREADS, "--out", out,
                       monkeypatch=monkeypatch)
        assert json.loads((out / "results.json").read_text())[0]["method"] == name
        assert (out / "gauges.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "dino.py" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["center_norm"] == 0.0 for row in rows)          # no centring: c stays 0


def _refused_then_resumed(script, flags, tmp_path, monkeypatch, result):
    """A second run into a finished folder is refused; --resume reads the run back with the same
    numbers (nothing trained again)."""
    first = json.loads((tmp_path / result).read_text())
    with pytest.raises(SystemExit, match="already holds a finished run"):
        run_in_process(script, *flags, monkeypatch=monkeypatch)
    run_in_process(script, *flags, "--resume", monkeypatch=monkeypatch)
    again = json.loads((tmp_path / result).read_text())
    for records in (first, again):
        for r in (records if isinstance(records, list) else []):
            r.pop("train_s")
    assert again == first


def test_collapse_lab_runs_draws_every_variant_and_resumes(tmp_path, monkeypatch):
    flags = ["--steps", "4", "--every", "2", "--dim", "16", "--depth", "1",
             "--only", "default,ijepa-no-sg,lejepa", *THREADS, "--out", tmp_path]
    run_in_process("collapse.py", *flags, monkeypatch=monkeypatch)
    results = json.loads((tmp_path / "collapse.json").read_text())
    assert [r["name"] for r in results] == ["default", "ijepa-no-sg", "lejepa"]
    for r in results:
        assert r["step"] == [0, 2, 4] and len(r["rankme"]) == len(r["fewshot"]) == 3
    assert (tmp_path / "collapse.png").stat().st_size > 0
    assert "| I-JEPA - EMA - stop-grad |" in (tmp_path / "collapse.md").read_text()
    _refused_then_resumed("collapse.py", flags, tmp_path, monkeypatch, "collapse.json")


def test_keep_demo_decodes_every_encoder_and_resumes(tmp_path, monkeypatch):
    flags = ["--steps", "3", "--decoder-steps", "5", "--dim", "16", "--depth", "1", *THREADS,
             "--out", tmp_path]
    run_in_process("keep.py", *flags, monkeypatch=monkeypatch)
    errors = json.loads((tmp_path / "keep.json").read_text())["decoder_test_mse"]
    assert set(errors) == {"JEPA", "LeJEPA", "MAE", "SimCLR", "random init", "PCA-16 pixels"}
    assert all(0.0 < e < 1.0 for e in errors.values())
    assert (tmp_path / "keep.png").stat().st_size > 0
    _refused_then_resumed("keep.py", flags, tmp_path, monkeypatch, "keep.json")


def test_the_jepa_study_demo_runs_the_released_preset(tmp_path, monkeypatch):
    """demos/jepa_study.py --preset paper: I-JEPA's EMA target, multi-block masks and crop on the
    canvas, with its context-encoder row."""
    run_in_process("jepa_study.py", "--preset", "paper", "--steps", "3", "--eval-every", "3",
                   "--no-mae", "--dim", "16", "--depth", "1", "--draws", "3", *SUBSET, *THREADS,
                   "--out", tmp_path, monkeypatch=monkeypatch)
    methods = [r["method"] for r in json.loads((tmp_path / "results.json").read_text())]
    assert methods[:2] == ["I-JEPA (target, pooled)", "I-JEPA context encoder"], methods
    config = json.loads((tmp_path / "config.json").read_text())["flags"]
    assert config["masks"] == "multiblock" and config["ema"] == [0.996, 1.0] and config["targets"] == 4
    for name in ("masks", "curves", "loss", "evaluation", "embeddings"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + np.asarray(array, np.uint8).tobytes())


def test_jepa_demo_on_60000_images_keeps_its_curves_on_a_fixed_subset(tmp_path, monkeypatch, capsys):
    """Issue 14's scale: on a 60,000-image IDX folder the held-out curves still encode a fixed
    1,000 / 500-image subset, and the final evaluation's cost is printed."""
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, (10, 8, 8))
    for split, n in (("train", 60000), ("t10k", 500)):
        labels = rng.integers(0, 10, n)
        noise = rng.integers(-40, 40, (n, 8, 8))
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.clip(templates[labels] + noise, 0, 255))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    run_in_process("jepa.py", "--data", f"mnist:{tmp_path}", "--steps", "4", "--eval-every", "2",
                   "--no-mae", "--dim", "16", "--depth", "1", "--heads", "2", "--draws", "3",
                   *THREADS, "--out", tmp_path / "run", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "60000 train" in out, out[-2000:]
    assert "Evaluator(1000 train / 500 test images" in out, out[-2000:]
    assert "final evaluation:" in out and "budgets:" in out


def test_overwrite_removes_the_old_runs_pictures_but_not_other_files(tmp_path, monkeypatch, capsys):
    """--overwrite used to remove only checkpoint, metrics and results: the old run's pictures
    stayed beside the new run's (a figure the new run does not draw then looked like its own)."""
    import argparse
    monkeypatch.syspath_prepend(str(ROOT / "demos"))
    import common
    for name in ("checkpoint.npz", "metrics.jsonl", "results.json", "config.json", "gauges.json",
                 "masks.png", "graph.dot", "log.txt", "notes.md"):
        (tmp_path / name).write_text("old")
    args = argparse.Namespace(out=str(tmp_path), overwrite=True, resume=False, threads=1,
                              device="cpu", seed=0, distributed=False)
    common.start_run(args)
    run_folder.release_folder(tmp_path)   # (the process's claim, which its exit would drop)
    # (.minienc-lock: the folder's claim, which start_run takes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".minienc-lock", "log.txt", "notes.md"]
    assert "removed the old run's checkpoint.npz, config.json, gauges.json, graph.dot, masks.png" \
        in capsys.readouterr().out


def test_compare_refuses_a_folder_holding_a_comparison(tmp_path, monkeypatch, capsys):
    """A --quick run used to replace a full comparison in the same folder without a word."""
    (tmp_path / "simclr").mkdir()
    (tmp_path / "simclr" / "results.json").write_text("[]")
    for flags in ([], ["--quick"]):
        with pytest.raises(SystemExit) as stop:
            run_in_process("compare.py", *flags, "--out", tmp_path, monkeypatch=monkeypatch)
        assert "already holds a comparison (simclr/)" in str(stop.value.code)
        assert "--resume" in str(stop.value.code) and "--overwrite" in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        run_in_process("compare.py", "--resume", "--overwrite", "--out", tmp_path, monkeypatch=monkeypatch)
    assert stop.value.code == 2 and "choose one" in capsys.readouterr().err
    assert (tmp_path / "simclr" / "results.json").read_text() == "[]"     # nothing touched


def test_the_quick_comparison_says_so_and_its_bars_start_at_zero(tmp_path, monkeypatch):
    import matplotlib.figure
    monkeypatch.syspath_prepend(str(ROOT / "demos"))
    import compare
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    rows = [dict(method="SimCLR", linear=0.9, fewshot=0.8, knn=0.85),
            dict(method="raw pixels", linear=0.95, fewshot=0.83, knn=0.97, baseline=True)]
    for quick in (False, True):
        compare.bar_chart(rows, tmp_path / "compare.png", "every objective on digits", quick=quick)
    for fig, quick in zip(drawn, (False, True)):
        ax = fig.axes[0]
        assert ax.get_xlim()[0] == 0
        texts = ax.get_title() + " ".join(t.get_text() for t in ax.texts)
        assert ("QUICK" in texts) == quick and ("not a result" in texts) == quick


def _imported_modules(path):
    """The top-level names of the absolute imports in the file at `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
    return {name.split(".")[0] for name in names}


def test_every_file_atop_demos_is_a_script_that_imports_no_other_demo(monkeypatch, capsys):
    """DESIGN's rule, "demos/: one runnable script per objective (they import only demos/common)":
    helper modules the demos imported (flags.py, jepa_vs_mae.py, jepa_figures.py, claims_lab.py)
    used to sit beside the scripts; the shared code is the package demos/common/ now. Every file
    atop demos/ answers --help as a script, and none is imported by another demo or by common."""
    scripts = {path.stem for path in DEMOS.glob("*.py")}
    assert "common" not in scripts and (DEMOS / "common" / "__init__.py").exists()
    for path in [*DEMOS.glob("*.py"), *(DEMOS / "common").glob("*.py")]:
        siblings = _imported_modules(path) & scripts
        assert not siblings, f"{path.relative_to(ROOT)} imports demos/{', '.join(sorted(siblings))}" \
                             f".py: shared code belongs in demos/common/"
    for script in sorted(scripts):
        with pytest.raises(SystemExit) as stop:
            run_in_process(f"{script}.py", "--help", monkeypatch=monkeypatch)
        assert stop.value.code == 0 and "usage:" in capsys.readouterr().out, script
