"""The training loop every demo shares.

    objective = SimCLR(encoder, head, augment)     # any Objective (minienc.objectives)
    optimizer = LARS(objective.param_groups(1e-6), lr=1.0)
    trainer = Trainer(objective, optimizer, out_dir="runs/simclr",
                      schedules={"lr": WarmupCosine(1.0, total_steps=2000, warmup_steps=100)},
                      evaluator=Evaluator(objective.embed, data), eval_every=100)
    trainer.fit(loader, steps=2000)         # progress bar, metrics.jsonl, loss.png, checkpoint.npz
    trainer.fit(loader, steps=4000, resume=True)     # later, or in a new process: continue it

In place of an objective, a step function batch -> loss (a scalar Tensor, or a dict with "loss"
and other scalar Tensors to log) trains whatever it closes over: Trainer(step, opt, models=model).

Each optimizer step (`_train_step`, one screen): apply the schedules for this step, zero the
gradients, for each of `accumulate` micro-batches the loss and its backward (divided by
`accumulate`), average the gradients over processes, optionally clip, `optimizer.step()`, and the
objective's `after_step(step / steps)` (EMA targets; `steps` is the run's length, fit's steps=,
so a resumed run sees the same progress). Around it, not in it: the callbacks (functions of the
trainer), the log, the evaluator every `eval_every` steps and the checkpoints.

Gradient accumulation: for a loss that is a mean over examples, k micro-batches of b examples
give exactly the gradient of one batch of k*b (tests/test_train.py checks it in float64). It is
NOT the same where the loss couples the examples of a batch: InfoNCE / NT-Xent (and triplet
mining) see only the micro-batch's negatives, Barlow Twins and VICReg standardise and correlate
over the micro-batch, batch norm normalises each micro-batch on its own, MoCo enqueues keys per
micro-batch. Accumulation then saves memory but trains a smaller-batch objective.

The loss is never read back per step: the loop keeps each step's loss as a device array and
reads them all at once every `log_every` steps (one host sync per interval), which is when the
progress bar (tqdm), the JSON-lines metrics file and the NaN check see them. Schedules are pure
functions of the step, so the checkpoint's step is the schedule's position. Resuming restores
models, optimizer, RNG and position, and replays the data order of the interrupted epoch: the
losses are the same as those of an uninterrupted run (on CPU; see minienc/checkpoint.py for GPU).
Ctrl-C or SIGTERM (a batch scheduler's warning before it kills a job) finishes the current
step, saves a checkpoint and stops (a second one stops at once).

A run's folder is never silently reused: `fit` claims out_dir with a lock for as long as it
runs (a second process given the same folder is refused at once; minienc/run_folder.py) and
refuses an out_dir that already holds a run (checkpoint.npz or metrics.jsonl) unless
`resume=True` (continue it) or `overwrite=True`.

Under minienc.distributed (several processes, after distributed.init()) the same loop is data
parallel: rank 0's weights are broadcast at the start of fit, the gradients are averaged over the
ranks before each optimizer step, the logged numbers are the ranks' mean, and rank 0 alone
prints, evaluates and writes metrics, plots and checkpoints (every rank must still call fit and
save alike, out_dir set on all of them or on none -- fit checks this, and that the ranks
agree on steps, epochs and batches per epoch, before anything runs; a rank given an out_dir of
its own, as the demos give each other rank a temporary one, keeps the same metrics.jsonl there,
so code that reads it after training runs on every rank). A checkpoint keeps each rank's RNG state;
on resume every rank reads rank 0's checkpoint and takes back its own. Ctrl-C or SIGTERM (the
launcher passes it to every rank) is a vote carried by the gradient reduction, so every rank
stops after the same step and the checkpoint is saved (on NCCL the vote is read a step late, to
cost no device sync, so there every rank stops one step later).
"""
import contextlib
import itertools
import math
import signal
import threading
import time

from . import backend, checks, distributed
from .progress import bar_postfix, estimate_line, evaluation_summary, plan_line, progress_bar
from .objectives.protocol import Objective
from .optim.clip import clip_grad_norm
from .optim.optimizer import set_hyperparameter
from .run_folder import RunFolder

OPTIMIZER_KEYS = ("lr", "weight_decay")
EVAL_BUDGET = 0.15   # the largest share of the run's time evaluations may take, by default
PLAN_AFTER = 10      # steps timed before the plan's estimate is printed
_END = object()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # each stops the run after its step, saved


class Trainer(RunFolder):
    """Trains `objective` under `optimizer` over batches; see the module docstring. What it keeps
    in out_dir (metrics.jsonl, checkpoint.npz, the figures) and how it resumes: RunFolder
    (minienc/run_folder.py).

    objective: an Objective -- its loss(batch) is trained, it is saved in checkpoints (as
        models["objective"]) and its after_step(progress) runs after every optimizer step -- or
        a step function batch -> loss Tensor or dict with "loss" (then `models` says what to save).
    models: a Module or dict name -> Module, saved in checkpoints (and restored on resume).
    schedules: {"lr": f, "weight_decay": f, other: f}: each f(step) is applied before the step;
        "lr" and "weight_decay" go into the optimizer's groups, another name that is an
        attribute of the objective sets it (a VAE's "beta", DINO's "teacher_temperature"), and
        every value is in `self.values` (callbacks read e.g. `trainer.values["ema"]`) and in the
        metrics.
    callbacks: functions called as f(trainer) after each optimizer step.
    accumulate: micro-batches (batches of `data`) per optimizer step; each micro-batch's loss is
        divided by `accumulate` so a per-example-mean loss gets the big batch's gradient.
    evaluator: a callable () -> {name: float} (minienc.eval.Evaluator: k-NN, few-shot, RankMe,
        std on a fixed subset), run with the models in eval mode before the first step, every
        `eval_every` steps and after the last; its numbers go to metrics.jsonl ("eval_<name>"),
        to `self.evaluations` and to evaluation.png, its time to "eval_s".
    eval_budget: the largest share of the run's time the evaluations may take: one that would
        push the share past it is skipped (and counted in the summary); None: never skip.
    clip_grad: a max global gradient norm (clip_grad_norm, no host sync), or None.
    log_every: steps between host reads of the loss (progress, metrics file, NaN check).
    out_dir: where metrics.jsonl, loss.png and checkpoint.npz go (None: write nothing).
    checkpoint_every: steps between checkpoints (also one at the end when out_dir is set).
    batch_size: samples per step, all processes together, for the samples/s figure (guessed
        from the batch if None).
    progress: the tqdm bar and the printed plan, estimate and evaluation share.
    """

    def __init__(self, objective, optimizer, models=None, schedules=None, callbacks=(),
                 clip_grad=None, log_every=10, out_dir=None, checkpoint_every=None,
                 batch_size=None, progress=True, extra=None, accumulate=1, evaluator=None,
                 eval_every=None, eval_budget=EVAL_BUDGET):
        log_every = checks.positive_int("Trainer", "log_every", log_every)
        accumulate = checks.positive_int("Trainer", "accumulate", accumulate)
        if eval_every is not None:
            eval_every = checks.positive_int("Trainer", "eval_every", eval_every)
        if eval_every is not None and evaluator is None:
            raise ValueError("Trainer: eval_every needs an evaluator (e.g. "
                             "minienc.eval.Evaluator(encoder, data))")
        self.objective = objective if isinstance(objective, Objective) else None
        self.loss_fn = objective.loss if self.objective is not None else _as_terms(objective)
        self.optimizer = optimizer
        self.models = models if isinstance(models, dict) or models is None else {"model": models}
        if self.objective is not None:
            self.models = {"objective": objective, **(self.models or {})}
        self.schedules = dict(schedules or {})
        self.callbacks = list(callbacks)
        self.clip_grad, self.log_every, self.out_dir = clip_grad, log_every, out_dir
        self.checkpoint_every, self.batch_size = checkpoint_every, batch_size
        self.progress, self.accumulate = progress, accumulate
        self.evaluator, self.eval_every, self.eval_budget = evaluator, eval_every, eval_budget
        self.eval_skipped = 0       # scheduled evaluations skipped to stay within eval_budget
        self.extra = extra or {}
        self.step = self.epoch = self.batch_in_epoch = 0
        self.values = {}            # this step's scheduled values
        self.losses = []            # every step's loss, as host floats (filled at log time)
        self.records = []           # the metrics lines written so far
        self.evaluations = []       # {"step", name: value, ...} per evaluation
        self.elapsed_s = self.eval_s = 0.0   # the run's wall-clock and evaluation seconds so far
        self._pending = []          # device losses (and metrics) not yet read back
        self._micro = []            # this step's micro-batch metrics (accumulation)
        self._batches = None        # this epoch's batch iterator
        self._epoch_ended = False   # its last batch was fetched (the epoch ends after the step)
        self._total = None          # the run's steps: after_step's progress is step / _total
        self._epoch_rng = None      # host RNG state when this epoch's iterator was made
        self._last_eval = None      # the step of the latest evaluation
        self._owns_out_dir = False  # this Trainer wrote out_dir's run (a second fit continues it)
        self._interrupted = False
        self._bar = None
        self._last_eval_s = 0.0     # the latest evaluation's seconds (what the next will cost)
        self._eval_said = None      # the step of the latest evaluation line printed
        self._eval_postfix = ""     # the latest evaluation, shown on the bar
        self._parallel = None       # a distributed.DataParallel when several processes train
        self._writes_metrics = True

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self, data, steps=None, epochs=None, resume=False, overwrite=False):
        """Train until `steps` optimizer steps or `epochs` passes over `data` (whichever comes
        first; with neither, one epoch). `data` is an iterable re-iterated each epoch (a
        BatchIterator, a list), or a function epoch -> iterable. `resume`: True to continue the
        run in out_dir (from its checkpoint.npz; a fresh start when it has none), or the path of
        a checkpoint, which must exist. `overwrite`: start afresh over a run already in out_dir.
        Returns self."""
        if steps is None and epochs is None:
            epochs = 1
        self._interrupted = False
        if not distributed.is_main():
            self.progress = False   # rank 0 alone prints
        epoch_length = len(data) if hasattr(data, "__len__") else None
        total = self._total = steps if steps is not None else (
            math.ceil(epoch_length / self.accumulate) * epochs if epoch_length else None)
        if self.objective is not None and total is None:
            raise ValueError("Trainer.fit: the objective's after_step(progress) needs the run's "
                             "length: pass steps=, or data with a len()")
        # every rank must run the same collectives: what decides them is compared once, here
        everyone = distributed.agree("Trainer.fit", {
            "out_dir (set or None)": self.out_dir is not None, "batches per epoch": epoch_length,
            "steps": steps, "epochs": epochs, "accumulate": self.accumulate,
            "checkpoint_every": self.checkpoint_every, "resume": bool(resume),
            "overwrite": bool(overwrite), "out_dir": self.out_dir}, unchecked=("out_dir",))
        main_out_dir = everyone[0]["out_dir"]
        # rank 0 writes the run; another rank keeps metrics.jsonl only in an out_dir of its own
        self._writes_metrics = distributed.is_main() or self.out_dir != main_out_dir
        self._open_run(resume, overwrite)
        # after a resume, so that the weights broadcast from rank 0 are the ones it loaded
        self._parallel = distributed.data_parallel(list((self.models or {}).values()),
                                                   self.optimizer)
        self._say_plan(total, epoch_length)
        self._bar = progress_bar(total, enabled=self.progress, initial=self.step)
        self._start_step = self.step
        self._clock = (time.perf_counter(), self.step)
        self._started = time.perf_counter() - self.elapsed_s
        self._since = (self.elapsed_s, self.eval_s)   # a resumed run's clocks: the estimate starts here
        self._batches, self._epoch_ended = None, False

        def done():
            return (steps is not None and self.step >= steps) or \
                (epochs is not None and self.epoch >= epochs)

        try:
            with self._stop_on_interrupt():
                if self.evaluator is not None and self._last_eval is None:
                    self._evaluate()                 # the starting point of every curve
                # test done() before fetching: fetching a batch may draw random numbers
                while not done() and not self._interrupted:
                    batches = self._step_batches(data, epoch_length)   # fetched as the step asks
                    first = next(batches, None)      # None: the epoch had already ended
                    if first is not None:
                        self._train_step(itertools.chain([first], batches))
                        self._after_step(total)
                    if self._epoch_ended:
                        self._end_epoch()
                if (self.evaluator is not None and self._last_eval != self.step
                        and not self._interrupted):
                    self._evaluate()   # the end point of every curve: never skipped by the budget
                self._log()
                self._elapsed()
        finally:
            self._bar.close()
            self._release_folder()   # (a second run that starts now finds this one's files)
        self._owns_out_dir = True
        if self.out_dir is not None:
            self.save()
        if self._interrupted:
            where = f"checkpoint saved to {self.checkpoint_path}" if self.out_dir else \
                "nothing saved (no out_dir)"
            print(f"Trainer: interrupted after step {self.step}; {where}. fit(..., resume=True) "
                  f"(a demo's --resume) continues the run.", flush=True)
            raise KeyboardInterrupt
        self._say_evaluation_share()
        if self.out_dir is not None and distributed.is_main():
            self.plot()
        return self

    # ----- the step: all of training; everything else in this class manages the run -----------
    def _train_step(self, micro_batches):
        """One optimizer step on the mean gradient of `micro_batches` (one, or `accumulate`)."""
        self._apply_schedules()                   # lr, weight decay, the objective's attributes
        self.optimizer.zero_grad()
        for batch in micro_batches:
            terms = self.loss_fn(batch)           # {"loss": scalar Tensor, other terms to log}
            loss = terms["loss"]
            (loss if self.accumulate == 1 else loss * (1.0 / self.accumulate)).backward()
            self._keep(terms)
        self._average_gradients()                 # over processes; a short group's mean
        if self.clip_grad is not None:
            clip_grad_norm(self._trained_parameters(), self.clip_grad)
        self.optimizer.step()
        if self.objective is not None:
            self.objective.after_step(self.step / self._total)   # EMA targets, centres
        self.step += 1

    # ----- beside the step: signals, the data's position, schedules, gradients ------------------
    @contextlib.contextmanager
    def _stop_on_interrupt(self):
        """In the main thread, the first Ctrl-C, or SIGTERM (what a batch scheduler sends before
        it kills a job), asks the loop to stop after the current step; under several processes
        the signal is a vote in the gradient reduction, so every rank stops after the same step
        (DataParallel.stop_together)."""
        parallel = self._parallel
        if threading.current_thread() is not threading.main_thread():   # (only it gets signals)
            yield
            return
        if parallel is None:
            def stop():
                self._interrupted = True
        else:
            stop = parallel.stop_together(lambda: setattr(self, "_interrupted", True))

        def handler(signum, frame):
            if self._interrupted or (parallel and parallel.reduce_gradients.stop_voted):
                raise KeyboardInterrupt
            stop()
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            print(f"\nTrainer: {what}: stopping after this step ({what} again to stop at once)",
                  flush=True)

        previous = {kind: signal.signal(kind, handler) for kind in STOP_SIGNALS}
        try:
            yield
        finally:
            for kind, before in previous.items():
                signal.signal(kind, before if before is not None else signal.SIG_DFL)

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
        # several processes: where the data ends, the ranks check that theirs ended together
        return batches if self._parallel is None else self._parallel.batches(batches)

    def _end_epoch(self):
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._batches, self._epoch_ended = None, False

    def _step_batches(self, data, epoch_length):
        """This step's micro-batches, each fetched when the step asks for it: `accumulate` of
        them, fewer where the epoch ends (a short group steps with what it has; the epoch is
        closed after the step, so its records still carry the epoch they trained in)."""
        for _ in range(self.accumulate):
            if self._batches is None:
                self._batches = self._epoch_batches(data)
            batch = next(self._batches, _END)
            if batch is _END:
                if self.batch_in_epoch == 0:
                    raise ValueError(f"Trainer: epoch {self.epoch} gave no batches (is `data` a "
                                     f"one-pass iterator? pass a list, a BatchIterator or a "
                                     f"function epoch -> batches)")
                self._epoch_ended = True
                return
            self.batch_in_epoch += 1
            if self.batch_size is None:
                micro = _guess_batch_size(batch)
                self.batch_size = micro * self.accumulate * distributed.world_size() if micro else None
            yield batch
            if self.batch_in_epoch == epoch_length:   # a known length: no need to ask
                self._epoch_ended = True
                return

    def _apply_schedules(self):
        for key, schedule in self.schedules.items():
            value = self.values[key] = float(schedule(self.step))
            if key in OPTIMIZER_KEYS:
                set_hyperparameter(self.optimizer, key, value)
            elif self.objective is not None and hasattr(self.objective, key):
                setattr(self.objective, key, value)

    def _keep(self, terms):
        """A micro-batch's terms as device arrays (no graph), read back together at log time."""
        self._micro.append({k: (v.data if hasattr(v, "data") else v) for k, v in terms.items()})

    def _trained_parameters(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _average_gradients(self):
        """Each gradient the mean over the processes (minienc.distributed; nothing alone) and,
        for a short group at an epoch's end, over the micro-batches it had."""
        if self._parallel is not None:
            self._parallel.reduce_gradients()
        if len(self._micro) < self.accumulate:
            for p in self._trained_parameters():
                if p.grad is not None:
                    p.grad *= self.accumulate / len(self._micro)

    # ----- around the step: its numbers, callbacks, the log, evaluation, checkpoints ---------
    def _after_step(self, total):
        micro, self._micro = self._micro, []
        metrics = micro[0] if len(micro) == 1 else \
            {k: sum(m[k] for m in micro) * (1.0 / len(micro)) for k in micro[0]}
        if self._parallel is not None:
            metrics = self._parallel.average(metrics)   # on the device: no host read
        self._pending.append(metrics)
        for callback in self.callbacks:
            callback(self)
        if self.step % self.log_every == 0:
            self._log()
        if self.step == self._start_step + PLAN_AFTER:
            self._say_estimate(total)
        if self.evaluator is not None and self.eval_every and self.step % self.eval_every == 0:
            self._evaluate_if_affordable()
        if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.out_dir:
            self.save()

    # ----- evaluation --------------------------------------------------------------------------
    def _evaluate_if_affordable(self):
        """Evaluate unless the pass (timed as the last one) would take the evaluations' share
        of the run past eval_budget."""
        if self.eval_budget is not None and self.evaluations:
            expected = self._last_eval_s
            if self.eval_s + expected > self.eval_budget * (self._elapsed() + expected):
                self.eval_skipped += 1
                return
        self._evaluate()

    def _evaluate(self):
        """Run the evaluator with every model in eval mode and the host RNG left where it was
        (so evaluating never changes what training does), log its numbers and its time."""
        if not distributed.is_main():       # rank 0 alone evaluates: the weights are the same
            self._last_eval = self.step
            return
        self._log()                         # this step's record carries the evaluation
        began = time.perf_counter()
        rng_state = backend.get_rng_state()
        modes = {name: m.training for name, m in (self.models or {}).items()}
        for name in modes:
            self.models[name].eval()
        try:
            with distributed.alone():
                result = {k: float(v) for k, v in self.evaluator().items()}
        finally:
            for name, mode in modes.items():
                self.models[name].train(mode)
            backend.set_rng_state(rng_state)
        seconds = self._last_eval_s = time.perf_counter() - began
        self.eval_s += seconds
        self._last_eval = self.step
        self.evaluations.append({"step": self.step, **result})
        self._write_evaluation({f"eval_{k}": v for k, v in result.items()},
                               {"eval_s": self.eval_s, "elapsed_s": self._elapsed()})
        shown = "  ".join(f"{k} {v:.3g}" for k, v in result.items())
        # a line at the start, then at most one per tenth of the run; the bar shows the latest
        if self._bar is not None and self.progress and (
                self._eval_said is None or not self._bar.total or self.step == self._bar.total
                or self.step - self._eval_said >= self._bar.total / 10):
            self._bar.write(f"eval @ step {self.step}: {shown}  ({seconds:.1f} s)")
            self._eval_said = self.step
        self._eval_postfix = f" | {shown}"

    # ----- what the run says: the plan first, an estimate, the evaluation's share at the end ----
    def _say_plan(self, total, epoch_length):
        if self.progress:
            print(plan_line(self, total, epoch_length), flush=True)

    def _say_estimate(self, total):
        if self.progress and total:
            self._log()   # a host sync: the time below is the device's, not the queue's
            elapsed, evaluating = self._since    # this fit's own steps and time, not the run's
            training = (self._elapsed() - elapsed) - (self.eval_s - evaluating)
            per_step = training / max(self.step - self._start_step, 1)
            self._bar.write(estimate_line(self, total, per_step))

    def _say_evaluation_share(self):
        if self.evaluator is not None and self.progress and self.elapsed_s:
            print(evaluation_summary(self))

    # ----- logging -----------------------------------------------------------------------------
    def _elapsed(self):
        self.elapsed_s = time.perf_counter() - self._started
        return self.elapsed_s

    def _log(self):
        """Read the pending losses back (one sync), then update the bar and the metrics file."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        columns = {k: [m[k] for m in pending] for k in pending[0]}
        host = backend.to_host_floats(columns)
        first_step = self.step - len(pending) + 1
        self.losses.extend(host["loss"])
        bad = [first_step + i for i, v in enumerate(host["loss"]) if not math.isfinite(v)]
        now = time.perf_counter()
        t0, s0 = self._clock
        self._clock = (now, self.step)
        rate = (self.step - s0) / max(now - t0, 1e-9)
        record = {"step": self.step, "epoch": self.epoch,
                  **{k: sum(v) / len(v) for k, v in host.items()},
                  **self.values, "steps_per_s": rate, "elapsed_s": self._elapsed()}
        if self.batch_size:
            record["samples_per_s"] = rate * self.batch_size
        if self.evaluator is not None:
            record["eval_s"] = self.eval_s
        self._write_record(record)
        if self._bar is not None:
            self._bar.set_postfix_str(bar_postfix(record, self.values, self._eval_postfix),
                                      refresh=False)
            self._bar.update(self.step - self._bar.n)
        if bad:
            raise FloatingPointError(
                f"Trainer: the loss is {host['loss'][bad[0] - first_step]} at step {bad[0]}; "
                f"lower the learning rate, clip gradients (clip_grad=), or find the op with "
                f"minienc.detect_anomaly()")


def _as_terms(step_fn):
    """A step function that may return a bare loss Tensor, as one that returns {"loss": ...}."""
    def terms(batch):
        out = step_fn(batch)
        return out if isinstance(out, dict) else {"loss": out}
    return terms


def _guess_batch_size(batch):
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    shape = getattr(first, "shape", None)
    return shape[0] if shape else None


def train(objective, optimizer, data, steps=None, epochs=None, resume=False, overwrite=False,
          **options):
    """`Trainer(objective, optimizer, **options).fit(data, steps, epochs, resume, overwrite)`."""
    trainer = Trainer(objective, optimizer, **options)
    return trainer.fit(data, steps=steps, epochs=epochs, resume=resume, overwrite=overwrite)
