"""One protocol for every objective (minienc/objectives/protocol.py): each of the 16 objectives,
built small, trains a few steps through ONE loop body -- the protocol docstring's, the same for
all -- and through the Trainer, changing only the line that builds the objective. Losses are
finite, the trained parameters move, a target network is never among param_groups and moves
only by after_step, and embed gives (B, D). The Trainer's progress is exact on resume."""
import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.data import MultiCrop, contrastive_augment
from minienc.objectives import (BYOL, DINO, IJEPA, MAE, BarlowTwins, LeJEPA, MaskedLanguageModel,
                                MaskedViewsJEPA, MoCo, Objective, SimCLR, SimSiam, Triplet, VICReg,
                                barlow_projector, build_model, byol_mlp, dino_head,
                                projection_head, simsiam_predictor, simsiam_projector,
                                vicreg_expander)
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.checkpoint import read_checkpoint, save_checkpoint
from minienc.engine import no_grad
from minienc.optim import SGD
from minienc.train import Trainer

STEPS, BATCH, VOCAB = 3, 8, 20


def mlp():
    return nn.Sequential(nn.Flatten(), nn.MLPEncoder(64, (16,), 8, batch_norm=True))


def vit():
    return nn.VisionTransformer(image_size=8, patch_size=2, dim=16, depth=1, num_heads=2)


# ----- the registry: one line per objective --------------------------------------------------------
augment = contrastive_augment()
OBJECTIVES = {
    "autoencoder": lambda: build_model("autoencoder", (1, 8, 8), 4, hidden=(16,)),
    "denoising": lambda: build_model("denoising", (1, 8, 8), 4, hidden=(16,), noise="mask"),
    "vae": lambda: build_model("vae", (1, 8, 8), 4, hidden=(16,), beta=0.5),
    "triplet": lambda: Triplet(mlp(), augment, miner="semi_hard", margin=0.5),
    "simclr": lambda: SimCLR(mlp(), projection_head(8, 16, 4), augment),
    "moco": lambda: MoCo(mlp(), projection_head(8, 16, 4, batch_norm=False), augment,
                         queue_size=16, momentum=0.5, bn_groups=2),
    "mlm": lambda: MaskedLanguageModel(VOCAB, max_len=8, dim=8, depth=1, num_heads=2,
                                       special_ids=(0, 1, 2, 3), mask_id=3),
    "mae": lambda: MAE(image_size=8, patch_size=2, dim=16, depth=1, num_heads=2, decoder_dim=8,
                       decoder_depth=1, decoder_num_heads=2),
    "byol": lambda: BYOL(mlp(), byol_mlp(8, 16, 4), byol_mlp(4, 16, 4), augment, momentum=0.5),
    "simsiam": lambda: SimSiam(mlp(), simsiam_projector(8, 16, 8), simsiam_predictor(8, 4), augment),
    "vicreg": lambda: VICReg(mlp(), vicreg_expander(8, 16, 8), augment),
    "barlow": lambda: BarlowTwins(mlp(), barlow_projector(8, 16, 8), augment),
    "dino": lambda: DINO(mlp(), dino_head(8, 16, 16, 4, batch_norm=True),
                         MultiCrop(2, 1, transform=augment), momentum=0.5),
    "ijepa": lambda: IJEPA(vit(), predictor_dim=8, predictor_depth=1, momentum=(0.5, 1.0),
                           masks=MultiBlockMaskSampler(4, num_targets=2, min_context=2)),
    "lejepa": lambda: LeJEPA(vit(), proj_dim=4, hidden=8, num_directions=8, augment=augment),
    "jepa_default": lambda: MaskedViewsJEPA(vit(), predictor_dim=8, predictor_depth=1, proj_dim=4,
                                            hidden=8, num_directions=8, augment=augment),
}


def batches(name, count=STEPS, seed=0):
    """What the data loader yields: token ids (B, T) for MLM, images (B, 1, 8, 8) for the rest."""
    rng = np.random.default_rng(seed)
    if name == "mlm":
        return [rng.integers(4, VOCAB, size=(BATCH, 8)) for _ in range(count)]
    return [minienc.tensor(rng.random((BATCH, 1, 8, 8)), dtype="float32") for _ in range(count)]


def snapshot(params):
    return [p.numpy().copy() for p in params]


def check_training(objective, losses, trained_before, frozen_before, name):
    trained = [p for g in objective.param_groups() for p in g["params"]]
    frozen = [p for p in objective.parameters() if not p.requires_grad]
    assert len(losses) == STEPS and np.isfinite(losses).all(), losses
    assert any(not np.array_equal(a, p.numpy()) for a, p in zip(trained_before, trained))
    assert not {id(p) for p in frozen} & {id(p) for p in trained}   # no target is optimised
    if frozen:                                                      # after_step moved the target
        assert any(not np.array_equal(a, p.numpy()) for a, p in zip(frozen_before, frozen)), name
    x = batches(name, 1, seed=9)[0]
    with minienc.no_grad():
        embedding = objective.embed(x)
    assert embedding.ndim == 2 and embedding.shape[0] == BATCH


def parts(name):
    minienc.manual_seed(0)
    objective = OBJECTIVES[name]()                 # the only line that differs between them
    optimizer = SGD(objective.param_groups(weight_decay=1e-4), lr=0.05, momentum=0.9)
    trained = [p for g in objective.param_groups() for p in g["params"]]
    frozen = [p for p in objective.parameters() if not p.requires_grad]
    return objective, optimizer, snapshot(trained), snapshot(frozen)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_through_one_loop_body(name):
    objective, optimizer, trained, frozen = parts(name)
    losses = []
    for step, batch in enumerate(batches(name)):   # protocol.py's loop, the same for all
        terms = objective.loss(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        objective.after_step(step / STEPS)
        losses.append(terms["loss"].item())
    check_training(objective, losses, trained, frozen, name)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_through_the_trainer(name):
    objective, optimizer, trained, frozen = parts(name)
    trainer = Trainer(objective, optimizer, log_every=1, progress=False)
    trainer.fit(batches(name), steps=STEPS)
    assert trainer.models["objective"] is objective   # what a checkpoint saves
    check_training(objective, trainer.losses, trained, frozen, name)


# the module whose output embed(x) is, by its prefix in the objective's state_dict, where it is
# not the encoder: I-JEPA's EMA target, DINO's teacher, BYOL's and MoCo's encoder inside their
# online network (MoCo's was none of the names the export guessed from)
EMBEDS_WITH = {"ijepa": "target_encoder.", "dino": "teacher.layers.0.", "byol": "online_network.layers.0.",
               "moco": "query_encoder.layers.0."}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_the_checkpoint_records_the_module_embed_reads_and_only_it(name, tmp_path):
    """What demos/export.py takes out: embed(x) moves with that module's parameters and with no
    other (the export used to guess the module from the prefixes' names)."""
    objective = OBJECTIVES[name]().eval()
    meta, _ = read_checkpoint(save_checkpoint(tmp_path / "checkpoint.npz", {"objective": objective}))
    prefix = meta["encoders"]["objective"]
    assert prefix == EMBEDS_WITH.get(name, "encoder.")
    x = batches(name, 1, seed=9)[0]

    def embedding():
        with no_grad():
            return objective.embed(x).numpy()

    before = embedding()
    inside = [p for key, p in objective.named_parameters() if key.startswith(prefix)]
    for key, p in objective.named_parameters():
        if not key.startswith(prefix):
            p.data = p.data * 0 + 0.3
    np.testing.assert_array_equal(embedding(), before)
    for p in inside:
        p.data = p.data + 0.1
    assert not np.allclose(embedding(), before)


class Recorder(Objective):
    """A least-squares objective that records the progress after_step is given."""

    def __init__(self):
        self.encoder = nn.Linear(3, 2)
        self.seen = []

    def loss(self, batch):
        return {"loss": (self.encoder(batch) ** 2).mean()}

    def after_step(self, progress):
        self.seen.append(progress)


def test_trainer_progress_is_step_over_steps_and_exact_on_resume(tmp_path):
    data = [minienc.tensor(np.random.default_rng(i).random((4, 3))) for i in range(3)]

    def run(stop_at=None, resume=False):
        objective = Recorder()
        trainer = Trainer(objective, SGD(objective.param_groups(), lr=0.1), out_dir=str(tmp_path),
                          progress=False, log_every=1,
                          callbacks=[lambda t: setattr(t, "_interrupted", t.step == stop_at)])
        try:
            trainer.fit(data, steps=5, resume=resume)
        except KeyboardInterrupt:
            pass
        return objective.seen

    assert run(stop_at=2) == [0.0, 0.2]          # Ctrl-C after two steps: a checkpoint
    assert run(resume=True) == [0.4, 0.6, 0.8]   # the resumed run goes on where it was


def test_trainer_needs_the_run_length_for_an_objective():
    objective = Recorder()
    one_pass = (x for x in [minienc.tensor(np.ones((2, 3)))])
    with pytest.raises(ValueError, match="after_step.*needs the run's length"):
        Trainer(objective, SGD(objective.param_groups(), lr=0.1), progress=False).fit(
            lambda epoch: one_pass, epochs=1)


def test_view_objectives_say_what_is_missing_without_augment():
    model = SimCLR(mlp(), projection_head(8, 16, 4))
    with pytest.raises(ValueError, match=r"SimCLR.loss\(images\).*augment"):
        model.loss(batches("simclr", 1)[0])
    with pytest.raises(ValueError, match="MaskedLanguageModel.loss.*mask_id"):
        MaskedLanguageModel(VOCAB, max_len=8, dim=8, depth=1, num_heads=2).loss(batches("mlm", 1)[0])
