"""The safetensors file format, read and written with NumPy alone (Hugging Face's format for
tensors: no code runs when a file is read, unlike a pickle).

    8 bytes    N, the header's length, an unsigned 64-bit little-endian integer
    N bytes    a JSON object: {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
               ..., "__metadata__": {string: string}} (optional), padded with spaces
    the rest   every tensor's bytes, little-endian, row-major; offsets count from the end of the
               header, and the tensors tile the data exactly: no holes, no overlaps

The writer orders tensors as the `safetensors` package does (by its dtype order, last first, then
by name) and pads the header to 8 bytes, so its files are byte for byte the package's
(tests/test_safetensors.py checks both directions where the package is installed). The reader
checks the whole header before it trusts an offset and names the tensor when it refuses; nothing
is ever unpickled. Writes are atomic (minienc.checkpoint.atomic_file).
"""
import json
import math
import struct

from . import backend
from .checkpoint import atomic_file

numpy = backend.numpy   # host-side file I/O: the format's bytes are NumPy's

# in the order of the package's Dtype enum, by which it sorts a file's tensors (last first)
DTYPES = {"BOOL": numpy.bool_, "U8": numpy.uint8, "I8": numpy.int8, "I16": numpy.int16,
          "U16": numpy.uint16, "F16": numpy.float16, "I32": numpy.int32, "U32": numpy.uint32,
          "F32": numpy.float32, "F64": numpy.float64, "I64": numpy.int64, "U64": numpy.uint64}
RANK = {code: i for i, code in enumerate(DTYPES)}
CODES = {numpy.dtype(t): code for code, t in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 2**20   # the package's own limit


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, or not the tensors that were expected."""


def dtype_code(dtype):
    """"F32" for float32, ...; a dtype safetensors cannot hold (object, complex, ...) is refused."""
    code = CODES.get(numpy.dtype(dtype).newbyteorder("="))
    if code is None:
        raise SafetensorsError(f"safetensors holds {', '.join(DTYPES)}; not {numpy.dtype(dtype)}")
    return code


def save_file(tensors, path, metadata=None):
    """Write `tensors` (name -> host array) and `metadata` (str -> str) to `path` atomically."""
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"save_file: tensor name {name!r} must be a string other than "
                                   f"'__metadata__'")
        array = numpy.asarray(value)
        code = dtype_code(array.dtype)
        # (not ascontiguousarray: it turns a 0-d array into shape (1,))
        arrays[name] = (code, array.astype(array.dtype.newbyteorder("<"), order="C", copy=False))
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise SafetensorsError("save_file: metadata must map strings to strings")
    order = sorted(arrays, key=lambda n: (-RANK[arrays[n][0]], n))
    header, offset = ({"__metadata__": dict(metadata)} if metadata else {}), 0
    for name in order:
        code, array = arrays[name]
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    with atomic_file(path, suffix=".safetensors") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            f.write(arrays[name][1].tobytes())
    return path


class _DuplicateName(Exception):
    pass


def _unique_names(pairs):
    """A JSON object as a dict, refusing a name given twice (json.loads would keep the last)."""
    out = {}
    for name, value in pairs:
        if name in out:
            raise _DuplicateName(name)
        out[name] = value
    return out


def read_header(raw, where="safetensors"):
    """(entries sorted by offset: [(name, dtype code, shape, begin, end)], metadata, data start)
    from the bytes of a whole file, every rule of the format checked."""
    def refuse(message):
        return SafetensorsError(f"{where}: {message}")

    if len(raw) < 8:
        raise refuse(f"{len(raw)} bytes, shorter than the 8-byte header length")
    length = struct.unpack("<Q", raw[:8])[0]
    if length > MAX_HEADER_BYTES or 8 + length > len(raw):
        raise refuse(f"the header length says {length:,} bytes but the file holds "
                     f"{len(raw) - 8:,} after it (truncated, or not safetensors)")
    try:
        header = json.loads(raw[8:8 + length].decode("utf-8"), object_pairs_hook=_unique_names)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"the header is not JSON ({exc})") from None
    except _DuplicateName as exc:
        raise refuse(f"tensor {exc.args[0]!r} is listed twice in the header (which one is it?)") from None
    if not isinstance(header, dict):
        raise refuse("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise refuse("__metadata__ must map strings to strings")
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise refuse(f"tensor {name!r}: an entry needs exactly dtype, shape and data_offsets, "
                         f"got {entry!r}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in DTYPES:
            raise refuse(f"tensor {name!r}: dtype {code!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise refuse(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise refuse(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with "
                         f"0 <= begin <= end")
        size = math.prod(shape) * numpy.dtype(DTYPES[code]).itemsize
        if offsets[1] - offsets[0] != size:
            raise refuse(f"tensor {name!r}: shape {shape} of {code} is {size:,} bytes but its "
                         f"data_offsets {offsets} span {offsets[1] - offsets[0]:,}")
        entries.append((name, code, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    end, previous, data = 0, None, len(raw) - 8 - length
    for name, _, _, begin, stop in entries:
        if begin < end:
            raise refuse(f"tensors {previous!r} and {name!r} overlap (bytes {begin:,} to {end:,})")
        if begin > end:
            raise refuse(f"a hole of {begin - end:,} bytes before tensor {name!r} (at byte {end:,})")
        end, previous = stop, name
    if end != data:
        raise refuse(f"the tensors end at byte {end:,} of the data but the file holds {data:,} "
                     + ("(truncated?)" if end > data else "(bytes after the last tensor)"))
    return entries, metadata, 8 + length


def load_file(path):
    """(tensors: name -> host array in native byte order, metadata) from a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    entries, metadata, start = read_header(raw, where=str(path))
    tensors = {}
    for name, code, shape, begin, stop in entries:
        dtype = numpy.dtype(DTYPES[code]).newbyteorder("<")
        array = numpy.frombuffer(raw, dtype, count=math.prod(shape), offset=start + begin)
        tensors[name] = array.reshape(shape).astype(dtype.newbyteorder("="))   # a copy we own
    return tensors, metadata
