"""The shared training loop: it trains, logs at the interval (and only then reads the loss back),
applies schedules, calls callbacks, writes metrics/plot/checkpoint, refuses NaN, and frees each
step's graph so memory stays flat. Also: accumulation equals the big batch, evaluation while
training, never reusing a run's folder by accident, Ctrl-C, and no matplotlib."""
import gc
import io
import json
import tracemalloc

import numpy as np
import pytest

import minienc
from minienc import backend, nn
from minienc.optim import SGD, Adam, WarmupCosine
from minienc.engine import Function, Tensor
from minienc.train import Trainer, progress_bar, train


def regression(device, n_batches=8, batch=16, seed=0):
    """A linear-teacher regression task and a small MLP to fit it."""
    rs = np.random.default_rng(seed)
    teacher = rs.normal(size=(6, 2))
    xs = [rs.normal(size=(batch, 6)) for _ in range(n_batches)]
    data = [(minienc.tensor(x, device=device), minienc.tensor(x @ teacher, device=device))
            for x in xs]
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)

    def step(b):
        x, y = b
        return minienc.mse_loss(model(x), y)
    return model, step, data


def test_trains_and_writes_metrics_plot_and_checkpoint(tmp_path, device):
    model, step, data = regression(device)
    opt = Adam(model.parameters(), lr=1e-2)
    t = train(step, opt, data, steps=40, models=model, log_every=10, out_dir=str(tmp_path),
              progress=False)
    assert t.step == 40 and len(t.losses) == 40 and t.epoch == 5
    assert np.mean(t.losses[-8:]) < 0.5 * np.mean(t.losses[:8])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40]
    assert lines[0]["loss"] == pytest.approx(np.mean(t.losses[:10]))
    assert lines[0]["samples_per_s"] > 0 and lines[0]["steps_per_s"] > 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "checkpoint.npz").exists()


def test_loss_is_read_back_only_at_the_log_interval(monkeypatch, device):
    model, step, data = regression(device)
    reads = []
    real = backend.to_host
    monkeypatch.setattr(backend, "to_host", lambda a: reads.append(a.shape) or real(a))
    monkeypatch.setattr(Tensor, "item", lambda self: pytest.fail("item() called in the loop"))
    train(step, Adam(model.parameters()), data, steps=30, log_every=10, progress=False)
    assert reads == [(1, 10)] * 3   # one read of the 10 stacked losses per interval

    def terms(batch):   # several logged terms: still one read per interval, not one per term
        loss = step(batch)
        return {"loss": loss, "half": loss * 0.5, "double": loss.astype("float64") * 2.0}

    reads.clear()
    t = train(terms, Adam(model.parameters()), data, steps=20, log_every=10, progress=False)
    assert reads == [(3, 10)] * 2
    assert t.records[-1]["half"] == pytest.approx(t.records[-1]["loss"] / 2, rel=1e-6)


def test_schedules_set_the_optimizer_and_values_callbacks_see_them(device):
    model, step, data = regression(device)
    opt = SGD(model.parameters(), lr=0.0)
    lr = WarmupCosine(0.1, total_steps=12, warmup_steps=4)
    seen = []
    cb = lambda t: seen.append((t.step, opt.param_groups[0]["lr"], t.values["momentum"]))
    train(step, opt, data, steps=12, schedules={"lr": lr, "momentum": lambda s: 0.9 + s / 1000},
          callbacks=[cb], log_every=4, progress=False)
    assert [s for s, _, _ in seen] == list(range(1, 13))
    assert [v for _, v, _ in seen] == pytest.approx([lr(s) for s in range(12)])
    assert seen[3][2] == pytest.approx(0.903)


def test_epochs_and_data_as_a_function_of_the_epoch(device):
    model, step, data = regression(device, n_batches=3)
    epochs_asked = []

    def batches(epoch):
        epochs_asked.append(epoch)
        return data

    t = Trainer(step, Adam(model.parameters()), progress=False).fit(batches, epochs=2)
    assert t.step == 6 and t.epoch == 2 and epochs_asked == [0, 1]
    with pytest.raises(ValueError, match="no batches"):
        Trainer(step, Adam(model.parameters()), progress=False).fit(iter(data), steps=10)


def test_nan_loss_stops_with_the_step(device):
    model, step, data = regression(device)
    bad = lambda b: step(b) * float("nan") if b is data[2] else step(b)
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(bad, SGD(model.parameters(), lr=0.01), data, steps=8, log_every=4, progress=False)


def test_clip_grad_bounds_the_update(device):
    model, step, data = regression(device)
    before = [p.numpy().copy() for p in model.parameters()]
    train(step, SGD(model.parameters(), lr=1.0), data[:1], steps=1, clip_grad=1e-3, progress=False)
    moved = np.sqrt(sum(((p.numpy() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(1e-3, rel=1e-3)  # lr 1 times a gradient clipped to norm 1e-3


def test_progress_bar_writes_lines_off_a_terminal():
    out = io.StringIO()
    bar = progress_bar(100, stream=out)
    for s in range(1, 101):
        bar.set_postfix_str(f"loss {1 / s:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 10 <= len(lines) <= 12, lines
    assert "100/100" in lines[-1] and "loss 0.010" in lines[-1], lines[-1]


def test_off_a_terminal_a_slow_run_still_writes_one_line_per_tenth():
    """tqdm's monitor thread sets miniters to 1 once the last line is maxinterval (10 s) old, so a
    slow run wrote a line per step (123-281 lines a run). Its check is run here on a bar whose
    last line is an hour old."""
    import time
    from tqdm._monitor import TMonitor
    out = io.StringIO()
    bar = progress_bar(100, stream=out)
    bar.last_print_t -= 3600
    monitor = TMonitor(type(bar), 0.001)
    woke = monitor.woken
    while monitor.woken == woke:      # it wakes again only after a pass over every bar
        time.sleep(0.001)
    monitor.exit()
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert bar.miniters == 10 and len(out.getvalue().splitlines()) == 11   # 0%, 10%, ..., 100%


def test_the_estimate_after_resume_times_only_the_steps_since_resuming(tmp_path, monkeypatch, capsys):
    """It divided the whole run's time by the steps since resuming ("5853 ms per step, ~1h23m"
    for a run that finished in 70 s). The first part is made to look an hour long here."""
    import re
    import time
    from minienc.run_folder import RunFolder
    model, step, data = regression("cpu")
    train(step, Adam(model.parameters(), lr=1e-2), data, steps=8, models=model,
          out_dir=str(tmp_path), progress=False)
    load = RunFolder.load

    def load_an_hour_later(self, path):
        meta = load(self, path)
        self.elapsed_s += 3600
        return meta
    monkeypatch.setattr(RunFolder, "load", load_an_hour_later)
    model, step, data = regression("cpu")
    began = time.perf_counter()
    t = Trainer(step, Adam(model.parameters(), lr=1e-2), models=model, out_dir=str(tmp_path))
    t.fit(data, steps=40, resume=True)
    took = time.perf_counter() - began
    per_step = float(re.search(r"estimate: (\d+) ms per step", capsys.readouterr().out).group(1))
    assert t.elapsed_s > 3600 and per_step * 1e-3 * 10 <= took + 0.01   # 10 steps timed since resuming


def _live_functions():
    gc.collect()
    return sum(isinstance(o, Function) for o in gc.get_objects())


def test_memory_stays_flat_over_many_steps(device):
    model, step, data = regression(device)
    counts = {}

    def probe(t):
        if t.step in (50, 400):
            counts[t.step] = (_live_functions(), tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        train(step, Adam(model.parameters()), data, steps=400, callbacks=[probe], log_every=25,
              progress=False)
    finally:
        tracemalloc.stop()
    assert counts[50][0] == counts[400][0] == 0    # no graph survives its step
    # 350 more steps keep 350 floats of loss history and 14 metric records: a few tens of KB
    assert counts[400][1] - counts[50][1] < 100_000
