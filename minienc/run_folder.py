"""What a Trainer keeps in its out_dir, and how it takes a run back from there.

    out_dir/metrics.jsonl       one record per log interval (and per evaluation), appended as
                                the run goes, so an interrupted run keeps what it logged
    out_dir/checkpoint.npz      models, optimizer, position in the data, RNG state, losses
    out_dir/loss.png            the loss (and evaluation.png, the evaluations), drawn by fit

A folder is claimed by the process that runs in it (claim_folder: a lock the system drops when
the process ends), so a second run started at the same time with the same folder is refused at
once. A folder holding checkpoint.npz or metrics.jsonl holds a run: fit refuses it unless asked to
resume it (load the checkpoint, and keep metrics.jsonl up to its step: an interrupted run may
have logged past its last checkpoint) or to overwrite it. Under minienc.distributed rank 0 writes
the folder; every rank resumes from rank 0's checkpoint and takes back its own random state.

RunFolder is that part of minienc.train.Trainer (the Trainer derives from it): it reads and sets
the Trainer's position (step, epoch, batch_in_epoch), models, optimizer, losses and evaluations.
"""
import os

from . import backend, distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .progress import MetricsFile

RUN_FILES = ("checkpoint.npz", "metrics.jsonl")   # a folder holding either holds a run
LOCK_FILE = ".minienc-lock"   # held (flock) by the process whose run the folder is
_claimed = {}                 # real path -> the open lock file of each folder this process holds


def claim_folder(path, who="Trainer.fit"):
    """Make the folder `path` (created if missing) this process's: an exclusive lock (flock)
    on path/.minienc-lock, taken at once or refused at once with a FileExistsError, so two
    runs started together with the same folder cannot both pass the check for a run already
    there. The system drops the lock when the process ends (a killed run leaves no stale
    lock). Returns True where this call took the lock, False where this process held it
    already (a demo claims its --out before its Trainer does). Where there is no fcntl
    (Windows) nothing is locked."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{who}: {path} is a file, not a folder for the run")
    try:
        import fcntl
    except ImportError:
        return False
    os.makedirs(path, exist_ok=True)
    key = os.path.realpath(path)
    if key in _claimed:
        return False
    lock = os.open(os.path.join(path, LOCK_FILE), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise FileExistsError(f"{who}: another process is running in {path} (it holds "
                              f"{os.path.join(path, LOCK_FILE)}); two runs cannot share a "
                              f"folder: wait for it to end, or choose another one") from None
    _claimed[key] = lock
    return True


def release_folder(path):
    """Give up this process's claim on `path` (claim_folder), if it holds one."""
    lock = _claimed.pop(os.path.realpath(path), None)
    if lock is not None:
        os.close(lock)   # (closing the last descriptor drops the flock)


class RunFolder:
    """out_dir's files for a Trainer: paths, the run-folder check, metrics.jsonl, plots and
    checkpoints (see the module docstring)."""

    # ----- paths ------------------------------------------------------------------------------
    def _path(self, name):
        return None if self.out_dir is None else os.path.join(self.out_dir, name)

    @property
    def checkpoint_path(self):
        return self._path("checkpoint.npz")

    # ----- opening a run: resume it, or refuse another run's folder ---------------------------
    def _open_run(self, resume, overwrite):
        """Load what `resume` asks for and make sure out_dir holds no other run."""
        if resume is True and self.out_dir is None:
            raise ValueError("Trainer.fit: resume=True continues the run in out_dir, but out_dir "
                             "is None; set out_dir or pass the checkpoint's path as resume=")
        if resume and resume is not True:
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"Trainer.fit: resume={resume!r}: no such checkpoint file")
            self.load(resume)
        elif resume and (found := self._main_checkpoint()):
            self.load(found)
        elif resume and self.progress:
            print(f"Trainer: no checkpoint in {self.out_dir} to resume: starting from step 0")
        if self.out_dir is None:
            return
        # a rank sharing rank 0's folder leaves the check to rank 0 (which may already have
        # written there), and a refusal on any rank is a refusal on every rank
        refusal = existing = None
        if self._writes_metrics:
            try:   # held while fit runs (_release_folder), or as long as a demo holds it
                self._claimed_folder = claim_folder(self.out_dir) and self.out_dir
            except OSError as error:   # taken, a file, not writable: refused on every rank
                refusal = error
            existing = [n for n in RUN_FILES if os.path.exists(self._path(n))]
        if existing and not refusal and not (resume or overwrite or self._owns_out_dir):
            refusal = FileExistsError(
                f"Trainer.fit: {self.out_dir} already holds a run ({', '.join(existing)}); pass "
                f"resume=True to continue it or overwrite=True to start it again (a demo's "
                f"--resume / --overwrite), or choose another out_dir")
        try:
            distributed.raise_together(refusal)
        except Exception:
            self._release_folder()
            raise
        if not self._writes_metrics:
            return
        if overwrite and not resume and self.step == 0:   # a later resume must not find the old
            for name in ("checkpoint.npz", "loss.png", "evaluation.png"):   # state, nor a reader
                if os.path.exists(self._path(name)):                      # the old pictures
                    os.remove(self._path(name))
        os.makedirs(self.out_dir, exist_ok=True)
        self._trim_metrics()

    def _release_folder(self):
        """The end of fit: give up the claim on out_dir that _open_run took (none where the
        folder was claimed before, by a demo, or by this process's earlier fit)."""
        if getattr(self, "_claimed_folder", None):
            release_folder(self._claimed_folder)
            self._claimed_folder = None

    def _main_checkpoint(self):
        """Rank 0's checkpoint path if it exists there, else None: every rank resumes from it."""
        path = self.checkpoint_path
        return distributed.engine().bcast_object(path if os.path.exists(path) else None)

    # ----- metrics.jsonl and the figures ------------------------------------------------------
    def _write_record(self, record):
        self.records.append(record)
        if self.out_dir is not None and self._writes_metrics:
            MetricsFile(self._path("metrics.jsonl")).append(record)

    def _write_evaluation(self, scores, clocks):
        """An evaluation's numbers in this step's record: merged into the last line where this
        step's losses were just logged, else a line of their own (step 0, or a step whose losses
        an earlier evaluation logged)."""
        if self.records and self.records[-1]["step"] == self.step:
            self.records[-1].update(scores, **clocks)
            if self.out_dir is not None and self._writes_metrics:
                MetricsFile(self._path("metrics.jsonl")).replace_last(self.records[-1])
        else:
            self._write_record({"step": self.step, "epoch": self.epoch, **scores, **clocks})

    def _trim_metrics(self):
        """Start metrics.jsonl afresh, or on resume keep only the lines up to the resumed step
        (an interrupted run may have logged past its last checkpoint) and read them back."""
        kept = MetricsFile(self._path("metrics.jsonl")).keep_until(self.step)
        if not self._owns_out_dir:
            self.records = kept
            self.evaluations = [e for e in map(_evaluation_of, kept) if e]

    def plot(self, path=None):
        """loss.png (the loss, raw and smoothed) and, with an evaluator, evaluation.png beside it
        (the loss and each evaluation number over the steps). Without matplotlib one line says
        so and nothing is drawn (the numbers are in metrics.jsonl). Returns the paths written."""
        path = path or self._path("loss.png")
        if path is None or not self.losses:
            return []
        try:
            import matplotlib  # noqa: F401  (the demos extra; the core install is NumPy only)
        except ImportError:
            print(f"Trainer: matplotlib is not installed, so no {os.path.basename(path)} is drawn "
                  f"(pip install matplotlib); the numbers are in metrics.jsonl")
            return []
        from .eval.plots import plot_training
        evaluation_path = os.path.join(os.path.dirname(path), "evaluation.png")
        return plot_training(self.losses, path, self.evaluations, evaluation_path, self.eval_every)

    # ----- checkpoints ------------------------------------------------------------------------
    def state(self):
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "epoch_rng": self._epoch_rng, "values": self.values,
                "elapsed_s": self.elapsed_s, "eval_s": self.eval_s, "last_eval": self._last_eval}

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
        self.elapsed_s, self.eval_s = state.get("elapsed_s", 0.0), state.get("eval_s", 0.0)
        self._last_eval = state.get("last_eval")
        ranks = state.get("ranks") or []
        if distributed.rank() < len(ranks):  # this rank's own random state (rank 0's was loaded)
            backend.set_rng_state(ranks[distributed.rank()]["rng"])
            self._epoch_rng = ranks[distributed.rank()]["epoch_rng"]
        self.losses = [float(v) for v in meta["arrays"].get("losses", [])]
        self._pending, self._micro = [], []
        return meta


def _evaluation_of(record):
    """The evaluation a metrics record carries ({"step", name: value}), or None."""
    scores = {k[len("eval_"):]: v for k, v in record.items() if k.startswith("eval_") and k != "eval_s"}
    return {"step": record["step"], **scores} if scores else None
