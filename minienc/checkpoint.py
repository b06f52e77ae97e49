"""Checkpoints: models, optimizer, training position and RNG state in one .npz file.

Layout of the archive (every entry a plain array, so `np.load(..., allow_pickle=False)` reads it):

    model/<name>/<key>      one array per parameter and buffer of each model's state_dict
    optim/<index>/<key>     the optimizer's per-parameter arrays (Adam's moments, momentum buffers)
    extra/<name>            any other host arrays the caller keeps (the trainer's loss history)
    __meta__                a uint8 array holding UTF-8 JSON: format and version, the trainer's
                            position (step, epoch, ...), the optimizer's hyperparameters and step
                            counts, the host RNG state, the list of array keys, and `extra`

Writes are atomic: the archive goes to a temporary file in the same directory, is flushed and
fsync'ed, then renamed over the target with os.replace, so a crash leaves either the old file or
the new one, never half of one. Loading checks everything (integrity, missing and unexpected
keys, shapes) before it changes anything, and names the problem when it refuses.

CuPy's random generators cannot be serialised, so only the host generator's state is saved; the
device generator continues its own stream after a resume (exact resumption is promised on CPU).
Host-side I/O: NumPy comes through `backend.numpy`, as the house rule asks.
"""
import json
import os
import tempfile
import zipfile

from . import backend

FORMAT, VERSION = "minienc-checkpoint", 1
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: corrupt, truncated, or for another model."""


def _as_models(models):
    if models is None:
        return {}
    if isinstance(models, dict):
        return models
    return {"model": models}


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


def save_checkpoint(path, models=None, optimizer=None, trainer=None, extra=None,
                    extra_arrays=None):
    """Write one .npz at `path` atomically. `models` is a Module or a dict name -> Module;
    `trainer` a dict of JSON-able training position (step, epoch, ...); `extra` any JSON-able
    dict (config, metrics); `extra_arrays` a dict name -> host array. Returns `path`."""
    arrays, meta = {}, {"format": FORMAT, "version": VERSION, "trainer": trainer or {},
                        "extra": extra or {}, "models": {}, "extra_arrays": []}
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
    np = backend.numpy
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
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
    return path


def read_checkpoint(path):
    """(meta, arrays): the whole archive read into memory and checked for integrity."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        with backend.numpy.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}  # reads and CRC-checks each
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc})") from None
    if _META not in arrays:
        raise CheckpointError(f"checkpoint {path}: no {_META} entry; not a minienc checkpoint")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {path}: its {_META} entry is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}, expected {FORMAT!r} version {VERSION}")
    listed = {f"model/{n}/{k}" for n, keys in meta["models"].items() for k in keys}
    listed |= {f"optim/{i}/{k}" for i, e in meta.get("optimizer", {}).get("state", {}).items()
               for k in e["arrays"]}
    listed |= {f"extra/{name}" for name in meta.get("extra_arrays", [])}
    missing = sorted(listed - set(arrays))
    if missing:
        raise CheckpointError(f"checkpoint {path}: arrays listed in its metadata are missing: "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return meta, arrays


def _model_state(path, name, model, meta, arrays):
    """The saved state of `model`, checked against the model's own keys and shapes."""
    if name not in meta["models"]:
        raise CheckpointError(f"checkpoint {path}: no model named {name!r} (it holds "
                              f"{sorted(meta['models'])})")
    own = model.state_dict()
    saved = {k: arrays[f"model/{name}/{k}"] for k in meta["models"][name]}
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: model {name!r} does not match: missing keys "
                              f"{missing}, unexpected keys {unexpected}")
    for key, value in own.items():
        if saved[key].shape != value.shape:
            raise CheckpointError(f"checkpoint {path}: model {name!r} parameter {key} has shape "
                                  f"{saved[key].shape} in the file but {value.shape} in the model")
    return saved


def load_checkpoint(path, models=None, optimizer=None, restore_rng=True):
    """Load what `save_checkpoint` wrote into `models` (Module or dict) and `optimizer`, in place,
    and restore the host RNG. Every part is checked before any is changed. Returns the metadata
    dict: `meta["trainer"]` is the saved training position, `meta["extra"]` the extra dict and
    `meta["arrays"]` the extra arrays."""
    meta, arrays = read_checkpoint(path)
    models = _as_models(models)
    states = {name: _model_state(path, name, m, meta, arrays) for name, m in models.items()}
    opt_state = None
    if optimizer is not None:
        saved = meta.get("optimizer")
        if saved is None:
            raise CheckpointError(f"checkpoint {path}: holds no optimizer state")
        if saved["type"] != type(optimizer).__name__:
            raise CheckpointError(f"checkpoint {path}: optimizer state is for {saved['type']}, "
                                  f"not {type(optimizer).__name__}")
        opt_state = {"param_groups": saved["param_groups"], "state": {
            int(i): dict({"step": e["step"]}, **{k: arrays[f"optim/{i}/{k}"] for k in e["arrays"]})
            for i, e in saved["state"].items()}}
        try:
            optimizer.check_state_dict(opt_state)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
    for name, model in models.items():
        model.load_state_dict(states[name])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if restore_rng:
        backend.set_rng_state(meta["rng"]["cpu"])
    meta["arrays"] = {name: arrays[f"extra/{name}"] for name in meta.get("extra_arrays", [])}
    return meta
