"""Checkpoints: resuming gives the losses of an uninterrupted run; the file is written atomically;
truncated, corrupt, mismatched or incomplete files are refused with the problem named, and a
refused load changes nothing."""
import io
import json
import os
import tracemalloc
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


# ----- malformed, hostile and unstorable files ----------------------------------------------
def rewrite(path, meta_change=None, entries=None):
    """Rebuild the archive at `path` with its metadata changed by `meta_change(meta)` and the
    entries in `entries` (name without .npy -> array, or raw bytes of a whole .npy) replaced or
    added, as a careless tool or a hostile user might."""
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    meta = json.loads(np.load(path)["__meta__"].tobytes())
    if meta_change:
        meta_change(meta)
    files["__meta__.npy"] = npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    for name, value in (entries or {}).items():
        files[name + ".npy"] = value if isinstance(value, bytes) else npy(value)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_claiming(shape, dtype="<f4", data=b"\0" * 64):
    """A .npy whose header claims `shape` but which holds only `data`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue() + data


def assert_untouched(path, match):
    """Loading `path` is refused with `match`, and neither the model, the optimizer nor the
    RNG changed."""
    model = small()
    opt = SGD(model.parameters(), lr=0.7, momentum=0.5)
    model(minienc.tensor(np.ones((2, 3)))).sum().backward()
    opt.step()
    before = [p.numpy().copy() for p in model.parameters()]
    opt_before = opt.state_dict()
    rng_before = backend.get_rng_state()
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, model, opt)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
    after = opt.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    for i in opt_before["state"]:
        np.testing.assert_array_equal(after["state"][i]["momentum_buffer"],
                                      opt_before["state"][i]["momentum_buffer"])
    assert backend.get_rng_state() == rng_before


@pytest.mark.parametrize("change, match", [
    (lambda m: m["rng"].update(cpu={"bit_generator": "PCG64", "state": "garbage"}),
     r"malformed metadata: 'rng.cpu' is not a NumPy PCG64 state"),
    (lambda m: m["trainer"].update(step="five"), r"trainer.step must be an integer >= 0, got 'five'"),
    (lambda m: m["trainer"].update(epoch=-1), r"trainer.epoch must be an integer >= 0"),
    (lambda m: m["trainer"].update(epoch_rng=[1, 2]), r"trainer.epoch_rng is not a NumPy PCG64"),
    (lambda m: m["optimizer"]["state"]["0"].update(step=1.5), r"optimizer state '0' must hold an "
                                                               r"integer step"),
    (lambda m: m["optimizer"]["param_groups"][0].update(lr="fast"), r"group 0 has lr='fast'"),
    (lambda m: m["optimizer"]["param_groups"][0].update(momentum=[0.9]), r"group 0 has momentum"),
    (lambda m: m["models"].update(model="all of them"), r"model 'model' must list its array names"),
    (lambda m: m.update(extra_arrays={"a": 1}), r"'extra_arrays' must be a list of names"),
], ids=["rng", "step", "epoch", "epoch_rng", "optimizer_step", "lr", "betas_like", "models",
        "extra_arrays"])
def test_malformed_metadata_is_refused_before_anything_changes(tmp_path, change, match):
    path = str(tmp_path / "c.npz")
    trained(path)
    rewrite(path, meta_change=change)
    assert_untouched(path, match)


def test_arrays_of_the_wrong_kind_are_refused_before_anything_changes(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    rewrite(path, entries={"model/model/layers.2.bias": np.array(["a", "b"])})
    assert_untouched(path, r"entry model/model/layers.2.bias has dtype <U1, expected a floating array")
    trained(path)
    rewrite(path, entries={"optim/3/momentum_buffer": np.array([1, 2])})
    assert_untouched(path, r"entry optim/3/momentum_buffer has dtype int64, expected a floating")
    trained(path)
    rewrite(path, entries={"optim/3/momentum_buffer": np.ones(5, np.float32)})
    assert_untouched(path, r"entry optim/3/momentum_buffer has shape \(5,\) in the file but \(2,\) "
                           r"in optimizer parameter 3")


def test_object_and_string_arrays_are_refused_at_save_time(tmp_path):
    path = str(tmp_path / "c.npz")
    for value, dtype in ((np.array([{"a": 1}], dtype=object), "object"), (["x", "y"], "<U1")):
        with pytest.raises(TypeError, match=rf"save_checkpoint: extra/names has dtype {dtype}, which a "
                                            rf"checkpoint cannot store"):
            save_checkpoint(path, small(), extra_arrays={"names": value})
    assert os.listdir(tmp_path) == []          # nothing written, not even a temporary file


def test_only_listed_entries_are_read(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    trained(path)
    rewrite(path, entries={"junk": np.zeros(2_000_000, np.float32)})   # 8 MB nobody lists
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    tracemalloc.start()
    load_checkpoint(path, small(), restore_rng=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "junk.npy" not in opened and "__meta__.npy" in opened
    assert peak < 2_000_000, f"loading a 1 KB model allocated {peak} bytes"


def test_a_header_claiming_a_huge_array_is_refused_before_its_data_is_read(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    huge = npy_claiming((1_000_000, 1_000_000))
    rewrite(path, entries={"model/model/layers.0.weight": huge})
    assert_untouched(path, r"entry model/model/layers.0.weight has shape \(1000000, 1000000\) in the "
                           r"file but \(4, 3\) in the model")
    save_checkpoint(path, small(), extra_arrays={"losses": np.ones(3)})
    rewrite(path, entries={"extra/losses": huge})
    with pytest.raises(CheckpointError, match=r"entry extra/losses: its header says shape \(1000000, "
                                              r"1000000\) of float32 \(4000000000000 bytes\), the "
                                              r"entry holds 64 bytes"):
        load_checkpoint(path, small())


def test_a_compressed_entry_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    trained(path)
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"entry __meta__ is compressed"):
        load_checkpoint(path, small())
