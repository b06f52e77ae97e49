"""A demo's user error is one line that names the flag, with argparse's exit status 2, before
anything runs: `--steps 0` used to surface as "WarmupCosine: total_steps" inside a traceback,
`--data foo` and `--device cuda` without CuPy as tracebacks too (issue 26)."""
import pytest

from minienc import backend

from demo_check import run_in_process

IMAGE_DEMOS = ["autoencoder.py", "denoising.py", "vae.py", "triplet.py", "simclr.py", "moco.py",
               "mae.py", "jepa.py", "lejepa.py", "byol.py", "simsiam.py", "vicreg.py", "barlow.py",
               "dino.py"]
BAD = {   # flag -> (its bad value, what the one line must say)
    "--steps": ("0", "argument --steps: must be at least 1, got 0"),
    "--data": ("foo", "argument --data: 'foo' not understood"),
    "--device": ("cuda", "argument --device: device 'cuda' needs CuPy"),
}
CASES = [(demo, flag) for demo in IMAGE_DEMOS for flag in BAD]
CASES += [("quickstart.py", "--steps"), ("quickstart.py", "--device"), ("mlm.py", "--steps"), ("mlm.py", "--device"), ("compare.py", "--data"),
          ("compare.py", "--device"), ("augmentations.py", "--data"), ("augmentations.py", "--device"),
          ("claims.py", "--steps"), ("claims.py", "--data"), ("claims.py", "--device")]


@pytest.mark.parametrize("demo, flag", CASES)
def test_a_bad_flag_is_one_line_naming_it(demo, flag, tmp_path, monkeypatch, capsys):
    if flag == "--device" and backend.cuda_available():
        pytest.skip("CuPy sees a GPU here, so --device cuda is no mistake")
    value, said = BAD[flag]
    out = [] if demo == "quickstart.py" else ["--out", tmp_path / "run"]   # it writes nothing
    with pytest.raises(SystemExit) as stop:
        run_in_process(demo, flag, value, *out, monkeypatch=monkeypatch)
    captured = capsys.readouterr()
    assert stop.value.code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and lines[0].startswith(f"{demo}: error:"), lines
    assert not (tmp_path / "run").exists()              # refused before anything was written


def test_a_data_folder_that_is_not_there_is_named(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        run_in_process("simclr.py", "--data", f"mnist:{tmp_path / 'nowhere'}", "--out", tmp_path / "run",
                       monkeypatch=monkeypatch)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "argument --data:" in lines[0]
    assert "nowhere' is not a folder" in lines[0]


RECIPE_BAD = {   # a recipe flag -> a demo that takes it, its bad value, and what the one line says;
    # each was taken when the flags were read and refused later, in a traceback that named the
    # augmentation, layer or schedule built from it (RandomResizedCrop: scale, ...), or never
    "--crop": ("simclr.py", "0", "argument --crop: must be in (0.0, 1.0], got 0.0"),
    "--noise": ("triplet.py", "-0.1", "argument --noise: must be a finite number >= 0, got -0.1"),
    "--hidden": ("moco.py", "0", "argument --hidden: must be a positive integer, got 0"),
    "--warmup-steps": ("simclr.py", "-1", "argument --warmup-steps: must be an integer >= 0, got -1"),
    "--weight-decay": ("barlow.py", "nan", "argument --weight-decay: must be a finite number >= 0, got nan"),
    "--temperature": ("simclr.py", "0", "argument --temperature: must be a finite number > 0, got 0.0"),
    "--lr": ("autoencoder.py", "nan", "argument --lr: must be a finite number >= 0, got nan"),
    "--latent-dim": ("vae.py", "0", "argument --latent-dim: must be a positive integer, got 0"),
    "--sigma": ("autoencoder.py", "1e-20", "argument --sigma: must be at least 1e-15, got 1e-20"),
    "--monitor-every": ("byol.py", "0", "argument --monitor-every: must be a positive integer, got 0"),
}


@pytest.mark.parametrize("flag", list(RECIPE_BAD))
def test_a_recipe_flag_that_cannot_work_is_one_line_naming_it(flag, tmp_path, monkeypatch, capsys):
    demo, value, said = RECIPE_BAD[flag]
    with pytest.raises(SystemExit) as stop:
        run_in_process(demo, flag, value, "--out", tmp_path / "run", monkeypatch=monkeypatch)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and said in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("demo", ["jepa.py", "mlm.py"])
def test_help_gives_a_default_once_and_never_none(demo, monkeypatch, capsys):
    """--help read `--device  cpu or cuda (default: MINIENC_DEVICE or cpu) (default: None)`:
    argparse's formatter appended a second default, None, to help that already said it."""
    with pytest.raises(SystemExit) as stop:
        run_in_process(demo, "--help", monkeypatch=monkeypatch)
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps the lines
    assert stop.value.code == 0
    assert "(default: None)" not in text, text
    assert "(default: MINIENC_DEVICE or cpu)" in text and "optimizer steps" in text
    assert "(default: 1200)" in text or "(default: 2232)" in text   # a real default still shown


def test_the_claims_help_gives_real_defaults_only(monkeypatch, capsys):
    """claims.py built its own argparse parser: `(default: None)` after six flags, and a bad
    flag's usage block in place of DemoParser's one line (the cases above)."""
    with pytest.raises(SystemExit) as stop:
        run_in_process("claims.py", "--help", monkeypatch=monkeypatch)
    text = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0 and "(default: None)" not in text, text
    assert "seeds per compared model (--seed, +1, ...) (default: 3)" in text
