"""Every image demo runs a few steps on every --data kind besides its default digits (which
tests/test_demos.py runs them all on), sizing its model from the data it is given (issue 15
item 13), and writes every picture it promises, non-empty; a demo stopped with Ctrl-C and
continued with --resume ends with the numbers of an uninterrupted run; a finished run is not
overwritten unless asked.

The demos run in this process (runpy, as `python demos/x.py` would) so the suite pays the
imports once; the resume test runs real processes, since it sends a real SIGINT."""
import json
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from demo_check import DEMOS, ENV, ROOT, THREADS, run_in_process

QUICK = ["--steps", "2", "--max-train", "100", "--max-test", "50", "--draws", "2",
         "--batch-size", "32", *THREADS]
# demo -> (its own flags for a smoke run, the pictures it writes)
IMAGE_DEMOS = {
    "autoencoder": ([], ["loss", "reconstructions", "embeddings"]),
    "denoising": ([], ["loss", "denoising", "embeddings"]),
    "vae": ([], ["loss", "terms", "reconstructions", "samples", "interpolation", "embeddings"]),
    "simclr": ([], ["views", "loss", "embeddings"]),
    "moco": (["--queue", "32"], ["views", "loss", "embeddings"]),
    "triplet": ([], ["views", "loss", "embeddings"]),
    "mae": (["--dim", "16", "--depth", "1", "--decoder-depth", "1"],
            ["loss", "reconstructions", "embeddings"]),
    "jepa": (["--no-mae", "--eval-every", "1", "--dim", "16", "--depth", "1"],
             ["masks", "curves", "loss", "embeddings"]),
    "lejepa": (["--num-views", "2", "--eval-every", "1", "--dim", "16", "--depth", "1"],
               ["views", "curves", "loss", "embeddings"]),
    "byol": (["--monitor-every", "1"], ["views", "loss", "curves", "gauges", "embeddings"]),
    "simsiam": (["--monitor-every", "1"], ["views", "loss", "curves", "gauges", "embeddings"]),
    "vicreg": (["--monitor-every", "1"], ["views", "loss", "curves", "gauges", "embeddings"]),
    "barlow": (["--monitor-every", "1"], ["views", "loss", "curves", "gauges", "embeddings"]),
    "dino": (["--monitor-every", "1", "--local-crops", "1"],
             ["views", "crops", "loss", "curves", "gauges", "embeddings"]),
}
# the ViTs' patches: 2x2 on the 8x8 digits (their default), 4x4 on the larger images
PATCHES = {"digits": [], "digits-canvas": ["--patch-size", "4"], "mnist": ["--patch-size", "4"],
           "cifar10": ["--patch-size", "4"]}


def write_idx(path, array):
    """An IDX file (LeCun's MNIST format): 0, 0, type 0x08 (uint8), ndim, big-endian sizes."""
    array = np.asarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """A 60 + 30 image stand-in for MNIST: the real digits, enlarged to 28x28, as IDX files."""
    from minienc.data import load_digits_canvas
    canvas = load_digits_canvas(size=28)
    folder = tmp_path_factory.mktemp("mnist")
    for split, x, y, n in (("train", canvas.x_train, canvas.y_train, 60),
                           ("t10k", canvas.x_test, canvas.y_test, 30)):
        keep = np.concatenate([np.flatnonzero(y == c)[:n // 10] for c in range(10)])
        write_idx(folder / f"{split}-images-idx3-ubyte", (x[keep, 0] * 255).round())
        write_idx(folder / f"{split}-labels-idx1-ubyte", y[keep])
    return folder


@pytest.fixture(scope="module")
def cifar10_folder(tmp_path_factory):
    """A 60 + 30 image stand-in for CIFAR-10's binary files: 3,073-byte records (a label, then
    the red, green and blue planes) of the real digits on the canvas, each in a random colour."""
    from minienc.data import load_digits_canvas
    canvas = load_digits_canvas(size=32)
    rs = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("cifar-10-batches-bin")
    for names, x, y, per_class in ((["data_batch_%d.bin" % i for i in range(1, 6)], canvas.x_train,
                                    canvas.y_train, 6), (["test_batch.bin"], canvas.x_test, canvas.y_test, 3)):
        chosen = np.stack([np.flatnonzero(y == c)[:per_class] for c in range(10)], axis=1).ravel()
        for keep in np.array_split(chosen, len(names)):
            n = len(keep)
            colour = rs.uniform(0.3, 1.0, size=(n, 3, 1, 1))
            pixels = (x[keep] * colour * 255).round().astype(np.uint8).reshape(n, -1)
            name = names.pop(0)
            np.concatenate([y[keep, None].astype(np.uint8), pixels], axis=1).tofile(folder / name)
    return folder


@pytest.fixture(scope="module")
def data_kinds(mnist_folder, cifar10_folder):
    return {"digits": "digits", "digits-canvas": "digits-canvas:32", "mnist": f"mnist:{mnist_folder}",
            "cifar10": f"cifar10:{cifar10_folder}"}


# "digits" is every demo's default: tests/test_demos.py runs them all on it (compare --quick)
@pytest.mark.parametrize("kind", ["digits-canvas", "mnist", "cifar10"])
@pytest.mark.parametrize("demo", sorted(IMAGE_DEMOS))
def test_every_image_demo_runs_on_every_data_kind(demo, kind, data_kinds, tmp_path, monkeypatch):
    flags, pictures = IMAGE_DEMOS[demo]
    if demo in ("mae", "jepa", "lejepa"):
        flags = flags + PATCHES[kind]
    run_in_process(f"{demo}.py", "--data", data_kinds[kind], "--out", tmp_path, *QUICK, *flags,
                   monkeypatch=monkeypatch)
    records = json.loads((tmp_path / "results.json").read_text())
    assert records[0]["dim"] > 0 and 0.0 <= records[0]["fewshot"] <= 1.0
    for name in pictures:
        path = tmp_path / f"{name}.png"
        assert path.exists() and path.stat().st_size > 1000, f"{demo} on {kind}: {name}.png"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["flags"]["data"] == data_kinds[kind]
    assert config["data"]["image_shape"][0] == (3 if kind == "cifar10" else 1)
    assert config["data"]["train"] <= 100 and config["seed"] == 0
    assert {"python", "numpy", "minienc"} <= set(config["versions"]) and config["device"] == "cpu"


def test_eval_every_draws_the_curves_and_reports_its_share(tmp_path, monkeypatch, capsys):
    run_in_process("simclr.py", "--out", tmp_path, *QUICK[2:], "--steps", "6", "--eval-every", "3",
                   monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in lines if "eval_knn" in r]
    # steps this short are cheaper than an evaluation: the budget may skip some of them
    assert evaluated[0] == 0 and set(evaluated) <= {0, 3, 6}, evaluated
    passes = f"{len(evaluated)} pass" + ("" if len(evaluated) == 1 else "es")
    assert f"evaluation: {passes}, " in out and "s of the run's" in out, out
    assert (tmp_path / "evaluation.png").stat().st_size > 1000


def demo_process(*argv):
    return subprocess.Popen([sys.executable, str(DEMOS / "autoencoder.py"), *map(str, argv)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_a_stopped_demo_resumed_ends_with_the_uninterrupted_numbers(tmp_path):
    flags = ["--steps", "600", "--draws", "3", "--max-train", "400", "--max-test", "100", *THREADS]
    full = demo_process("--out", tmp_path / "full", *flags)
    assert full.wait(timeout=600) == 0, full.stdout.read()

    stopped = demo_process("--out", tmp_path / "split", *flags)
    metrics = tmp_path / "split" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
        time.sleep(0.01)
    stopped.send_signal(signal.SIGINT)
    log = stopped.communicate(timeout=300)[0]
    assert stopped.returncode != 0 and "--resume continues it" in log, log
    assert not (tmp_path / "split" / "results.json").exists()

    again = demo_process("--out", tmp_path / "split", *flags)   # refused: it holds a stopped run
    log = again.communicate(timeout=300)[0]
    assert again.returncode != 0 and "already holds a stopped run" in log, log

    resumed = demo_process("--out", tmp_path / "split", *flags, "--resume")
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log
    step = int(log.split("resuming at step ")[1].split(",")[0])
    assert 0 < step < 600, log                       # it really was stopped part-way
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("full", "split"))
    for x, y in zip(a, b):
        x.pop("train_s", None), y.pop("train_s", None)
    assert a == b

    finished = demo_process("--out", tmp_path / "split", *flags)   # a finished run: refused
    log = finished.communicate(timeout=300)[0]
    assert finished.returncode != 0 and "finished run" in log and "--overwrite" in log, log
