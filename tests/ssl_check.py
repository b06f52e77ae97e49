"""Test helpers shared by the self-supervised objectives' tests (the contrastive ones, BYOL,
SimSiam, VICReg, Barlow Twins, DINO): float64 tensors and host copies, unit rows, tiny encoders,
random images, a gradcheck of a whole objective with respect to every trained parameter, a
short run on digits, and the exact-resume check (2N steps in one run against N steps, a
checkpoint, a fresh model loaded from it and N more)."""
import numpy as np
import pytest

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, contrastive_augment, load_digits
from minienc.optim import SGD
from minienc.train import Trainer


def host(x):
    return backend.to_host(x.data if hasattr(x, "data") else x)


def t64(array, device, grad=True):
    return minienc.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad,
                          dtype="float64", device=device)


def unit(x):
    """Each row of a host array scaled to unit length."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def images(n, device, seed, size=4, dtype="float32"):
    data = np.random.default_rng(seed).random((n, 1, size, size))
    return minienc.tensor(data, dtype=dtype, device=device)


def two_views(device, n=5):
    """Two batches of n random 4x4 images (seeds 1 and 2): the two views the tests feed."""
    return images(n, device, 1), images(n, device, 2)


def layer_names(head):
    """The class names of a Sequential head's layers, in order."""
    return [type(m).__name__ for m in head.layers]


def assert_loss_of_projected_views(model, head, loss_fn, v1, v2):
    """model.embed(x) is its encoder's representation, and model.loss_of_views(v1, v2) is
    `loss_fn` of both views through the encoder and then `head`."""
    np.testing.assert_array_equal(host(model.embed(v1)), host(model.encoder(v1)))
    z1, z2 = head(model.encoder(v1)), head(model.encoder(v2))
    loss = model.loss_of_views(v1, v2)["loss"]
    assert loss.item() == pytest.approx(loss_fn(z1, z2).item(), rel=1e-5)


def tiny_encoder(in_features=16, hidden=8, out=6, batch_norm=True):
    return nn.Sequential(nn.Flatten(), nn.MLPEncoder(in_features, (hidden,), out, batch_norm=batch_norm))


def on_device(device, build):
    """build() with minienc's default device set to `device` (layers are created there)."""
    minienc.set_device(device)
    try:
        return build()
    finally:
        minienc.set_device("cpu")


def gradcheck_objective(model, loss_fn, *inputs, trained=None, **options):
    """gradcheck of loss_fn(*inputs) (a method of `model`, which is cast to float64, giving a
    loss or a dict of terms with "loss") with respect
    to every parameter of the children named in `trained` (default: every parameter that
    requires grad), each bound as an explicit input through functional_call."""
    model.astype("float64")
    wrapper = _Call(model, loss_fn)
    params = {name: p for name, p in wrapper.named_parameters()
              if p.requires_grad and (trained is None or name.split(".")[1] in trained)}
    names = list(params)
    inputs = [x.astype("float64") for x in inputs]

    def fn(*args):
        return nn.functional_call(wrapper, dict(zip(names, args)), *inputs)

    return minienc.gradcheck(fn, *params.values(), **options)


class _Call(nn.Module):
    """A module whose forward is `loss_fn` (a method of `model`), so functional_call can swap
    the parameters of `model` under it."""

    def __init__(self, model, loss_fn):
        self.model, self._fn = model, loss_fn

    def forward(self, *inputs):
        out = self._fn(*inputs)
        return out["loss"] if isinstance(out, dict) else out


def digits_batches(n=256, batch_size=64, seed=0):
    return BatchIterator(load_digits().x_train[:n], batch_size=batch_size, drop_last=True, seed=seed)


def short_run(objective, epochs=6, lr=0.05, n=512):
    """Train `objective` on two augmented views of digits with SGD, through the protocol's loop
    (its augment set here); returns the losses (host floats)."""
    objective.augment = contrastive_augment()
    opt = SGD(objective.param_groups(), lr=lr, momentum=0.9)
    steps = epochs * (n // 128)
    losses = []
    for epoch in range(epochs):
        for batch in BatchIterator(load_digits().x_train[:n], batch_size=128, drop_last=True, seed=epoch):
            loss = objective.loss(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            objective.after_step(len(losses) / steps)
            losses.append(loss.item())
    return losses


def resume_matches(tmp_path, build, steps=4, lr=0.05):
    """Train build() -> an objective for 2 * steps in one Trainer; and again, stopped after
    `steps` as Ctrl-C stops a run (a checkpoint), then a FRESH build() resumed for the rest.
    Returns the two objectives' state_dicts (they must be equal, key by key, bit for bit on
    CPU)."""
    def stop_after(trainer):
        if trainer.step == steps:
            trainer._interrupted = True   # what the Ctrl-C handler sets

    states = []
    for run, parts in enumerate([[[]], [[stop_after], []]]):
        out = tmp_path / f"run{run}"
        for i, callbacks in enumerate(parts):
            minienc.manual_seed(7)            # the same init every time (a resume overwrites it)
            objective = build()
            opt = SGD(objective.param_groups(), lr=lr, momentum=0.9)
            trainer = Trainer(objective, opt, callbacks=callbacks, out_dir=str(out), log_every=1,
                              progress=False)
            if i == 0:
                minienc.manual_seed(11)       # the data and augmentation stream of the run
            try:
                trainer.fit(digits_batches(), steps=2 * steps, resume=i > 0)
            except KeyboardInterrupt:
                assert callbacks, "only the stopped run is interrupted"
        states.append(objective.state_dict())
    return states
