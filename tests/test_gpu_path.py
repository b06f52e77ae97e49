"""The GPU path keeps minienc's promises (these tests run where CuPy sees a GPU; skipped, with
the reason, elsewhere).

  * same seed, same model: every registered model has bit-identical initial weights whether it
    is built for the CPU or directly on the GPU (weights are drawn on the host, then sent);
  * same training: the first 20 steps give the same losses on both devices, within float32
    tolerance (BLAS and reduction order differ, so not bitwise; the gap may grow with steps);
  * no hidden host synchronisation: a Trainer step never copies device data to the host except
    when the log interval asks for the losses.

The registry, CASES: name -> a class built from a seed, with `.model` (the Module whose weights
are compared) and `parts(device)` -> (optimizer, loss_fn, after). It holds the benchmark's
workloads (MLP AE, SimCLR/NT-Xent MLP, conv AE, MAE, I-JEPA: benchmarks/bench_*.py) and one small
case per remaining objective (VAE, triplet, MoCo, BERT MLM, BYOL, SimSiam, VICReg, Barlow Twins, DINO,
LeJEPA). Random draws inside a step (VAE noise, masks, SIGReg's directions) are made on the host
once, so both devices see the same ones.
"""

import numpy as np
import pytest

import minienc
from minienc import backend, nn
from minienc.objectives import (LeJEPA, MoCo, build_model, mask_tokens, projection_head,
                                random_directions, view_triplet_loss)
from minienc.objectives.barlow import BarlowTwins, barlow_projector
from minienc.objectives.byol import BYOL, byol_mlp
from minienc.objectives.dino import DINO, dino_head
from minienc.objectives.simsiam import SimSiam, simsiam_predictor, simsiam_projector
from minienc.objectives.vicreg import VICReg, vicreg_expander
from minienc.objectives.masked_language import MaskedLanguageModel, TokenMasking
from minienc.optim import Adam, AdamW
from minienc.train import Trainer

from benchmarks import bench_mlp, bench_vision

STEPS = 20
needs_gpu = pytest.mark.skipif(not backend.cuda_available(),
                               reason="no CUDA device visible to CuPy: the GPU path needs one")


# ----- the objectives the benchmark does not cover ---------------------------------------------
class VaeCase:
    """A Bernoulli MLP VAE; the reparameterisation noise of every step drawn on the host."""

    def __init__(self, seed=0, batch=32):
        minienc.manual_seed(seed)
        self.model = build_model("vae", (1, 8, 8), latent_dim=4, hidden=(32,))
        rs = np.random.default_rng(seed)
        self.x = rs.random((batch, 1, 8, 8), dtype=np.float32)
        self.eps = rs.normal(size=(STEPS + 8, batch, 4)).astype(np.float32)

    def parts(self, device):
        model = self.model.to(device)
        x = minienc.tensor(self.x, device=device)
        eps = [minienc.tensor(e, device=device) for e in self.eps]
        step = iter(range(len(eps)))
        return Adam(model.parameters(), lr=1e-3), \
            lambda: model.loss(x, eps=eps[next(step)])["loss"], None


class TripletCase:
    """The view (unsupervised) triplet loss with batch-hard mining on an MLP."""

    def __init__(self, seed=0, batch=32):
        minienc.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        rs = np.random.default_rng(seed)
        base = rs.normal(size=(batch, 16))
        self.views = [(base + 0.1 * rs.normal(size=base.shape)).astype(np.float32) for _ in range(2)]

    def parts(self, device):
        model = self.model.to(device)
        v1, v2 = (minienc.tensor(v, device=device) for v in self.views)
        return Adam(model.parameters(), lr=1e-3), \
            lambda: view_triplet_loss(model(v1), model(v2)), None


class MocoCase:
    """MoCo v2: EMA key encoder and a queue (refilled from the host so both devices start
    alike); one BN group, so no device-drawn shuffle."""

    def __init__(self, seed=0, batch=16):
        minienc.manual_seed(seed)
        encoder = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.model = MoCo(encoder, projection_head(16, 32, 8, batch_norm=False), queue_size=64,
                          bn_groups=1)
        rs = np.random.default_rng(seed)
        queue = rs.normal(size=(64, 8))
        self.queue = (queue / np.linalg.norm(queue, axis=1, keepdims=True)).astype(np.float32)
        base = rs.normal(size=(batch, 16))
        self.views = [(base + 0.1 * rs.normal(size=base.shape)).astype(np.float32) for _ in range(2)]

    def parts(self, device):
        model = self.model.to(device)
        model.key_encoder.to(device)
        model._buffers["queue"] = backend.to_device(self.queue.copy(), device)
        vq, vk = (minienc.tensor(v, device=device) for v in self.views)
        return Adam(model.param_groups(), lr=1e-3), \
            lambda: model.loss_of_views(vq, vk)["loss"], lambda: model.after_step(0.0)


class MlmCase:
    """BERT's masked language model; the masking drawn once on the host."""

    def __init__(self, seed=0, batch=8, length=16, vocab=40):
        minienc.manual_seed(seed)
        self.model = MaskedLanguageModel(vocab, max_len=length, dim=32, depth=1, num_heads=2)
        rs = np.random.default_rng(seed)
        ids = rs.integers(4, vocab, size=(batch, length))
        self.masking = mask_tokens(ids, special_ids=[0, 1, 2, 3], mask_id=3, vocab_size=vocab,
                                   rng=rs)

    def parts(self, device):
        model = self.model.to(device)
        masking = TokenMasking(*(backend.to_device(backend.to_host(a), device)
                                 for a in self.masking))
        return AdamW(model.parameters(), lr=1e-3), \
            lambda: model.loss_of_masking(masking)["loss"], None


def _two_views(seed, batch, features=16):
    """Two noisy copies of one host-drawn batch, the same on both devices."""
    rs = np.random.default_rng(seed)
    base = rs.normal(size=(batch, features))
    return [(base + 0.1 * rs.normal(size=base.shape)).astype(np.float32) for _ in range(2)]


def _mlp_encoder():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))


class TwoViewCase:
    """The methods without negatives (BYOL, SimSiam, VICReg, Barlow Twins) on an MLP encoder, with
    batch-norm heads; `after` is BYOL's EMA target update."""

    builders = {
        "byol": lambda: BYOL(_mlp_encoder(), byol_mlp(16, 32, 8), byol_mlp(8, 32, 8), momentum=0.99),
        "simsiam": lambda: SimSiam(_mlp_encoder(), simsiam_projector(16, 32, 16),
                                   simsiam_predictor(16, 8)),
        "vicreg": lambda: VICReg(_mlp_encoder(), vicreg_expander(16, 32, 16)),
        "barlow": lambda: BarlowTwins(_mlp_encoder(), barlow_projector(16, 32, 16)),
    }

    def __init__(self, method, seed=0, batch=16):
        minienc.manual_seed(seed)
        self.model = self.builders[method]()
        self.views = _two_views(seed, batch)

    def parts(self, device):
        model = self.model.to(device)
        v1, v2 = (minienc.tensor(v, device=device) for v in self.views)
        return Adam(model.param_groups(), lr=1e-3), \
            lambda: model.loss_of_views(v1, v2)["loss"], lambda: model.after_step(0.0)


class DinoCase(TwoViewCase):
    """DINO on the same encoder and views: a small head, the two views as the global crops, the
    centre moving every step and the teacher's EMA update after it."""

    builders = {"dino": lambda: DINO(_mlp_encoder(), dino_head(16, 32, hidden_features=32,
                                                                bottleneck_features=8),
                                     momentum=0.99)}

    def __init__(self, seed=0, batch=16):
        super().__init__("dino", seed, batch)

    def parts(self, device):
        model = self.model.to(device)
        v1, v2 = (minienc.tensor(v, device=device) for v in self.views)
        return (Adam(model.param_groups(), lr=1e-3), lambda: model.loss_of_views(v1, v2)["loss"],
                lambda: model.after_step(0.0))


class LeJEPACase:
    """LeJEPA on an MLP encoder over 4x4 images, two views; SIGReg's directions drawn once on the host."""

    def __init__(self, seed=0, batch=16):
        minienc.manual_seed(seed)
        self.model = LeJEPA(nn.Sequential(nn.Flatten(), _mlp_encoder()), proj_dim=8, hidden=32,
                            embed_dim=16)
        self.views = [v.reshape(batch, 1, 4, 4) for v in _two_views(seed, batch)]
        self.directions = backend.to_host(minienc.as_array(random_directions(8, num=32, device="cpu")))

    def parts(self, device):
        model = self.model.to(device)
        views = [minienc.tensor(v, device=device) for v in self.views]
        directions = minienc.tensor(self.directions, device=device)
        return (Adam(model.parameters(), lr=1e-3),
                lambda: model.loss_of_views(views, directions=directions)["loss"], None)


def _small(workload):
    """A benchmark workload at a test-sized batch."""
    return lambda seed=0: workload(seed=seed, batch=16)


CASES = {**{w.name: _small(w) for w in bench_mlp.WORKLOADS + bench_vision.WORKLOADS},
         "vae": VaeCase, "triplet": TripletCase, "moco": MocoCase, "mlm": MlmCase,
         "lejepa": LeJEPACase, "dino": DinoCase,
         **{name: (lambda name: lambda seed=0: TwoViewCase(name, seed))(name)
            for name in TwoViewCase.builders}}


def build_on(name, device, seed=0):
    """The case built with `device` as the default device (parameters made there directly)."""
    previous = backend.get_device()
    backend.set_device(device)
    try:
        return CASES[name](seed=seed)
    finally:
        backend.set_device(previous)


def first_losses(name, device, steps=STEPS):
    step, last_loss = bench_mlp.train_step(*build_on(name, device).parts(device))
    losses = []
    for _ in range(steps):
        step()
        losses.append(last_loss())
    return losses


# ----- on every machine: the registry itself works ---------------------------------------------
@pytest.mark.parametrize("name", ["vae", "triplet", "moco", "mlm", "lejepa", "dino", *TwoViewCase.builders])
def test_registry_cases_train_on_the_cpu(name):
    losses = first_losses(name, "cpu", steps=3)
    assert all(np.isfinite(losses)) and losses[0] != losses[-1]


# ----- on a GPU -------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_gives_identical_initial_weights(name):
    cpu, gpu = build_on(name, "cpu").model, build_on(name, "cuda").model
    assert gpu.device == "cuda"
    cpu_state, gpu_state = cpu.state_dict(), gpu.state_dict()
    assert cpu_state.keys() == gpu_state.keys()
    for key in cpu_state:
        np.testing.assert_array_equal(cpu_state[key], gpu_state[key], err_msg=key)


@needs_gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_first_steps_agree_on_both_devices(name):
    cpu, gpu = first_losses(name, "cpu"), first_losses(name, "cuda")
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-5, atol=1e-6)       # same weights, same math
    np.testing.assert_allclose(gpu, cpu, rtol=2e-3, atol=1e-5)              # float32 drift over 20 steps


def _sync_detector():
    """cupyx.allow_synchronize(False) raises DeviceSynchronized at any device-to-host copy or
    sync CuPy makes (ndarray.get, item, tolist, float/int/bool of an array, asnumpy, boolean
    indexing...): CuPy's own check, which reaches its extension-type methods that a test cannot
    patch. minienc's explicit exits are wrapped as well, so a sync through them is named."""
    cupyx = pytest.importorskip("cupyx")
    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize (sync detection)")
    return cupyx


@needs_gpu
@pytest.mark.parametrize("name", ["mlp_ae", "conv_ae", "vit_mae", "vit_jepa", "moco", "byol", "dino", "lejepa"])
def test_a_trainer_step_reads_the_device_only_at_the_log_interval(name, monkeypatch):
    cupyx = _sync_detector()
    case = build_on(name, "cuda")
    opt, loss_fn, after = case.parts("cuda")
    reads = []
    to_host = backend.to_host

    def logged_to_host(array):
        reads.append(trainer.step)
        return to_host(array)
    monkeypatch.setattr(backend, "to_host", logged_to_host)
    original_log = Trainer._log

    def log_with_sync_allowed(self):
        with cupyx.allow_synchronize(True):   # the one place a read is asked for
            return original_log(self)
    monkeypatch.setattr(Trainer, "_log", log_with_sync_allowed)
    callbacks = [lambda t: after()] if after is not None else []
    trainer = Trainer(lambda batch: loss_fn(), opt, models=case.model, callbacks=callbacks,
                      log_every=4, progress=False, batch_size=1)
    for _ in range(2):                            # warm-up: kernels compile, pools fill
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    backend.cupy().cuda.Device().synchronize()
    with cupyx.allow_synchronize(False):
        trainer.fit(list(range(12)), steps=12)    # raises DeviceSynchronized at a hidden sync
    assert len(trainer.losses) == 12 and all(np.isfinite(trainer.losses))
    assert all(step % 4 == 0 for step in reads), reads   # to_host only inside _log


@needs_gpu
def test_the_sync_detector_catches_a_hidden_read():
    """The detector is live: a step that calls .item() is caught."""
    cupyx = _sync_detector()
    x = minienc.tensor(np.ones(3, dtype=np.float32), device="cuda")
    with pytest.raises(cupyx.DeviceSynchronized):
        with cupyx.allow_synchronize(False):
            (x * 2.0).sum().item()


def test_the_gpu_bar_flags_a_method_off_by_more_than_half_a_point_or_missing(tmp_path, capsys):
    """.ci/gpu_vs_cpu.py, issue 30's bar for the GPU run (5-shot within 0.5 points of the CPU's),
    checked here where no GPU is needed: against docs/compare.md's table, and two files."""
    import importlib.util
    import json
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / ".ci" / "gpu_vs_cpu.py"
    spec = importlib.util.spec_from_file_location("gpu_vs_cpu", path)
    bar = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bar)
    table = bar.cpu_fewshot()
    assert {"autoencoder", "SimCLR", "JEPA", "DINO"} <= set(table)
    assert not any(name.startswith(("raw", "PCA", "random")) for name in table)
    same = [{"method": m, "fewshot": v} for m, v in table.items()]
    (tmp_path / "same.json").write_text(json.dumps(same))
    assert bar.main(tmp_path / "same.json") == 0
    off = [dict(row, fewshot=row["fewshot"] + 0.004 * (row["method"] == "JEPA")
                + 0.007 * (row["method"] == "VAE")) for row in same if row["method"] != "DINO"]
    (tmp_path / "off.json").write_text(json.dumps(off))
    assert bar.main(tmp_path / "off.json", tmp_path / "same.json") == 1
    lines = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines()
                 if ": " in line)
    assert lines["VAE"].endswith("+0.7 points: FAIL")
    assert lines["JEPA"] == f"CPU {table['JEPA']:.1%}, GPU {table['JEPA'] + 0.004:.1%}, " \
                            f"+0.4 points: ok"
    assert lines["DINO"].endswith("not run on the GPU: FAIL")
    assert lines["SimCLR"].endswith("ok")
