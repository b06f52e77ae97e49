"""Checkpoints: resuming gives the losses of an uninterrupted run; the file is written atomically;
truncated, corrupt, mismatched or incomplete files are refused with the problem named, and a
refused load changes nothing."""
import json
import os
import zipfile

import numpy as np
import pytest

import minienc
from minienc import backend, nn
from minienc.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from minienc.optim import SGD, Adam, WarmupCosine
from minienc.train import Trainer


class ShuffledBatches:
    """Draws its order from minienc's host generator when iterated (the hard case for resuming:
    the order depends on the RNG state at the start of the epoch)."""

    def __init__(self, x, batch_size):
        self.x, self.batch_size = x, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __iter__(self):
        order = backend.host_rng().permutation(len(self.x))
        for i in range(len(self)):
            yield minienc.tensor(self.x[order[i * self.batch_size:(i + 1) * self.batch_size]])


def make_run(out_dir, seed=0):
    """A denoising autoencoder whose data order and noise both come from the host RNG."""
    minienc.manual_seed(seed)
    x = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 8))
    opt = Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)

    def step(batch):
        noise = backend.host_rng().normal(size=batch.shape).astype(np.float32) * 0.1
        return minienc.mse_loss(model(batch + minienc.tensor(noise)), batch)

    trainer = Trainer(step, opt, models={"ae": model}, log_every=3, out_dir=str(out_dir),
                      schedules={"lr": WarmupCosine(1e-2, total_steps=22, warmup_steps=3)},
                      progress=False)
    return trainer, ShuffledBatches(x, 8), model   # 5 batches an epoch


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    full, data, full_model = make_run(tmp_path / "full")
    full.fit(data, steps=22)

    first, data, _ = make_run(tmp_path / "split")
    first.fit(data, steps=11)            # stops in the middle of the third epoch
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"step": 14, "loss": 0.5}\n')   # logged after the checkpoint, before a crash
    second, data, model = make_run(tmp_path / "split", seed=123)   # a fresh process, another seed
    second.fit(data, steps=22, resume=True)

    assert second.losses == full.losses  # exactly equal, step for step
    for a, b in zip(model.parameters(), full_model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert second.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [3, 6, 9, 11, 12, 15, 18, 21, 22]


def small(hidden=4):
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def trained(path, model=None):
    model = model or small()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = minienc.tensor(np.ones((5, 3))), minienc.tensor(np.zeros((5, 2)))
    loss = minienc.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    save_checkpoint(path, model, opt, trainer={"step": 1}, extra={"note": "hi"})
    return model, opt


def test_round_trip_restores_model_optimizer_position_and_rng(tmp_path):
    path = str(tmp_path / "c.npz")
    model, opt = trained(path)
    after_save = backend.host_rng().normal(size=3)
    other = small()
    other_opt = SGD(other.parameters(), lr=0.5, momentum=0.9)
    meta = load_checkpoint(path, other, other_opt)
    assert meta["trainer"] == {"step": 1} and meta["extra"] == {"note": "hi"}
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert other_opt.param_groups[0]["lr"] == 0.1
    saved, loaded = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert sorted(saved) == sorted(loaded) == [0, 1, 2, 3]
    for i in saved:
        assert loaded[i]["step"] == saved[i]["step"] == 1
        np.testing.assert_array_equal(loaded[i]["momentum_buffer"], saved[i]["momentum_buffer"])
    np.testing.assert_array_equal(backend.host_rng().normal(size=3), after_save)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    trained(path)
    good = open(path, "rb").read()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        trained(path)
    assert open(path, "rb").read() == good            # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["c.npz"]          # and no half-written temp file is left


def test_truncated_file_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 100):
        open(path, "wb").write(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(path, small())


def test_corrupted_bytes_are_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model/model/layers.0.weight.npy")
    data = bytearray(open(path, "rb").read())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128  # inside the array
    data[start:start + 4] = bytes(b ^ 0xFF for b in data[start:start + 4])
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, small())


def test_mismatched_model_is_refused_and_left_untouched(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    wide = small(hidden=7)
    before = [p.numpy().copy() for p in wide.parameters()]
    shapes = r"layers.0\.weight has shape \(4, 3\) in the file but \(7, 3\)"
    with pytest.raises(CheckpointError, match=shapes):
        load_checkpoint(path, wide)
    for p, b in zip(wide.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
    deeper = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2))
    missing = r"missing keys \[.layers.3.bias., .layers.3.weight.\]"
    with pytest.raises(CheckpointError, match=missing):
        load_checkpoint(path, deeper)
    with pytest.raises(CheckpointError, match="no model named 'encoder'"):
        load_checkpoint(path, {"encoder": small()})


def test_optimizer_mismatches_are_refused_before_the_model_changes(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    model = small()
    before = model.parameters()[0].numpy().copy()
    with pytest.raises(CheckpointError, match="for SGD, not Adam"):
        load_checkpoint(path, model, Adam(model.parameters()))
    two_groups = SGD([{"params": model.parameters()[:2]}, {"params": model.parameters()[2:]}],
                     lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="parameter groups"):
        load_checkpoint(path, model, two_groups)
    np.testing.assert_array_equal(model.parameters()[0].numpy(), before)


def test_missing_array_and_foreign_files_are_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    meta, arrays = read_checkpoint(path)
    del arrays["model/model/layers.2.bias"]
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"missing: \['model/model/layers.2.bias'\]"):
        load_checkpoint(path, small())
    np.savez(path, weights=np.ones(3))
    with pytest.raises(CheckpointError, match="not a minienc checkpoint"):
        load_checkpoint(path, small())
    open(path, "wb").write(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, small())
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(str(tmp_path / "absent.npz"), small())


def test_state_moves_to_the_models_device(tmp_path, device):
    path = str(tmp_path / "c.npz")
    model, _ = trained(path)
    target = small().to(device)
    opt = SGD(target.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, target, opt)
    assert all(p.device == device for p in target.parameters())
    assert all(backend.device_of(s["momentum_buffer"]) == device for s in opt.state.values())
    np.testing.assert_array_equal(target.parameters()[0].numpy(), model.parameters()[0].numpy())
