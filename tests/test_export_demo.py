"""demos/export.py: what a demo trained, taken out of its run folder, evaluates as the demo did;
the export takes the module the objective embeds with, and refuses by name what it cannot take
(a damaged run record, a cut checkpoint, its own run folder as --out, a checkpoint that does not
record its encoder). minienc.export itself: tests/test_export.py."""
import json

import numpy as np
import pytest

from minienc import nn
from minienc.engine import no_grad
from minienc.objectives import Objective
from minienc.export import CONFIG, load_encoder

from test_export import inputs, perturbed


def exported_embedding(folder):
    """The demo's embedding from an exported folder alone: load_encoder, then what config.json's
    notes say the demo did around it (normalise, pool, keep the posterior mean)."""
    encoder = load_encoder(folder)
    notes = json.loads((folder / CONFIG).read_text())["notes"]

    def embed(images):
        if "normalize" in notes:
            images = (images - notes["normalize"]["mean"]) / notes["normalize"]["std"]
        out = encoder(images)
        if notes.get("pooling") == "mean":
            out = out[:, 1 if getattr(encoder, "cls_token", None) is not None else 0:].mean(axis=1)
        if "output" in notes:   # the VAE: the posterior mean, then its log-variance
            out = out[:, :out.shape[1] // 2]
        return out
    return embed


# one of each kind the export script rebuilds: a conv stack, an MLP behind a Flatten (VAE: the
# posterior mean), the whole model (triplet), a nested teacher (DINO), ViTs with and without
# the input normalisation (MAE, JEPA), and MoCo's query encoder (it was not found: the whole
# model was tried, and refused as "not a layer of a Sequential")
@pytest.mark.parametrize("demo, extra", [("autoencoder", ["--arch", "conv"]), ("vae", []),
                                         ("triplet", []), ("dino", []), ("mae", []), ("jepa", []),
                                         ("moco", ["--queue", "32"])])
def test_an_exported_demo_encoder_evaluates_as_the_demo_did(demo, extra, tmp_path, monkeypatch):
    from demo_check import run_in_process
    from test_demo_runs import IMAGE_DEMOS, QUICK
    from minienc.data import load_dataset
    from minienc.eval import evaluate
    flags, _ = IMAGE_DEMOS[demo]
    run_in_process(f"{demo}.py", "--out", tmp_path / "run", *QUICK, *flags, *extra,
                   monkeypatch=monkeypatch)
    run_in_process("export.py", tmp_path / "run" / "checkpoint.npz", "--out", tmp_path / "exported",
                   monkeypatch=monkeypatch)
    trained = json.loads((tmp_path / "run" / "results.json").read_text())[0]
    data = load_dataset("digits", max_train=100, max_test=50)
    again = evaluate(exported_embedding(tmp_path / "exported"), data, draws=2, verbose=False)
    for key in ("dim", "linear", "fewshot", "knn"):
        assert again[key] == pytest.approx(trained[key], abs=1e-6), (demo, key)
    assert again["rankme"] == pytest.approx(trained["rankme"], rel=1e-4), demo


def test_export_refuses_by_name_what_it_cannot_take(tmp_path, monkeypatch):
    """A damaged run record gave a raw JSONDecodeError, a text run's a KeyError 'data', a cut
    checkpoint a traceback, and --out the run's own folder overwrote its config.json."""
    from demo_check import run_in_process
    from test_demo_runs import QUICK
    run_in_process("autoencoder.py", "--out", tmp_path / "run", *QUICK, monkeypatch=monkeypatch)
    record = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(SystemExit, match=r"config.json exists and is not an exported encoder's config"):
        run_in_process("export.py", tmp_path / "run", "--out", tmp_path / "run", monkeypatch=monkeypatch)
    assert (tmp_path / "run" / "config.json").read_text() == record
    whole = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.npz").write_bytes(whole[:3000])
    with pytest.raises(SystemExit, match=r"^export: checkpoint .*checkpoint.npz is truncated or corrupt"):
        run_in_process("export.py", tmp_path / "cut", "--out", tmp_path / "out", monkeypatch=monkeypatch)
    for damaged, message in (('{"flags": ', r"cannot be read \(JSONDecodeError"),
                             (json.dumps({"flags": {}, "data": {"name": "text"}}), r"records no image shape")):
        (tmp_path / "run" / "config.json").write_text(damaged)
        with pytest.raises(SystemExit, match=r"^export: .*config.json.* " + message):
            run_in_process("export.py", tmp_path / "run", "--out", tmp_path / "out", monkeypatch=monkeypatch)


class Distilled(Objective):
    """An objective that trains `encoder` but embeds with `slow`, another network: the export
    used to guess the encoder from the keys' prefixes ("encoder." before the whole model) and
    took the trained one, not the evaluated one."""

    def __init__(self):
        self.encoder = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8)), seed=1)
        self.slow = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (12,), 6)), seed=2)

    def embed(self, x):
        return self.slow(x)

    def embed_module(self):
        return self.slow


def saved_run(folder, models):
    """A run folder as a demo leaves it: checkpoint.npz of `models` and the config.json the
    export reads (the images' shape)."""
    from minienc.checkpoint import save_checkpoint
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"demo": "custom", "flags": {},
                                                    "data": {"image_shape": [1, 8, 8]}}))
    return save_checkpoint(folder / "checkpoint.npz", models)


def moco():
    """MoCo embeds with query_encoder.layers.0, none of the prefixes the export guessed from: it
    fell back to the whole objective and could not rebuild it."""
    from minienc.data import contrastive_augment
    from minienc.objectives import MoCo, projection_head
    return MoCo(perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8, batch_norm=True))),
                projection_head(8, 16, 4, batch_norm=False), contrastive_augment(), queue_size=16)


@pytest.mark.parametrize("make, tensors_from", [(Distilled, "objective/slow"),
                                                (moco, "objective/query_encoder.layers.0")])
def test_the_export_takes_the_module_the_objective_embeds_with(make, tensors_from, tmp_path, monkeypatch):
    from demo_check import run_in_process
    objective = make().eval()
    checkpoint = saved_run(tmp_path / "run", {"objective": objective})
    run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", monkeypatch=monkeypatch)
    loaded = load_encoder(tmp_path / "exported")
    config = json.loads((tmp_path / "exported" / CONFIG).read_text())
    assert config["notes"]["tensors_from"] == tensors_from
    x = inputs((5, 1, 8, 8))
    with no_grad():
        assert np.array_equal(loaded(x).numpy(), objective.embed(x).numpy())


def test_a_checkpoint_that_records_no_encoder_is_refused_until_one_is_named(tmp_path, monkeypatch):
    """A checkpoint written before the encoder was recorded (here: of a plain model, which has
    none to record) is refused with the way out, not exported by a guess."""
    from demo_check import run_in_process
    model = perturbed(nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8)))
    checkpoint = saved_run(tmp_path / "run", {"model": model})
    with pytest.raises(SystemExit, match=r"does not record which module is the encoder.*"
                                         r"--encoder MODEL/PREFIX; the checkpoint's models: model \(layers\)"):
        run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", monkeypatch=monkeypatch)
    run_in_process("export.py", checkpoint, "--out", tmp_path / "exported", "--encoder", "model/",
                   monkeypatch=monkeypatch)
    a, b = model.state_dict(), load_encoder(tmp_path / "exported").state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
