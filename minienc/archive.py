"""Reading a checkpoint file without trusting it: the hardened half of minienc/checkpoint.py.

A checkpoint may come from anywhere (a crash, another model, a hostile file), so nothing in it is
used before it is checked, and nothing it claims can make the reader allocate more than the
file's own size. `CheckpointArchive` opens the file and refuses, with a `CheckpointError` naming
the entry:

- the file: a zip whose metadata entry is valid JSON of this format and version; truncated or
  corrupt files (bad CRC, short entries) are refused;
- the metadata's structure (`_check_meta`): names are strings, lists are lists, counters are
  integers >= 0, RNG states are ones NumPy's PCG64 accepts (tried on a scratch generator);
- each array, before its data is read: only the entries the metadata lists are opened; the
  `.npy` header's dtype must be numeric (never an object array: nothing is unpickled) and its
  shape the one the model or optimizer expects; the header's size must equal the entry's size in
  the file, and entries must be stored uncompressed (as `np.savez` writes them), so a small file
  cannot claim a huge array (a memory bomb);
- the fit: `model_state` wants the model's keys, shapes and dtype kinds; `optimizer_state` the
  optimizer's type, its parameters' shapes and what `Optimizer.check_state_dict` accepts.
"""
import json
import math
import os
import zipfile
import zlib

from . import backend, checks

FORMAT, VERSION = "minienc-checkpoint", 1
META = "__meta__"             # the entry holding the metadata (UTF-8 JSON as a uint8 array)
NUMERIC_KINDS = "biuf"        # the dtype kinds a checkpoint stores: bool, int, uint, float
MAX_META_BYTES = 64 * 2**20   # the metadata is JSON text; anything larger is not ours


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: corrupt, truncated, or for another model."""


class CheckpointArchive:
    """A checkpoint file opened for reading (a context manager). `meta` is its metadata, already
    checked; `read`, `model_state` and `optimizer_state` read arrays one at a time, each header
    checked before its data (module docstring)."""

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
        if META + ".npy" not in self.names:
            raise self.error(f"has no {META} entry; not a minienc checkpoint")
        raw = self.read(META, kinds="u", max_bytes=MAX_META_BYTES)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except ValueError as exc:
            raise self.error(f"has a {META} entry that is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            found = meta if not isinstance(meta, dict) else (meta.get("format"), meta.get("version"))
            raise self.error(f"is not a {FORMAT} version {VERSION} file (its metadata says {found!r})")
        _check_meta(self, meta)
        missing = sorted(key for key in listed_arrays(meta) if key + ".npy" not in self.names)
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

    def model_state(self, name, model):
        """The saved state of `model`: the keys must be the model's, each array the model's shape
        and a dtype of the same kind (floating for floating, integer or boolean for those)."""
        saved = self.meta["models"].get(name)
        if saved is None:
            raise self.error(f"has no model named {name!r} (it holds {sorted(self.meta['models'])})")
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        if missing or unexpected:
            raise self.error(f"does not match model {name!r}: missing keys {missing}, unexpected "
                             f"keys {unexpected}")
        return {key: self.read(f"model/{name}/{key}", value.shape,
                               "f" if value.dtype.kind == "f" else "biu")
                for key, value in own.items()}

    def optimizer_state(self, optimizer):
        """The saved optimizer state in the form `Optimizer.load_state_dict` takes, each array
        read with its parameter's shape, and checked by the optimizer."""
        saved = self.meta.get("optimizer")
        if saved is None:
            raise self.error("holds no optimizer state")
        if saved["type"] != type(optimizer).__name__:
            raise self.error(f"holds optimizer state for {saved['type']}, not {type(optimizer).__name__}")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = {}
        for index, entry in saved["state"].items():
            i = int(index)
            if i >= len(params):
                raise self.error(f"holds optimizer state for parameter {i}, but the optimizer has "
                                 f"only {len(params)}")
            state[i] = {"step": entry["step"]}
            for key in entry["arrays"]:
                state[i][key] = self.read(f"optim/{index}/{key}", params[i].shape, "f",
                                          expected_by=f"optimizer parameter {i}")
        opt_state = {"param_groups": saved["param_groups"], "state": state}
        try:
            optimizer.check_state_dict(opt_state)
        except ValueError as exc:
            raise self.error(f"does not fit the optimizer: {exc}") from None
        return opt_state


def listed_arrays(meta):
    """Every array key the metadata lists (the only entries a load reads)."""
    keys = [f"model/{n}/{k}" for n, names in meta["models"].items() for k in names]
    keys += [f"optim/{i}/{k}" for i, e in meta.get("optimizer", {}).get("state", {}).items()
             for k in e["arrays"]]
    return keys + [f"extra/{name}" for name in meta["extra_arrays"]]


def _kind_names(kinds):
    names = {"b": "boolean", "i": "integer", "u": "unsigned integer", "f": "floating"}
    return " or ".join(names[k] for k in kinds)


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
    encoders = meta.get("encoders", {})   # absent in checkpoints written before it was recorded
    expect(isinstance(encoders, dict) and all(isinstance(v, str) and k in meta["models"]
                                              for k, v in encoders.items()),
           "'encoders' must map model names to prefixes")
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
