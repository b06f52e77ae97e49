"""Every demo command README names runs end to end (a few steps each: a smoke run, so README
cannot point at a broken script). The numbers they print are not asserted here beyond being
accuracies; each objective's own tests check that its training lowers its loss."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = dict(os.environ, MPLBACKEND="Agg", MINIENC_DEVICE="cpu", OPENBLAS_NUM_THREADS="1")


def run_demo(*args, timeout=600):
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_compare_runs_every_image_objective(tmp_path):
    out = run_demo(ROOT / "demos" / "compare.py", "--quick", "--draws", "3", "--out", tmp_path)
    rows = json.loads((tmp_path / "compare.json").read_text())
    trained = [r["method"] for r in rows if not r.get("baseline")]
    assert trained == ["autoencoder", "denoising AE", "VAE", "triplet", "SimCLR", "MoCo v2", "MAE",
                       "I-JEPA", "LeJEPA", "BYOL", "SimSiam", "VICReg", "Barlow Twins", "DINO"], out
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


def test_mlm_demo_runs(tmp_path):
    out = run_demo(ROOT / "demos" / "mlm.py", "--epochs", "1", "--dim", "32", "--depth", "1",
                   "--heads", "2", "--out", tmp_path)
    assert "frequency" in out.lower(), out


def test_augmentations_demo_runs(tmp_path):
    run_demo(ROOT / "demos" / "augmentations.py", "--out", tmp_path)
    assert list(tmp_path.glob("*.png"))


def test_jepa_demo_runs_with_its_mae_row(tmp_path):
    """README's main demo, with the side-by-side MAE run that compare.py skips."""
    run_demo(ROOT / "demos" / "jepa.py", "--steps", "6", "--monitor-every", "3", "--draws", "3",
             "--out", tmp_path)
    methods = [r["method"] for r in json.loads((tmp_path / "results.json").read_text())]
    assert any("JEPA" in m for m in methods) and any("MAE" in m for m in methods), methods
    assert "I-JEPA context encoder" in methods, methods
    assert (tmp_path / "masks.png").stat().st_size > 0


def test_lejepa_demo_runs_with_augmented_masked_and_local_views(tmp_path):
    for i, flags in enumerate([["--num-views", "2", "--local-views", "2"],
                               ["--views", "mask", "--local-views", "1"]]):
        folder = tmp_path / str(i)
        out = run_demo(ROOT / "demos" / "lejepa.py", "--steps", "4", "--monitor-every", "2",
                       "--draws", "3", "--dim", "16", "--depth", "1", "--out", folder, *flags)
        records = json.loads((folder / "results.json").read_text())
        assert records[0]["method"] == "LeJEPA" and "random init" in [r["method"] for r in records], out
        terms = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert {"prediction", "sigreg"} <= set(terms[-1]), terms[-1]
        assert (folder / "views.png").stat().st_size > 0 and (folder / "curves.png").stat().st_size > 0


def test_the_collapse_ablations_are_one_flag_away(tmp_path):
    """SimSiam without its stop-gradient and DINO without centring (and with multi-crop) run;
    their rows and gauges say which variant ran."""
    for script, flags, name in [("simsiam.py", ["--no-stop-gradient"], "SimSiam (no stop-gradient)"),
                                ("dino.py", ["--no-center", "--local-crops", "2"], "DINO (no centring)")]:
        out = tmp_path / script
        run_demo(ROOT / "demos" / script, *flags, "--epochs", "1", "--monitor-every", "5",
                 "--draws", "3", "--out", out)
        assert json.loads((out / "results.json").read_text())[0]["method"] == name
        assert (out / "gauges.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "dino.py" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["center_norm"] == 0.0 for row in rows)          # no centring: c stays 0
