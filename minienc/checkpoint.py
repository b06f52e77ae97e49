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
the new one, never half of one. Only numeric arrays are written (an object or string array is
refused at save time, since a load could never read it back). Loading checks everything before it
changes anything (see `load_checkpoint`), reads only the entries the metadata lists, each header
before its data, and names the entry when it refuses.

CuPy's random generators cannot be serialised, so only the host generator's state is saved; the
device generator continues its own stream after a resume (exact resumption is promised on CPU).
Host-side I/O: NumPy comes through `backend.numpy`, as the house rule asks.
"""
import contextlib
import json
import math
import os
import tempfile
import zipfile
import zlib

from . import backend, checks

FORMAT, VERSION = "minienc-checkpoint", 1
_META = "__meta__"
NUMERIC_KINDS = "biuf"        # the dtype kinds a checkpoint stores: bool, int, uint, float
MAX_META_BYTES = 64 * 2**20   # the metadata is JSON text; anything larger is not ours


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
    for key, value in arrays.items():
        dtype = np.asarray(value).dtype
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:  # refused now, not at load time
            raise TypeError(f"save_checkpoint: {key} has dtype {dtype}, which a checkpoint cannot "
                            f"store: arrays must be numbers or booleans (a load, which never "
                            f"unpickles, could not read it back)")
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

    with atomic_file(path, suffix=".npz") as f:
        np.savez(f, **arrays)
    return path


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


# ----- reading: every entry checked before it is used, and before anything changes ------------

class _Archive:
    """A checkpoint file opened for reading. Only the entries its metadata lists are ever read,
    one at a time, and each entry's .npy header (shape, dtype) is checked -- against what the
    model or optimizer expects, when that is known, and against the entry's size in the file --
    before its data is read. Entries must be stored uncompressed, as save_checkpoint writes
    them, so nothing a file claims can take more memory than the file's own size."""

    def __init__(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint {path}: no such file")
        self.path, self.size = path, os.path.getsize(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise self.error(f"is truncated or corrupt and cannot be read ({type(exc).__name__}: "
                             f"{exc})") from None
        try:
            self.names = set(self.zip.namelist())
            self.meta = self._read_meta()
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def error(self, message):
        return CheckpointError(f"checkpoint {self.path} {message}")

    def _read_meta(self):
        if _META + ".npy" not in self.names:
            raise self.error(f"has no {_META} entry; not a minienc checkpoint")
        raw = self.read(_META, kinds="u", max_bytes=MAX_META_BYTES)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except ValueError as exc:
            raise self.error(f"has a {_META} entry that is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            found = meta if not isinstance(meta, dict) else (meta.get("format"), meta.get("version"))
            raise self.error(f"is not a {FORMAT} version {VERSION} file (its metadata says {found!r})")
        _check_meta(self, meta)
        missing = sorted(key for key in _listed(meta) if key + ".npy" not in self.names)
        if missing:
            raise self.error(f"lacks arrays its metadata lists (missing: {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''})")
        return meta

    def read(self, key, shape=None, kinds=NUMERIC_KINDS, max_bytes=None, expected_by="the model"):
        """The array stored under `key`: header first (dtype of one of `kinds`, `shape` when
        given, as `expected_by` has it; a data size that matches the entry), then the data,
        CRC-checked."""
        np = backend.numpy
        info = self.zip.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.error(f"entry {key} is compressed; minienc checkpoints store arrays "
                             f"uncompressed (np.savez), so their size is bounded by the file's")
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy format version {version}")
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                found, fortran, dtype = read_header(f)
                if dtype.hasobject or dtype.kind not in kinds:
                    raise self.error(f"entry {key} has dtype {dtype}, expected a "
                                     f"{_kind_names(kinds)} array")
                if shape is not None and tuple(found) != tuple(shape):
                    raise self.error(f"entry {key} has shape {tuple(found)} in the file but "
                                     f"{tuple(shape)} in {expected_by}")
                nbytes = math.prod(found) * dtype.itemsize
                if info.file_size != f.tell() + nbytes or info.file_size > self.size or (
                        max_bytes is not None and nbytes > max_bytes):
                    raise self.error(f"entry {key}: its header says shape {tuple(found)} of "
                                     f"{dtype} ({nbytes} bytes), the entry holds "
                                     f"{info.file_size - f.tell()} bytes of data")
                data = bytearray(nbytes)
                if f.readinto(data) != nbytes or f.read(1):   # reading to the end checks the CRC
                    raise ValueError("the entry ends early")
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
            raise self.error(f"is truncated or corrupt and cannot be read: entry {key} "
                             f"({type(exc).__name__}: {exc})") from None
        return np.frombuffer(data, dtype).reshape(found, order="F" if fortran else "C")



def _kind_names(kinds):
    names = {"b": "boolean", "i": "integer", "u": "unsigned integer", "f": "floating"}
    return " or ".join(names[k] for k in kinds)


def _listed(meta):
    """Every array key the metadata lists (the only entries a load reads)."""
    keys = [f"model/{n}/{k}" for n, names in meta["models"].items() for k in names]
    keys += [f"optim/{i}/{k}" for i, e in meta.get("optimizer", {}).get("state", {}).items()
             for k in e["arrays"]]
    return keys + [f"extra/{name}" for name in meta["extra_arrays"]]


def _check_meta(archive, meta):
    """The metadata's structure, before any of it is used: names are strings, lists are lists,
    the RNG state is one NumPy accepts, the trainer's counters are integers >= 0."""
    def expect(ok, what):
        if not ok:
            raise archive.error(f"has malformed metadata: {what}")

    def strings(value):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    for key in ("trainer", "extra", "models", "rng"):
        expect(isinstance(meta.get(key), dict), f"'{key}' must be a dict")
    expect(strings(meta.get("extra_arrays")), "'extra_arrays' must be a list of names")
    for name, keys in meta["models"].items():
        expect(strings(keys), f"model {name!r} must list its array names")
    if "optimizer" in meta:
        opt = meta["optimizer"]
        expect(isinstance(opt, dict) and isinstance(opt.get("type"), str)
               and isinstance(opt.get("param_groups"), list) and isinstance(opt.get("state"), dict),
               "'optimizer' must hold a type, param_groups and state")
        for group in opt["param_groups"]:
            expect(isinstance(group, dict) and isinstance(group.get("params"), list)
                   and all(checks.is_count(i) for i in group["params"]),
                   "each optimizer parameter group must list integer parameter indices")
        for index, entry in opt["state"].items():
            expect(index.isdigit() and isinstance(entry, dict) and checks.is_count(entry.get("step"))
                   and strings(entry.get("arrays")),
                   f"optimizer state {index!r} must hold an integer step >= 0 and array names")
    expect(_valid_rng_state(meta["rng"].get("cpu")), "'rng.cpu' is not a NumPy PCG64 state")
    trainer = meta["trainer"]
    for key in ("step", "epoch", "batch_in_epoch"):
        expect(key not in trainer or checks.is_count(trainer[key]),
               f"trainer.{key} must be an integer >= 0, got {trainer.get(key)!r}")
    expect(trainer.get("epoch_rng") is None or _valid_rng_state(trainer["epoch_rng"]),
           "trainer.epoch_rng is not a NumPy PCG64 state")
    values = trainer.get("values", {})
    expect(isinstance(values, dict) and all(checks.is_real(v) for v in values.values()),
           "trainer.values must map names to numbers")


def _valid_rng_state(state):
    """Whether NumPy's PCG64 accepts `state` (tried on a scratch generator, not minienc's)."""
    try:
        backend.numpy.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def read_checkpoint(path):
    """(meta, arrays): the metadata and every array it lists, each checked against its entry
    (for inspection; `load_checkpoint` also checks them against the model)."""
    with _Archive(path) as archive:
        return archive.meta, {key: archive.read(key) for key in _listed(archive.meta)}


def _model_state(archive, name, model):
    """The saved state of `model`: the keys must be the model's, each array the model's shape
    and a dtype of the same kind (floating for floating, integer or boolean for those)."""
    saved = archive.meta["models"].get(name)
    if saved is None:
        raise archive.error(f"has no model named {name!r} (it holds {sorted(archive.meta['models'])})")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        raise archive.error(f"does not match model {name!r}: missing keys {missing}, unexpected "
                            f"keys {unexpected}")
    return {key: archive.read(f"model/{name}/{key}", value.shape,
                              "f" if value.dtype.kind == "f" else "biu")
            for key, value in own.items()}


def _optimizer_state(archive, optimizer):
    """The saved optimizer state in the form `Optimizer.load_state_dict` takes, each array read
    with its parameter's shape, and checked by the optimizer."""
    saved = archive.meta.get("optimizer")
    if saved is None:
        raise archive.error("holds no optimizer state")
    if saved["type"] != type(optimizer).__name__:
        raise archive.error(f"holds optimizer state for {saved['type']}, not {type(optimizer).__name__}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in saved["state"].items():
        i = int(index)
        if i >= len(params):
            raise archive.error(f"holds optimizer state for parameter {i}, but the optimizer has "
                                f"only {len(params)}")
        state[i] = {"step": entry["step"]}
        for key in entry["arrays"]:
            state[i][key] = archive.read(f"optim/{index}/{key}", params[i].shape, "f",
                                         expected_by=f"optimizer parameter {i}")
    opt_state = {"param_groups": saved["param_groups"], "state": state}
    try:
        optimizer.check_state_dict(opt_state)
    except ValueError as exc:
        raise archive.error(f"does not fit the optimizer: {exc}") from None
    return opt_state


def load_checkpoint(path, models=None, optimizer=None, restore_rng=True):
    """Load what `save_checkpoint` wrote into `models` (Module or dict) and `optimizer`, in place,
    and restore the host RNG. Everything is checked before anything changes -- the file's
    integrity, the metadata's structure, the RNG state, the trainer's counters, every model
    array's key, shape and dtype, the optimizer's groups, steps, hyperparameters and arrays --
    and a refusal is a CheckpointError naming the entry. Returns the metadata dict:
    `meta["trainer"]` is the saved training position, `meta["extra"]` the extra dict and
    `meta["arrays"]` the extra arrays."""
    models = _as_models(models)
    with _Archive(path) as archive:
        meta = archive.meta
        states = {name: _model_state(archive, name, m) for name, m in models.items()}
        opt_state = _optimizer_state(archive, optimizer) if optimizer is not None else None
        meta["arrays"] = {name: archive.read(f"extra/{name}") for name in meta["extra_arrays"]}
    for name, model in models.items():
        model.load_state_dict(states[name])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if restore_rng:
        backend.set_rng_state(meta["rng"]["cpu"])
    return meta
