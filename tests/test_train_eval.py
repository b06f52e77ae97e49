"""Gradient accumulation equals the big batch where the loss is a per-example mean (and is
documented to differ where the loss couples a batch's examples), the evaluation callback
logs its numbers at the asked steps, at a reported cost, without changing the training, and the
collapse gauges tell a collapsed encoder from a spread one."""
import json

import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.data import ImageDataset
from minienc.eval import CollapseGauges, Evaluator
from minienc.objectives.contrastive import nt_xent
from minienc.optim import SGD, Adam
from minienc.train import Trainer


def _float64_model(device, out=3):
    minienc.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, out)).astype("float64").to(device)


def _losses():
    def mse(model, batch):
        x, y = batch
        return minienc.mse_loss(model(x), y)

    def ce(model, batch):
        x, y = batch
        return minienc.cross_entropy(model(x), y)
    return {"mse": mse, "cross_entropy": ce}


def _batches(device, kind, n, size, seed=0):
    rs = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rs.normal(size=(size, 5))
        y = rs.normal(size=(size, 3)) if kind == "mse" else rs.integers(0, 3, size=size)
        out.append((minienc.tensor(x, dtype="float64", device=device),
                    minienc.tensor(y, dtype="float64" if kind == "mse" else None, device=device)))
    return out


def _concat(micro, k):
    """Every k consecutive micro-batches as one big batch."""
    return [tuple(minienc.tensor(np.concatenate([b[j].numpy() for b in micro[i:i + k]]),
                                 dtype=micro[0][j].dtype, device=micro[0][j].device)
                  for j in range(2)) for i in range(0, len(micro), k)]


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_micro_batches_equals_the_big_batch(device, kind, k):
    loss_fn = _losses()[kind]
    micro = _batches(device, kind, n=3 * k, size=4)
    results = []
    for data, accumulate in ((micro, k), (_concat(micro, k), 1)):
        model = _float64_model(device)
        opt = SGD(model.parameters(), lr=0.3, momentum=0.9)
        trainer = Trainer(lambda b, m=model: loss_fn(m, b), opt, accumulate=accumulate,
                          progress=False, log_every=1)
        trainer.fit(data, steps=3)
        results.append(([p.numpy().copy() for p in model.parameters()], trainer.losses))
    (params_a, losses_a), (params_b, losses_b) = results
    assert len(losses_a) == len(losses_b) == 3            # steps count optimizer steps
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-12)   # the logged loss: the step's mean
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_a_short_group_at_the_epochs_end_steps_with_its_own_mean(device):
    """5 batches, accumulate 2: steps of 2, 2 and 1 batches per epoch, each the mean gradient."""
    loss_fn = _losses()["mse"]
    micro = _batches(device, "mse", n=5, size=4)
    model = _float64_model(device)
    trainer = Trainer(lambda b: loss_fn(model, b), SGD(model.parameters(), lr=0.1), accumulate=2,
                      progress=False)
    trainer.fit(micro, epochs=2)
    assert trainer.step == 6 and trainer.epoch == 2
    big = _concat(micro[:4], 2) + [micro[4]]
    reference = _float64_model(device)
    Trainer(lambda b: loss_fn(reference, b), SGD(reference.parameters(), lr=0.1),
            progress=False).fit(big, epochs=2)
    for a, b in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-13)


def test_accumulation_is_not_the_big_batch_for_nt_xent(device):
    """As the Trainer's docstring says: each micro-batch has only its own negatives."""
    rs = np.random.default_rng(0)
    z = [minienc.tensor(rs.normal(size=(8, 4)), dtype="float64", device=device) for _ in range(2)]
    grads = []
    for split in (1, 2):
        w = minienc.tensor(np.eye(4), dtype="float64", requires_grad=True, device=device)
        for i in range(split):
            part = slice(i * 8 // split, (i + 1) * 8 // split)
            (nt_xent(z[0][part] @ w, z[1][part] @ w) * (1.0 / split)).backward()
        grads.append(w.grad.copy())
    assert np.abs(minienc.backend.to_host(grads[0] - grads[1])).max() > 1e-3


def test_accumulate_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="accumulate must be a positive integer"):
        Trainer(lambda b: b, None, accumulate=0)
    with pytest.raises(ValueError, match="eval_every needs an evaluator"):
        Trainer(lambda b: b, None, eval_every=10)


# ----- evaluation while training -------------------------------------------------------------------

def _blobs(n_train=120, n_test=60, seed=0):
    """Three separable classes of 6-d points, shaped as (N, 1, 2, 3) images."""
    rs = np.random.default_rng(seed)
    centres = rs.normal(size=(3, 6)) * 3

    def draw(n):
        y = np.arange(n) % 3
        return (centres[y] + rs.normal(size=(n, 6))).reshape(n, 1, 2, 3).astype(np.float32), y
    return ImageDataset(*draw(n_train), *draw(n_test), "blobs")


def _encoder_run(device, out_dir=None, evaluate=True, eval_every=5, steps=12, eval_budget=None):
    data = _blobs()
    minienc.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
                            nn.Linear(16, 4)).to(device)
    batches = [minienc.tensor(data.x_train[i:i + 20], device=device) for i in range(0, 120, 20)]

    def step(x):   # a reconstruction-free toy objective that uses the host RNG (noise views)
        noise = minienc.backend.host_rng().normal(size=x.shape).astype(np.float32) * 0.1
        z1, z2 = encoder(x), encoder(x + minienc.tensor(noise, device=device))
        return minienc.mse_loss(z1, z2) + (1.0 - (z1 * z1).mean()) ** 2
    evaluator = Evaluator(encoder, data, train_size=60, test_size=30, draws=3) if evaluate else None
    trainer = Trainer(step, Adam(encoder.parameters(), lr=1e-2), models=encoder, log_every=4,
                      evaluator=evaluator, eval_every=eval_every if evaluate else None,
                      eval_budget=eval_budget, out_dir=out_dir, progress=False)
    trainer.fit(batches, steps=steps)
    return trainer, encoder


def test_evaluation_logs_at_the_start_every_n_steps_and_at_the_end(tmp_path, device):
    trainer, _ = _encoder_run(device, out_dir=str(tmp_path))
    assert [e["step"] for e in trainer.evaluations] == [0, 5, 10, 12]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in lines if "eval_knn" in r]
    assert [r["step"] for r in evaluated] == [0, 5, 10, 12]
    for r in evaluated:
        assert 0 <= r["eval_knn"] <= 1 and 0 <= r["eval_fewshot"] <= 1
        assert 1 <= r["eval_rankme"] <= 4 + 1e-6 and r["eval_std"] >= 0
    assert evaluated[-1]["eval_s"] == pytest.approx(trainer.eval_s) and trainer.eval_s > 0
    assert 0 < trainer.eval_s < trainer.elapsed_s
    # every logged step keeps its loss (the records an evaluation amends are the log's own)
    assert [r["step"] for r in lines if "loss" in r] == [4, 5, 8, 10, 12]
    for name in ("loss.png", "evaluation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_does_not_change_the_training(device):
    """Batch-norm statistics and the host RNG are left alone: the same losses and weights."""
    with_eval, a = _encoder_run(device, evaluate=True)
    without, b = _encoder_run(device, evaluate=False)
    assert with_eval.losses == without.losses
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.training   # the model is back in training mode


def test_the_evaluations_share_of_the_run_stays_within_its_budget():
    """A slow evaluator asked for at every step: most passes are skipped, the share is bounded
    (by the budget, plus the one pass at the start that nothing can be weighed against)."""
    import time
    passes = []

    def slow_evaluator():
        time.sleep(0.02)
        passes.append(1)
        return {"knn": 0.5}

    w = nn.Parameter(np.ones(3, dtype=np.float32))

    def step(_):
        time.sleep(0.003)
        return (w * w).sum()

    trainer = Trainer(step, SGD([w], lr=0.1), evaluator=slow_evaluator, eval_every=1,
                      eval_budget=0.15, progress=False)
    trainer.fit(list(range(10)), steps=200)
    assert 2 <= len(passes) < 100 and trainer.eval_skipped > 100, (len(passes), trainer.eval_skipped)
    assert trainer.eval_s <= 0.15 * trainer.elapsed_s + 0.03, (trainer.eval_s, trainer.elapsed_s)
    unbounded = Trainer(step, SGD([w], lr=0.1), evaluator=slow_evaluator, eval_every=10,
                        eval_budget=None, progress=False).fit(list(range(10)), steps=30)
    assert [e["step"] for e in unbounded.evaluations] == [0, 10, 20, 30]


def test_the_evaluator_sees_separable_classes():
    data = _blobs()
    scores = Evaluator(lambda x: x.reshape(x.shape[0], -1), data, train_size=60, test_size=30,
                       draws=3)()
    assert scores["knn"] > 0.9 and scores["fewshot"] > 0.9
    assert set(scores) == {"knn", "fewshot", "rankme", "std"}


def test_evaluator_refuses_bad_sizes():
    data = _blobs()
    with pytest.raises(ValueError, match="Evaluator: train_size must be a positive integer"):
        Evaluator(lambda x: x, data, train_size=0)
    with pytest.raises(ValueError, match="fewer than shots=5"):
        Evaluator(lambda x: x, data, train_size=6)


def test_collapse_gauges_record_every_n_steps_and_tell_a_collapsed_encoder(tmp_path):
    data = _blobs()
    gauges = CollapseGauges(data.x_train, 5, spread=lambda x: x.reshape(x.shape[0], -1),
                            collapsed=lambda x: minienc.ones(x.shape[0], 4))
    gauges.record(0)
    w = nn.Parameter(np.ones(3, dtype=np.float32))
    Trainer(lambda _: (w * w).sum(), SGD([w], lr=0.1), callbacks=[gauges],
            progress=False).fit(list(range(4)), steps=12)
    curves = gauges.curves
    assert curves["step"] == [0, 5, 10]
    assert min(curves["RankMe (spread)"]) > 2.0 and min(curves["embedding std (spread)"]) > 0.05
    assert curves["embedding std (collapsed)"] == [0.0] * 3
    assert all(1.0 <= r < 1.0 + 1e-4 for r in curves["RankMe (collapsed)"])
    path = gauges.save(str(tmp_path), "gauges")
    assert path == str(tmp_path / "gauges.png") and (tmp_path / "gauges.png").stat().st_size > 1000
    assert json.loads((tmp_path / "gauges.json").read_text()) == curves


def test_the_budget_never_skips_the_evaluation_after_the_last_step():
    """Regression (issue 28): with eval_every=1 the budget skipped the last step's evaluation
    and then the final one that the Trainer promises after the last step."""
    import time
    w = nn.Parameter(np.ones(3, dtype=np.float32))

    def slow_evaluator():
        time.sleep(0.02)
        return {"knn": 0.5}

    trainer = Trainer(lambda _: (w * w).sum(), SGD([w], lr=0.1), evaluator=slow_evaluator,
                      eval_every=1, eval_budget=0.15, progress=False)
    trainer.fit(list(range(10)), steps=20)
    assert trainer.eval_skipped > 0 and trainer.evaluations[-1]["step"] == 20
