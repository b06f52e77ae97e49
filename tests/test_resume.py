"""Exact resumption of every objective that keeps state outside its trained parameters (EMA
targets, queues, batch-norm running statistics) or draws random numbers inside its step (key
shuffles, masks, SIGReg's directions):
2N steps straight must equal N steps, a checkpoint, a fresh model built from another seed, a
load and N more steps -- every array of the state bit for bit, and every loss."""
import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.checkpoint import load_checkpoint, save_checkpoint
from minienc.objectives import IJEPA, MAE, MoCo, MultiBlockMaskSampler, SimCLR, projection_head
from minienc.objectives.byol import BYOL
from minienc.objectives.lejepa import LeJEPA
from minienc.optim import SGD, AdamW

STEPS = 3


def batches(count, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [minienc.tensor(rng.random(shape)) for _ in range(count)]


def moco():
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(16, (8,), 6, batch_norm=True))
    model = MoCo(encoder, projection_head(6, 8, 5, batch_norm=False), queue_size=8, momentum=0.9,
                 bn_groups=2)   # the key shuffle is drawn from the RNG every step
    views = batches(2 * 2 * STEPS, (4, 1, 4, 4))

    def step(i):
        return model.loss_of_views(views[2 * i], views[2 * i + 1])["loss"]
    return model, SGD(model.param_groups(), lr=0.5, momentum=0.9), step, \
        lambda: model.after_step(0.0)


def ijepa():
    vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=16, depth=1, num_heads=2)
    model = IJEPA(vit, predictor_dim=8, predictor_depth=1)
    sampler = MultiBlockMaskSampler(4, num_targets=2, min_context=2)
    images = batches(2 * STEPS, (3, 1, 8, 8))

    def step(i):
        context, targets = sampler(3)   # drawn from the host RNG, saved with the checkpoint
        return model.loss(images[i], masks=(context, targets))["loss"]
    return model, AdamW(model.param_groups(0.05), lr=1e-2), step, lambda: model.update_target(0.9)


def simclr():
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(16, (8,), 6, batch_norm=True))
    model = SimCLR(encoder, projection_head(6, 8, 4))   # batch norm: running statistics
    views = batches(2 * 2 * STEPS, (4, 1, 4, 4))

    def step(i):
        return model.loss_of_views(views[2 * i], views[2 * i + 1])["loss"]
    return model, SGD(model.param_groups(), lr=0.1, momentum=0.9), step, lambda: None


def mae():
    model = MAE(image_size=4, patch_size=2, dim=8, depth=1, num_heads=2, decoder_dim=8,
                decoder_depth=1, decoder_num_heads=2)
    images = batches(2 * STEPS, (3, 1, 4, 4))

    def step(i):
        return model.loss(images[i])["loss"]     # masks drawn from the RNG every step
    return model, AdamW(model.param_groups(), lr=1e-2), step, lambda: None


def byol():
    encoder = nn.Sequential(nn.Flatten(), nn.MLPEncoder(16, (8,), 6, batch_norm=True))
    model = BYOL(encoder, projection_head(6, 8, 5), projection_head(5, 8, 5), momentum=0.9)
    views = batches(2 * 2 * STEPS, (4, 1, 4, 4))   # an EMA target
    opt = SGD(model.param_groups(), lr=0.1, momentum=0.9)

    def step(i):
        return model.loss_of_views(views[2 * i], views[2 * i + 1])["loss"]
    return model, opt, step, lambda: model.after_step(0.0)


def lejepa():
    vit = nn.VisionTransformer(image_size=4, patch_size=2, dim=8, depth=1, num_heads=2)
    model = LeJEPA(vit, proj_dim=3, hidden=6, num_directions=4)   # directions drawn every step
    views = batches(2 * STEPS, (2, 3, 1, 4, 4))

    def step(i):
        return model.loss_of_views(views[i].data)["loss"]
    return model, AdamW(model.parameters(), lr=1e-2), step, lambda: None


def train(parts, first, last):
    model, opt, step, after = parts
    losses = []
    for i in range(first, last):
        opt.zero_grad()
        loss = step(i)
        loss.backward()
        opt.step()
        after()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("make", [moco, ijepa, simclr, mae, byol, lejepa], ids=lambda f: f.__name__)
def test_n_steps_save_load_n_steps_equals_2n_steps(tmp_path, make):
    minienc.manual_seed(0)
    straight = make()
    straight_losses = train(straight, 0, 2 * STEPS)

    minienc.manual_seed(0)
    first = make()
    losses = train(first, 0, STEPS)
    path = str(tmp_path / "run.npz")
    save_checkpoint(path, {"model": first[0]}, first[1])

    minienc.manual_seed(123)            # a fresh process: other weights, another RNG position
    resumed = make()
    load_checkpoint(path, {"model": resumed[0]}, resumed[1])
    losses += train(resumed, STEPS, 2 * STEPS)

    assert losses == straight_losses
    want, got = straight[0].state_dict(), resumed[0].state_dict()
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
