"""Checkpoints: models, optimizer, training position and RNG state in one .npz file.

Layout of the archive (every entry a plain array, so `np.load(..., allow_pickle=False)` reads it):

    model/<name>/<key>      one array per parameter and buffer of each model's state_dict
    optim/<index>/<key>     the optimizer's per-parameter arrays (Adam's moments, momentum buffers)
    extra/<name>            any other host arrays the caller keeps (the trainer's loss history)
    __meta__                a uint8 array holding UTF-8 JSON: format and version, the trainer's
                            position (step, epoch, ...), the optimizer's hyperparameters and step
                            counts, the host RNG state, the list of array keys, `extra`, and
                            `encoders`: for each model that names its encoder (an objective's
                            embed_module()), the prefix of the module its embed(x) runs (what
                            demos/export.py takes out)

Writes are atomic: the archive goes to a temporary file in the same directory, is flushed and
fsync'ed, then renamed over the target with os.replace, so a crash leaves either the old file or
the new one, never half of one. Only numeric arrays are written (an object or string array is
refused at save time, since a load could never read it back).

Loading reads the file through minienc/archive.py, which trusts nothing in it: every entry is
checked (integrity, metadata, each array's header against the model and the file's size) before
anything changes, and a refusal is a `CheckpointError` naming the entry.

CuPy's random generators cannot be serialised, so only the host generator's state is saved; the
device generator continues its own stream after a resume (exact resumption is promised on CPU).
Host-side I/O: NumPy comes through `backend.numpy`, as the house rule asks.
"""
import contextlib
import json
import os
import tempfile

from . import backend
from .archive import (FORMAT, META, NUMERIC_KINDS, VERSION, CheckpointArchive,
                      CheckpointError, listed_arrays)  # noqa: F401 (CheckpointError: re-exported)


def save_checkpoint(path, models=None, optimizer=None, trainer=None, extra=None,
                    extra_arrays=None):
    """Write one .npz at `path` atomically. `models` is a Module or a dict name -> Module;
    `trainer` a dict of JSON-able training position (step, epoch, ...); `extra` any JSON-able
    dict (config, metrics); `extra_arrays` a dict name -> host array. Returns `path`."""
    arrays, meta = {}, {"format": FORMAT, "version": VERSION, "trainer": trainer or {},
                        "extra": extra or {}, "models": {}, "extra_arrays": [],
                        "encoders": _encoder_prefixes(_as_models(models))}
    for name, value in (extra_arrays or {}).items():
        meta["extra_arrays"].append(name)
        arrays[f"extra/{name}"] = backend.to_host(value)
    for name, model in _as_models(models).items():
        state = model.state_dict()
        meta["models"][name] = list(state)
        for key, value in state.items():
            arrays[f"model/{name}/{key}"] = value
    if optimizer is not None:
        sd = optimizer.state_dict()
        meta["optimizer"] = {"type": type(optimizer).__name__, "param_groups": sd["param_groups"],
                             "state": {}}
        for index, entry in sd["state"].items():
            meta["optimizer"]["state"][str(index)] = {"step": entry["step"],
                                                      "arrays": [k for k in entry if k != "step"]}
            for key, value in entry.items():
                if key != "step":
                    arrays[f"optim/{index}/{key}"] = value
    meta["rng"] = {"cpu": backend.get_rng_state()}
    meta = _jsonable(meta, "checkpoint")
    _check_numeric(arrays)
    arrays[META] = backend.numpy.frombuffer(json.dumps(meta).encode("utf-8"), dtype="uint8")
    _write_atomically(path, arrays)
    return path


def load_checkpoint(path, models=None, optimizer=None, restore_rng=True):
    """Load what `save_checkpoint` wrote into `models` (Module or dict) and `optimizer`, in place,
    and restore the host RNG. Everything is checked before anything changes -- the file's
    integrity, the metadata's structure, the RNG state, the trainer's counters, every model
    array's key, shape and dtype, the optimizer's groups, steps, hyperparameters and arrays --
    and a refusal is a CheckpointError naming the entry. Returns the metadata dict:
    `meta["trainer"]` is the saved training position, `meta["extra"]` the extra dict and
    `meta["arrays"]` the extra arrays."""
    models = _as_models(models)
    with CheckpointArchive(path) as archive:
        meta = archive.meta
        states = {name: archive.model_state(name, model) for name, model in models.items()}
        opt_state = archive.optimizer_state(optimizer) if optimizer is not None else None
        meta["arrays"] = {name: archive.read(f"extra/{name}") for name in meta["extra_arrays"]}
    for name, model in models.items():   # nothing has changed until here
        model.load_state_dict(states[name])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if restore_rng:
        backend.set_rng_state(meta["rng"]["cpu"])
    return meta


def read_checkpoint(path):
    """(meta, arrays): the metadata and every array it lists, each checked against its entry
    (for inspection; `load_checkpoint` also checks them against the model)."""
    with CheckpointArchive(path) as archive:
        return archive.meta, {key: archive.read(key) for key in listed_arrays(archive.meta)}


def _encoder_prefixes(models):
    """{model name: the state_dict prefix of the module its embed(x) runs} for the models that
    name one (Objective.embed_module), so that an export need not guess it from the keys."""
    prefixes = {}
    for name, model in models.items():
        embed_module = getattr(model, "embed_module", None)
        module = embed_module() if callable(embed_module) else None
        if module is None:
            continue
        try:
            prefixes[name] = model.path_of(module)
        except ValueError:   # tied into another module: no one prefix holds it, so none is recorded
            continue
    return prefixes


def _as_models(models):
    if models is None:
        return {}
    if isinstance(models, dict):
        return models
    return {"model": models}


def _write_atomically(path, arrays):
    """np.savez through atomic_file: a crash leaves the old file or the new one."""
    with atomic_file(path, suffix=".npz") as f:
        backend.numpy.savez(f, **arrays)


@contextlib.contextmanager
def atomic_file(path, mode="wb", suffix=""):
    """A file to write that becomes `path` only when the block ends without an error: written
    to a temporary file in the same folder, flushed and fsync'ed, then renamed over `path`
    (os.replace), so a crash leaves the old file or the new one, never half of one. Checkpoints,
    exported encoders (minienc.export) and their config.json are written through it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _check_numeric(arrays):
    """Refuse, at save time, an array a load could never read back (a load never unpickles)."""
    for key, value in arrays.items():
        dtype = backend.numpy.asarray(value).dtype
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
            raise TypeError(f"save_checkpoint: {key} has dtype {dtype}, which a checkpoint cannot "
                            f"store: arrays must be numbers or booleans (a load, which never "
                            f"unpickles, could not read it back)")


def _jsonable(value, where):
    """Python scalars, lists and dicts pass; NumPy scalars become Python numbers; anything else
    is refused with its location, rather than silently pickled or stringified."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, backend.numpy.generic):
        return value.item()
    raise TypeError(f"save_checkpoint: {where} is a {type(value).__name__}, which a checkpoint "
                    f"cannot store (use numbers, strings, lists and dicts)")
