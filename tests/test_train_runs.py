"""A run's folder is never reused by accident (issue 15 item 9), a missing resume target is an
error, Ctrl-C stops at a step boundary with a checkpoint that resumes exactly, and without
matplotlib the Trainer still trains and checkpoints (issue 15 item 12)."""
import json
import signal
import sys

import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.optim import Adam, WarmupCosine
from minienc.train import Trainer


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


def test_ctrl_c_stops_after_the_step_saves_and_resumes_exactly(tmp_path):
    full, data, full_model = make(tmp_path / "full")
    full.fit(data, steps=12)

    first, data, _ = make(tmp_path / "split")
    first.callbacks.append(lambda t: signal.raise_signal(signal.SIGINT) if t.step == 7 else None)
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
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


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
