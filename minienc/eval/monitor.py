"""Evaluation while training: a cheap, fixed-cost look at the embeddings every N steps.

    evaluator = Evaluator(encoder, data)                 # a fixed, seeded, stratified subset
    trainer = Trainer(step, opt, models=model, evaluator=evaluator, eval_every=100, ...)

Each call encodes the same `train_size` train images and `test_size` test images (never the
whole dataset, so one evaluation costs the same at step 10 and at step 10,000, on digits and on
MNIST) and returns the numbers that show learning and collapse: weighted k-NN accuracy and the
few-shot probe (test subset, with the train subset as the labelled pool), RankMe and the
embedding std of the train subset. They follow the trend, not the final table's numbers: the
subset is smaller than the dataset, and the probe is fitted for 100 steps instead of 300 (within
about a point on digits, at a third of the cost: the probe is most of an evaluation's time). The probes draw from their own seeded generators, so an
evaluation never moves the training's random stream; the Trainer also puts its models in eval
mode while it runs, so batch-norm statistics are not updated by it.

CollapseGauges is the cheaper look the joint-embedding demos take every N steps: RankMe and the
embedding std of a few encoders (a Trainer callback).
"""
import json
import os

from .. import backend, checks
from ..data.datasets import stratified_subset
from .evaluate import encode
from .features import can_probe
from .health import embedding_std, rankme
from .knn import knn_accuracy
from .probe import few_shot_probe

# what each number is called in metrics.jsonl (prefixed "eval_") and on the curves
EVAL_NAMES = {"knn": "k-NN accuracy", "fewshot": "few-shot probe", "rankme": "RankMe",
              "std": "embedding std"}


class Evaluator:
    """k-NN, few-shot probe, RankMe and embedding std of `encoder` on a fixed subset of `data`
    (an ImageDataset: x_train, y_train, x_test, y_test). `encoder` is a Module or any callable
    from an image batch to embeddings (see minienc.eval.encode). Calling it returns a dict with
    the keys of EVAL_NAMES; for unlabeled images (labels -1) k-NN and the probe are NaN (no
    value: a gap in the curves), RankMe and the embedding std as usual.

    train_size / test_size: the subset (the cost of one call grows with them, not with the data);
    shots, draws, probe_steps: the few-shot probe (draws solved as one batched problem); k: the
    k-NN's k."""

    def __init__(self, encoder, data, train_size=1000, test_size=500, shots=5, draws=10, k=20,
                 seed=0, batch_size=256, probe_steps=100):
        for name, value in (("train_size", train_size), ("test_size", test_size),
                            ("shots", shots), ("draws", draws), ("k", k),
                            ("probe_steps", probe_steps), ("batch_size", batch_size)):
            checks.positive_int("Evaluator", name, value)   # (True is not a size)
        train = stratified_subset(data.y_train, train_size, seed)
        test = stratified_subset(data.y_test, test_size, seed + 1)
        self.encoder = encoder
        self.x_train, self.y_train = data.x_train[train], data.y_train[train]
        self.x_test, self.y_test = data.x_test[test], data.y_test[test]
        self.labeled = can_probe(self.y_train, self.y_test)
        counts = backend.numpy.bincount(backend.to_host(self.y_train)) if self.labeled else None
        if self.labeled and counts[counts > 0].min() < shots:
            raise ValueError(f"Evaluator: a class has {counts[counts > 0].min()} samples in the "
                             f"{len(train)}-image train subset, fewer than shots={shots}; raise "
                             f"train_size or lower shots")
        self.shots, self.draws, self.k, self.seed = shots, draws, k, seed
        self.probe_steps = probe_steps
        self.batch_size = batch_size

    def __call__(self):
        f_train = encode(self.encoder, self.x_train, self.batch_size)
        health = {"rankme": rankme(f_train), "std": embedding_std(f_train)}
        if not self.labeled:
            return {"knn": float("nan"), "fewshot": float("nan"), **health}
        f_test = encode(self.encoder, self.x_test, self.batch_size)
        return {
            "knn": knn_accuracy(f_train, self.y_train, f_test, self.y_test, k=self.k),
            "fewshot": few_shot_probe(f_train, self.y_train, f_test, self.y_test, shots=self.shots,
                                      draws=self.draws, seed=self.seed, steps=self.probe_steps),
            **health,
        }

    def __repr__(self):
        return (f"Evaluator({len(self.x_train)} train / {len(self.x_test)} test images, "
                f"{self.shots}-shot x {self.draws} draws, k={self.k})")


class CollapseGauges:
    """A Trainer callback: every `every` steps, RankMe and the embedding std of each of
    `encoders` (name -> a Module or a function of image batches) on `images`, kept in `curves`
    ({"step": [...], "RankMe (name)": [...], "embedding std (name)": [...]}). Call `record(0)`
    before training for the starting point.

    Without negatives (BYOL, SimSiam, VICReg, Barlow Twins, DINO) nothing in the loss itself
    forbids mapping every image to one point; both gauges fall when that happens. Gauge the
    representation and the output the loss sees, where collapse shows first."""

    def __init__(self, images, every, **encoders):
        # (0 or -1 was silently every step)
        self.images, self.every = images, checks.positive_int("CollapseGauges", "every", every)
        self.encoders = encoders
        self.curves = {"step": []}
        for name in encoders:
            self.curves[f"RankMe ({name})"] = []
            self.curves[f"embedding std ({name})"] = []

    def record(self, step):
        self.curves["step"].append(step)
        for name, encoder in self.encoders.items():
            features = encode(encoder, self.images)
            self.curves[f"RankMe ({name})"].append(rankme(features))
            self.curves[f"embedding std ({name})"].append(embedding_std(features))

    def __call__(self, trainer):
        if trainer.step % self.every == 0:
            self.record(trainer.step)

    def save(self, folder, title="collapse gauges"):
        """<folder>/gauges.json (the curves) and gauges.png (one panel per gauge over the
        steps). Returns the picture's path."""
        from .plots import plot_curves
        with open(os.path.join(folder, "gauges.json"), "w") as f:
            json.dump(self.curves, f)
        steps = self.curves["step"]
        return plot_curves({k: (steps, v) for k, v in self.curves.items() if k != "step"},
                           os.path.join(folder, "gauges.png"), title=title)
