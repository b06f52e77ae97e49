"""A run's folder is never reused by accident (issue 15 item 9) nor shared by two processes at
once, a missing resume target is an error, Ctrl-C or SIGTERM stops at a step boundary with a
checkpoint that resumes exactly, a damaged metrics.jsonl is named (and a cut last line
dropped) without blocking a resume, and without matplotlib the Trainer still trains and
checkpoints (issue 15 item 12)."""
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import minienc
from minienc import nn, run_folder
from minienc.optim import Adam, WarmupCosine
from minienc.progress import MetricsFile
from minienc.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make(out_dir, **options):
    minienc.manual_seed(0)
    rs = np.random.default_rng(0)
    data = [minienc.tensor(rs.normal(size=(8, 4))) for _ in range(5)]
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4))

    def step(x):   # the noise comes from the host RNG, which a resume must restore
        noise = minienc.backend.host_rng().normal(size=x.shape).astype(np.float32) * 0.1
        return minienc.mse_loss(model(x + minienc.tensor(noise)), x)
    trainer = Trainer(step, Adam(model.parameters(), lr=1e-2), models=model, log_every=2,
                      out_dir=None if out_dir is None else str(out_dir),
                      schedules={"lr": WarmupCosine(1e-2, total_steps=12, warmup_steps=2)},
                      **{"progress": False, **options})
    return trainer, data, model


def test_a_second_run_in_the_same_folder_is_refused(tmp_path):
    first, data, _ = make(tmp_path)
    first.fit(data, steps=4)
    before = (tmp_path / "metrics.jsonl").read_text()
    second, data, _ = make(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run .*checkpoint.npz, metrics.jsonl"
                                              ".*resume=True.*overwrite=True"):
        second.fit(data, steps=4)
    assert (tmp_path / "metrics.jsonl").read_text() == before   # nothing touched
    assert os.path.realpath(tmp_path) not in run_folder._claimed, \
        "a refused or finished fit still holds its folder"


def test_the_same_trainer_may_continue_in_its_own_folder(tmp_path):
    trainer, data, _ = make(tmp_path)
    trainer.fit(data, steps=4)
    trainer.fit(data, steps=8)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 8 and steps == [2, 4, 6, 8]


def test_overwrite_starts_again_and_forgets_the_old_checkpoint(tmp_path):
    first, data, _ = make(tmp_path)
    first.fit(data, steps=6)
    pictures = [name for name in ("loss.png", "evaluation.png") if (tmp_path / name).exists()]
    assert pictures or "matplotlib" not in sys.modules     # drawn wherever matplotlib is
    second, data, _ = make(tmp_path, checkpoint_every=100)

    def stop(trainer):
        if trainer.step == 3:
            raise RuntimeError("crash before the first checkpoint of the new run")
    second.callbacks.append(stop)
    with pytest.raises(RuntimeError):
        second.fit(data, steps=6, overwrite=True)
    assert not (tmp_path / "checkpoint.npz").exists()   # a resume cannot pick up the old run
    assert not [name for name in pictures if (tmp_path / name).exists()]   # nor a reader its pictures
    third, data, _ = make(tmp_path)
    third.fit(data, steps=6, resume=True)               # so this one starts from step 0
    assert third.losses == first.losses


def test_resume_targets_must_exist(tmp_path):
    trainer, data, _ = make(None)
    with pytest.raises(ValueError, match="resume=True continues the run in out_dir, but out_dir is None"):
        trainer.fit(data, steps=2, resume=True)
    trainer, data, _ = make(tmp_path)
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz.*no such checkpoint"):
        trainer.fit(data, steps=2, resume=missing)
    assert not (tmp_path / "metrics.jsonl").exists()   # refused before anything was written


def test_resume_true_on_an_empty_folder_starts_fresh(tmp_path, capsys):
    trainer, data, _ = make(tmp_path, progress=True)
    trainer.fit(data, steps=2, resume=True)
    assert trainer.step == 2 and "no checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("kind", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_after_the_step_saves_and_resumes_exactly(tmp_path, kind):
    """SIGTERM, what a batch scheduler sends before it kills a job, is Ctrl-C (regression: it
    killed the run without a checkpoint, and --resume started from step 0)."""
    full, data, full_model = make(tmp_path / "full")
    full.fit(data, steps=12)

    # (what they were before: a job started in the background ignores SIGINT from the start)
    int_before, term_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    first, data, _ = make(tmp_path / "split")
    first.callbacks.append(lambda t: signal.raise_signal(kind) if t.step == 7 else None)
    with pytest.raises(KeyboardInterrupt):
        first.fit(data, steps=12)
    assert first.step == 7                      # the step in progress finished, no more
    probe, _, _ = make(None)
    probe.load(str(tmp_path / "split" / "checkpoint.npz"))
    assert probe.step == 7 and len(probe.losses) == 7   # saved on the way out
    second, data, model = make(tmp_path / "split")
    second.fit(data, steps=12, resume=True)
    assert second.losses == full.losses
    for a, b in zip(model.parameters(), full_model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert signal.getsignal(signal.SIGINT) == int_before   # handlers restored
    assert signal.getsignal(signal.SIGTERM) == term_before


def test_without_matplotlib_it_trains_checkpoints_and_says_why(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    trainer, data, _ = make(tmp_path)
    trainer.fit(data, steps=4)
    assert (tmp_path / "checkpoint.npz").exists() and (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "loss.png").exists()
    lines = [x for x in capsys.readouterr().out.splitlines() if "matplotlib" in x]
    assert len(lines) == 1 and "not installed" in lines[0], lines


def test_two_runs_started_at_once_in_one_folder_one_refuses_at_once(tmp_path, monkeypatch):
    """Regression: two runs started together with the same out_dir both passed the check for a
    run already there; one failed later, and the folder described the crashed one. The folder
    is claimed with a lock at the start (by a demo from its first line): the second process is
    refused before it writes."""
    from demo_check import run_in_process
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from minienc.run_folder import claim_folder; "
         "claim_folder(sys.argv[1]); print('claimed', flush=True); sys.stdin.read()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "claimed"
        trainer, data, _ = make(tmp_path)
        with pytest.raises(FileExistsError, match="another process is running in .*minienc-lock"):
            trainer.fit(data, steps=2)
        with pytest.raises(SystemExit, match="autoencoder: another process is running in"):
            run_in_process("autoencoder.py", "--out", tmp_path, "--threads", "1",
                           monkeypatch=monkeypatch)
        assert os.listdir(tmp_path) == [".minienc-lock"]       # refused before anything was written
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    trainer, data, _ = make(tmp_path)                         # the lock ended with its process
    trainer.fit(data, steps=2)
    assert trainer.step == 2


def test_an_out_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "taken").write_text("a file")
    trainer, data, _ = make(tmp_path / "taken")
    with pytest.raises(NotADirectoryError, match="Trainer.fit: .*taken is a file, not a folder"):
        trainer.fit(data, steps=2)


def _metrics_steps(folder):
    return [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_cut_last_line_of_metrics_is_dropped_and_the_run_resumes(tmp_path):
    """Regression: a last line cut short (a process killed while writing it) gave a bare
    JSONDecodeError naming no file, and blocked the resume the checkpoint could serve."""
    first, data, _ = make(tmp_path)
    first.fit(data, steps=6)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')
    with pytest.warns(RuntimeWarning, match=r"metrics.jsonl: its last line \(line 4\) was cut"):
        assert [r["step"] for r in MetricsFile(str(tmp_path / "metrics.jsonl")).read()] == [2, 4, 6]
    second, data, _ = make(tmp_path)
    with pytest.warns(RuntimeWarning, match="cut short"):
        second.fit(data, steps=10, resume=True)
    assert _metrics_steps(tmp_path) == [2, 4, 6, 8, 10]


def test_a_damaged_metrics_line_is_named_and_a_resume_keeps_what_came_before(tmp_path):
    first, data, _ = make(tmp_path)
    first.fit(data, steps=6)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "[1, 2]\n" + lines[2])          # line 2: JSON, not a record
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a JSON record with a "
                                         r"\"step\".*damaged"):
        MetricsFile(str(path)).read()
    damaged = path.read_text()
    second, data, _ = make(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"line 2 .* the 1 records before it are kept.*"
                                            r"metrics.jsonl.damaged"):
        second.fit(data, steps=10, resume=True)
    assert (tmp_path / "metrics.jsonl.damaged").read_text() == damaged
    assert _metrics_steps(tmp_path) == [2, 8, 10] and second.step == 10
    assert len(second.losses) == 10                            # the checkpoint kept every loss


def test_a_failed_resume_leaves_config_json_and_a_damaged_one_is_named(tmp_path, monkeypatch):
    """Regression: a --resume that failed (here: a model of another size than the checkpoint's)
    still appended its record to config.json; a damaged config.json gave a bare
    JSONDecodeError naming no file."""
    from demo_check import run_in_process
    quick = ["--out", tmp_path, "--steps", "2", "--max-train", "64", "--max-test", "32",
             "--batch-size", "32", "--threads", "1", "--draws", "2"]
    run_in_process("autoencoder.py", *quick, monkeypatch=monkeypatch)
    config = (tmp_path / "config.json").read_text()
    with pytest.raises(Exception, match="shape"):
        run_in_process("autoencoder.py", *quick, "--latent-dim", "3", "--resume",
                       monkeypatch=monkeypatch)
    assert (tmp_path / "config.json").read_text() == config
    run_in_process("autoencoder.py", *quick, "--resume", monkeypatch=monkeypatch)
    assert len(json.loads((tmp_path / "config.json").read_text())["resumed"]) == 1
    (tmp_path / "config.json").write_text('{"flags": {"seed"')
    with pytest.raises(SystemExit, match=r"config.json is damaged \(JSONDecodeError"):
        run_in_process("autoencoder.py", *quick, "--resume", monkeypatch=monkeypatch)
