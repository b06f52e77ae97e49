"""The training loop every demo shares.

    def step(batch):                        # batch -> loss (a scalar Tensor), or a dict with
        x = batch                           # "loss" and other scalar Tensors to log
        return minienc.mse_loss(model(x), x)

    trainer = Trainer(step, opt, models=model, out_dir="runs/ae",
                      schedules={"lr": WarmupCosine(1e-3, total_steps=2000, warmup_steps=100)})
    trainer.fit(loader, steps=2000)         # progress bar, metrics.jsonl, loss.png, checkpoint.npz

Each step: apply the schedules for this step, zero the gradients, call `step_fn`, backward,
optionally clip, `optimizer.step()`, then the callbacks (an EMA update, say) with the trainer.

The loss is never read back per step: the loop keeps each step's loss as a device array and
reads them all at once every `log_every` steps (one host sync per interval), which is when the
progress bar, the JSON-lines metrics file and the NaN check see them. Schedules are pure
functions of the step, so the checkpoint's step is the schedule's position. Resuming restores
models, optimizer, RNG and position, and replays the data order of the interrupted epoch: the
losses are the same as those of an uninterrupted run (on CPU; see minienc/checkpoint.py for GPU).

Under minienc.distributed (several processes, after distributed.init()) the same loop is data
parallel: rank 0's weights are broadcast at the start of fit, every gradient is averaged over the
ranks after backward, the logged losses are averaged over the ranks, and rank 0 alone draws the
progress bar and writes metrics, plots and checkpoints (every rank must still call fit and save
alike, with out_dir set or not on all of them). A checkpoint keeps each rank's RNG state, and
on resume every rank reads rank 0's file and takes back its own.
"""
import json
import math
import os
import sys
import time

from . import backend, distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .optim.clip import clip_grad_norm
from .optim.optimizer import set_hyperparameter

OPTIMIZER_KEYS = ("lr", "weight_decay")
_END = object()


class ProgressBar:
    """One line on stderr: `step 120/500 [#####.....] 24% loss 0.1834 | 41.2 step/s | eta 9s`.
    Redrawn in place on a terminal; elsewhere (CI logs, files) a line at most every 10%."""

    def __init__(self, total, stream=None, enabled=True, width=24):
        self.total, self.stream = total, stream or sys.stderr
        self.enabled, self.width = enabled, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self._shown = False

    def update(self, step, text):
        if not self.enabled:
            return
        if self.total:
            frac = min(step / self.total, 1.0)
            filled = int(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            head = f"step {step}/{self.total} [{bar}] {frac:4.0%}"
            decile = int(frac * 10)
        else:
            head, decile = f"step {step}", step
        if self.tty:
            self.stream.write("\r\033[K" + head + " " + text)
        elif decile != self._last_decile:
            self.stream.write(head + " " + text + "\n")
        else:
            return
        self._last_decile, self._shown = decile, True
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def _format_seconds(s):
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Trainer:
    """Runs `step_fn` under `optimizer` over batches; see the module docstring.

    models: a Module or dict name -> Module, saved in checkpoints (and restored on resume).
    schedules: {"lr": f, "weight_decay": f, other: f}: each f(step) is applied before the step;
        "lr" and "weight_decay" go into the optimizer's groups, every value is in `self.values`
        (callbacks read e.g. `trainer.values["ema_momentum"]`) and in the metrics.
    callbacks: functions called as f(trainer) after each optimizer step.
    clip_grad: a max global gradient norm (clip_grad_norm, no host sync), or None.
    log_every: steps between host reads of the loss (progress, metrics file, NaN check).
    out_dir: where metrics.jsonl, loss.png and checkpoint.npz go (None: write nothing).
    checkpoint_every: steps between checkpoints (also one at the end when out_dir is set).
    batch_size: samples per step, all processes together, for the samples/s figure (guessed
        from the batch if None).
    """

    def __init__(self, step_fn, optimizer, models=None, schedules=None, callbacks=(),
                 clip_grad=None, log_every=10, out_dir=None, checkpoint_every=None,
                 batch_size=None, progress=True, extra=None):
        if log_every < 1:
            raise ValueError(f"Trainer: log_every must be >= 1, got {log_every}")
        backend.tune_host_allocator()  # reuse freed temporaries across steps (see its docstring)
        self.step_fn, self.optimizer = step_fn, optimizer
        self.models = models if isinstance(models, dict) or models is None else {"model": models}
        self.schedules = dict(schedules or {})
        self.callbacks = list(callbacks)
        self.clip_grad, self.log_every, self.out_dir = clip_grad, log_every, out_dir
        self.checkpoint_every, self.batch_size = checkpoint_every, batch_size
        self.progress = progress
        self.extra = extra or {}
        self.step = self.epoch = self.batch_in_epoch = 0
        self.values = {}            # this step's scheduled values
        self.losses = []            # every step's loss, as host floats (filled at log time)
        self.records = []           # the metrics lines written so far
        self._pending = []          # device losses (and metrics) not yet read back
        self._epoch_rng = None      # host RNG state when this epoch's iterator was made
        self._clock = None
        self._parallel = None       # a distributed.DataParallel when several processes train

    # ----- paths -------------------------------------------------------------------------------
    def _path(self, name):
        return None if self.out_dir is None else os.path.join(self.out_dir, name)

    @property
    def checkpoint_path(self):
        return self._path("checkpoint.npz")

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self, data, steps=None, epochs=None, resume=False):
        """Train until `steps` optimizer steps or `epochs` passes over `data` (whichever comes
        first; with neither, one epoch). `data` is an iterable re-iterated each epoch (a
        BatchIterator, a list), or a function epoch -> iterable. `resume`: True to continue from
        out_dir/checkpoint.npz if it exists, or a checkpoint path. Returns self."""
        if steps is None and epochs is None:
            epochs = 1
        if resume:
            path = self.checkpoint_path if resume is True else resume
            path = distributed.engine().bcast_object(path)  # every rank resumes from rank 0's
            if path is not None and os.path.exists(path):
                self.load(path)
        # after a resume, so rank 0's loaded weights are the ones broadcast
        self._parallel = distributed.data_parallel(list((self.models or {}).values()),
                                                   self.optimizer)
        if self.out_dir is not None and distributed.is_main():
            os.makedirs(self.out_dir, exist_ok=True)
            self._trim_metrics()
        total = steps if steps is not None else (
            epochs * len(data) if hasattr(data, "__len__") else None)
        self._bar = ProgressBar(total, enabled=self.progress and distributed.is_main())
        self._clock = (time.perf_counter(), self.step)
        self._start = time.perf_counter()

        epoch_length = len(data) if hasattr(data, "__len__") else None

        def done():
            return (steps is not None and self.step >= steps) or \
                (epochs is not None and self.epoch >= epochs)

        try:
            while not done():
                batches = self._epoch_batches(data)
                while not done():  # test before next(): fetching a batch may draw random numbers
                    batch = next(batches, _END)
                    if batch is _END:
                        if self.batch_in_epoch == 0:
                            raise ValueError(
                                f"Trainer: epoch {self.epoch} gave no batches (is `data` a "
                                f"one-pass iterator? pass a list, a BatchIterator or a function "
                                f"epoch -> batches)")
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        break
                    self._one_step(batch)
                    if self.batch_in_epoch == epoch_length:  # known length: no need to ask for more
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        break
            self._log()
        finally:
            self._bar.close()
        if self.out_dir is not None:
            self.save()
            if distributed.is_main():
                self.plot()
        return self

    def _epoch_batches(self, data):
        """An iterator over this epoch's batches, positioned after the ones already trained on."""
        if self.batch_in_epoch == 0:
            self._epoch_rng = backend.get_rng_state()
        resumed_state = backend.get_rng_state()
        if self.batch_in_epoch:  # resuming mid-epoch: rebuild the epoch as it was first drawn
            backend.set_rng_state(self._epoch_rng)
        if hasattr(data, "set_epoch"):
            data.set_epoch(self.epoch)
        per_epoch = callable(data) and not hasattr(data, "__iter__")
        batches = iter(data(self.epoch) if per_epoch else data)
        for i in range(self.batch_in_epoch):
            if next(batches, None) is None:
                raise ValueError(f"Trainer: cannot resume at batch {self.batch_in_epoch} of epoch "
                                 f"{self.epoch}: the data gave only {i} batches")
        backend.set_rng_state(resumed_state)
        return batches

    def _one_step(self, batch):
        for key, schedule in self.schedules.items():
            value = self.values[key] = float(schedule(self.step))
            if key in OPTIMIZER_KEYS:
                set_hyperparameter(self.optimizer, key, value)
        self.optimizer.zero_grad()
        out = self.step_fn(batch)
        metrics = out if isinstance(out, dict) else {"loss": out}
        loss = metrics["loss"]
        loss.backward()
        if self._parallel is not None:
            self._parallel.reduce_gradients()
        if self.clip_grad is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            clip_grad_norm(params, self.clip_grad)
        self.optimizer.step()
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_size is None:
            guess = _guess_batch_size(batch)
            self.batch_size = guess and guess * distributed.world_size()
        # keep the device arrays only (no graph), to be read back together at log time
        self._pending.append({k: (v.data if hasattr(v, "data") else v) for k, v in metrics.items()})
        del out, metrics, loss  # the graph's last handle: callbacks run with nothing left of it
        for callback in self.callbacks:
            callback(self)
        if self.step % self.log_every == 0:
            self._log()
        if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.out_dir:
            self.save()

    # ----- logging -----------------------------------------------------------------------------
    def _log(self):
        """Read the pending losses back (one sync), then update the bar and the metrics file."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        columns = {k: [m[k] for m in pending] for k in pending[0]}
        if self._parallel is not None:
            columns = self._parallel.average(columns)
        host = {k: _to_floats(v) for k, v in columns.items()}
        first_step = self.step - len(pending) + 1
        self.losses.extend(host["loss"])
        bad = [first_step + i for i, v in enumerate(host["loss"]) if not math.isfinite(v)]
        now = time.perf_counter()
        t0, s0 = self._clock
        self._clock = (now, self.step)
        rate = (self.step - s0) / max(now - t0, 1e-9)
        record = {"step": self.step, "epoch": self.epoch,
                  **{k: sum(v) / len(v) for k, v in host.items()},
                  **self.values, "steps_per_s": rate, "elapsed_s": now - self._start}
        if self.batch_size:
            record["samples_per_s"] = rate * self.batch_size
        self.records.append(record)
        if self.out_dir is not None and distributed.is_main():
            with open(self._path("metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        text = f"loss {record['loss']:.4f}"
        if "lr" in self.values:
            text += f" lr {self.values['lr']:.2e}"
        text += f" | {rate:.1f} step/s"
        if self.batch_size:
            text += f" {rate * self.batch_size:.0f} samples/s"
        if self._bar.total:
            text += f" | eta {_format_seconds((self._bar.total - self.step) / max(rate, 1e-9))}"
        self._bar.update(self.step, text)
        if bad:
            raise FloatingPointError(
                f"Trainer: the loss is {host['loss'][bad[0] - first_step]} at step {bad[0]}; "
                f"lower the learning rate, clip gradients (clip_grad=), or find the op with "
                f"minienc.detect_anomaly()")

    def _trim_metrics(self):
        """Start metrics.jsonl afresh, or on resume keep only the lines up to the resumed step
        (an interrupted run may have logged past its last checkpoint)."""
        path = self._path("metrics.jsonl")
        kept = []
        if self.step and os.path.exists(path):
            with open(path) as f:
                kept = [line for line in f
                        if line.strip() and json.loads(line)["step"] <= self.step]
        with open(path, "w") as f:
            f.writelines(kept)

    def plot(self, path=None):
        """The loss curve (raw and smoothed) as a PNG; matplotlib is imported only here."""
        path = path or self._path("loss.png")
        if path is None or not self.losses:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        steps = range(1, len(self.losses) + 1)
        ax.plot(steps, self.losses, lw=0.6, alpha=0.4, label="loss")
        window = max(1, len(self.losses) // 50)
        if window > 1:
            smooth = [sum(self.losses[max(0, i - window + 1):i + 1]) / len(
                self.losses[max(0, i - window + 1):i + 1]) for i in range(len(self.losses))]
            ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        return path

    # ----- checkpoints -------------------------------------------------------------------------
    def state(self):
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "epoch_rng": self._epoch_rng, "values": self.values}

    def save(self, path=None):
        """Checkpoint models, optimizer, position, RNG state and the loss history (a host sync)."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("Trainer.save: give a path or set out_dir")
        self._log()  # the losses so far belong in the file
        state = self.state()
        if self._parallel is not None:  # every rank's random state, so resume restores each
            state["ranks"] = self._parallel.gather_rank_states(
                {"rng": backend.get_rng_state(), "epoch_rng": self._epoch_rng})
            if not distributed.is_main():
                return path
        losses = backend.numpy.asarray(self.losses, dtype=backend.numpy.float64)
        return save_checkpoint(path, self.models, self.optimizer, trainer=state,
                               extra=self.extra, extra_arrays={"losses": losses})

    def load(self, path):
        meta = load_checkpoint(path, self.models, self.optimizer)
        state = meta["trainer"]
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self._epoch_rng = state["batch_in_epoch"], state["epoch_rng"]
        self.values = dict(state.get("values", {}))
        ranks = state.get("ranks") or []
        if distributed.rank() < len(ranks):  # this rank's own random state (rank 0's was loaded)
            backend.set_rng_state(ranks[distributed.rank()]["rng"])
            self._epoch_rng = ranks[distributed.rank()]["epoch_rng"]
        self.losses = [float(v) for v in meta["arrays"].get("losses", [])]
        self._pending = []
        return meta


def _to_floats(arrays):
    """Python floats from a list of 0-d device arrays (or numbers), with one device read."""
    if not arrays or not hasattr(arrays[0], "dtype"):
        return [float(a) for a in arrays]
    xp = backend.get_xp(arrays[0])
    return [float(v) for v in backend.to_host(xp.stack([a.reshape(()) for a in arrays]))]


def _guess_batch_size(batch):
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    shape = getattr(first, "shape", None)
    return shape[0] if shape else None


def train(step_fn, optimizer, data, steps=None, epochs=None, resume=False, **options):
    """`Trainer(step_fn, optimizer, **options).fit(data, steps, epochs, resume)`."""
    trainer = Trainer(step_fn, optimizer, **options)
    return trainer.fit(data, steps=steps, epochs=epochs, resume=resume)
