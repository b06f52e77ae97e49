"""What a run shows and keeps while it trains: the progress bar and the metrics file.

The bar is tqdm's (`tqdm.auto`: a widget in Jupyter, a bar redrawn in place on a terminal); off a
terminal (a log file, a CI page) it becomes one plain line at most every 10% of the run instead
of carriage returns piling up. metrics.jsonl holds one JSON object per line, appended as the run
goes, so an interrupted run keeps everything it logged.
"""
import json
import math
import os
import sys
import warnings

from tqdm.auto import tqdm as auto_tqdm   # a notebook widget in Jupyter, a text bar elsewhere
from tqdm.autonotebook import tqdm as _chosen_tqdm   # (loaded by tqdm.auto: what it chose)
from tqdm.std import tqdm as plain_tqdm


class _LineWriter:
    """A file for tqdm off a terminal: each refresh becomes one plain line (no carriage
    returns piling up in a log file or a CI page)."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, text):
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        position = line.split(" ")[0]   # "120/500": the closing refresh repeats the last one
        if line and position != self.last:
            self.stream.write(line + "\n")
            self.last = position

    def flush(self):
        self.stream.flush()


def progress_bar(total, enabled=True, stream=None, initial=0, unit="step"):
    """A tqdm bar over `total` units: tqdm.auto's widget in a notebook, a bar redrawn in place on
    a terminal, and elsewhere (logs, CI) one line at most every 10% of the run."""
    stream = stream or sys.stderr
    options = dict(total=total, initial=initial, disable=not enabled, unit=unit)
    if _chosen_tqdm is not plain_tqdm or (hasattr(stream, "isatty") and stream.isatty()):
        return auto_tqdm(file=stream, dynamic_ncols=True, **options)
    # maxinterval=inf: tqdm's monitor thread otherwise drops miniters to 1 once a line is 10 s
    # old (a slow run: every line), and the log gets hundreds of lines instead of ten
    return plain_tqdm(file=_LineWriter(stream), mininterval=0, miniters=max(1, (total or 10) // 10),
                      maxinterval=math.inf,
                      bar_format="{n_fmt}/{total_fmt} {unit}s {percentage:3.0f}% [{elapsed}<"
                                 "{remaining}, {rate_fmt}{postfix}]", **options)


def format_seconds(s):
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class MetricsFile:
    """metrics.jsonl: one JSON record per line, each with its "step".

    A process killed while appending leaves its last line cut short (no newline at its end):
    reading drops that line with a warning, as TensorBoard's reader drops a truncated last
    event, since everything before it is whole. Any other line that is not a JSON record with
    a "step" is damage that no crash explains: read() refuses it, naming the file and the line;
    keep_until (a resume) keeps the whole records before it, moves the damaged file aside to
    metrics.jsonl.damaged and says so, so that a damaged log never blocks a resume the
    checkpoint can serve."""

    def __init__(self, path):
        self.path = path

    def _parse(self):
        """(records, the first damaged line's (number, reason) or None); a cut last line is
        dropped with a warning."""
        if not os.path.exists(self.path):
            return [], None
        with open(self.path) as f:
            lines = f.readlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "step" not in record:
                    raise ValueError("not a record with a \"step\"")
            except ValueError as error:
                if number == len(lines) and not line.endswith("\n"):
                    warnings.warn(f"{self.path}: its last line (line {number}) was cut short, "
                                  f"as a process killed while writing it leaves it; that line "
                                  f"is dropped", RuntimeWarning, stacklevel=3)
                    break
                return records, (number, f"{error}")
            records.append(record)
        return records, None

    def read(self):
        records, damage = self._parse()
        if damage:
            raise ValueError(f"{self.path}: line {damage[0]} is not a JSON record with a "
                             f"\"step\" ({damage[1]}); the file is damaged")
        return records

    def curves(self, names):
        """{name: (steps, values)} of each of `names` over the training lines (those with a
        "loss": a held-out evaluation's own line has none); a name the last one lacks is left
        out."""
        rows = [row for row in self.read() if "loss" in row]
        steps = [row["step"] for row in rows]
        return {name: (steps, [row[name] for row in rows]) for name in names
                if rows and name in rows[-1]}

    def append(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def replace_last(self, record):
        lines = self.read()
        self._write(lines[:-1] + [record])

    def keep_until(self, step):
        """Keep the records up to `step` (none for step 0: a fresh run) and return them. A
        damaged file keeps its whole records before the damage; the file itself is moved aside
        (metrics.jsonl.damaged) with a warning naming both."""
        if not step:
            self._write([])
            return []
        records, damage = self._parse()
        if damage:
            aside = self.path + ".damaged"
            os.replace(self.path, aside)
            warnings.warn(f"{self.path}: line {damage[0]} is not a JSON record with a \"step\" "
                          f"({damage[1]}); the {len(records)} records before it are kept, the "
                          f"file as it was is now {aside}", RuntimeWarning, stacklevel=3)
        kept = [r for r in records if r["step"] <= step]
        self._write(kept)
        return kept

    def _write(self, records):
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


# ----- the lines a Trainer prints (see minienc/train.py) -----------------------------------------

def bar_postfix(record, values, evaluation=""):
    """The bar's text after the count: the logged loss, the scheduled lr, samples/s where the
    batch size is known, and the latest evaluation."""
    text = f"loss {record['loss']:.4f}"
    if "lr" in values:
        text += f" lr {values['lr']:.2e}"
    if "samples_per_s" in record:
        text += f" {record['samples_per_s']:.0f} samples/s"
    return text + evaluation


def plan_line(trainer, total, epoch_length):
    """What the run will do, printed before it starts."""
    parts = [f"{total:,} optimizer steps" if total else "steps: until the data ends"]
    if epoch_length and total:
        per_epoch = math.ceil(epoch_length / trainer.accumulate)
        parts[0] += f" ({total / per_epoch:.3g} epochs of {per_epoch} steps)"
    if trainer.accumulate > 1:
        parts.append(f"{trainer.accumulate} micro-batches per step")
    if trainer.step:
        parts.append(f"resuming at step {trainer.step}")
    if trainer.evaluator is not None:
        parts.append(f"evaluation every {trainer.eval_every} steps" if trainer.eval_every
                     else "evaluation at the start and the end")
    if trainer.out_dir:
        parts.append(f"into {trainer.out_dir}")
    return "plan: " + ", ".join(parts)


def estimate_line(trainer, total, per_step):
    """How long the rest will take, from the steps timed so far."""
    left = (total - trainer.step) * per_step
    line = f"estimate: {per_step * 1e3:.0f} ms per step, ~{format_seconds(left)} to step {total:,}"
    if trainer.evaluations and trainer.eval_every:
        per_eval = trainer.eval_s / len(trainer.evaluations)
        evaluating = per_eval * (total - trainer.step) / trainer.eval_every
        if trainer.eval_budget is not None:   # the share of the whole run it may take
            evaluating = min(evaluating, left * trainer.eval_budget / (1 - trainer.eval_budget))
        line += f" (+ up to ~{format_seconds(evaluating)} evaluating)"
    return line


def evaluation_summary(trainer):
    """The evaluations' share of the run, printed at its end."""
    passes = f"{len(trainer.evaluations)} pass" + ("" if len(trainer.evaluations) == 1 else "es")
    line = (f"evaluation: {passes}, {trainer.eval_s:.1f} s of the run's "
            f"{trainer.elapsed_s:.1f} s ({trainer.eval_s / trainer.elapsed_s:.0%})")
    if trainer.eval_skipped:
        were = "was" if trainer.eval_skipped == 1 else "were"
        line += (f"; {trainer.eval_skipped} more {were} skipped to keep it within "
                 f"{trainer.eval_budget:.0%} (a larger eval_every spaces them evenly)")
    return line
