"""minienc.safetensors (issue 29), the file format the export writes: its files are the
safetensors package's byte for byte and read by it, any tensors round-trip, and a file that
lies (shape, dtype, offsets, a tensor listed twice) or is not safetensors at all is refused by
tensor name; writes are atomic. The exporter on top of it: tests/test_export.py."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minienc.safetensors import DTYPES, SafetensorsError, load_file, save_file


def sample_tensors(rng):
    return {"weight": rng.normal(size=(3, 4)).astype(np.float32), "bias": np.arange(3.0),
            "count": np.array(7, np.int64), "mask": np.array([True, False]),
            "half": rng.normal(size=5).astype(np.float16), "empty": np.zeros((0, 2), np.float32),
            "bytes": np.arange(5, dtype=np.uint8).reshape(5, 1), "wide": np.arange(2, dtype=np.uint64),
            "small": np.arange(3, dtype=np.int16), "unsigned": np.arange(3, dtype=np.uint16)}


def test_files_are_the_packages_byte_for_byte_and_read_both_ways(tmp_path):
    package = pytest.importorskip("safetensors.numpy")
    # (one metadata entry: the package writes several in its hash map's order)
    tensors, metadata = sample_tensors(np.random.default_rng(0)), {"format": "pt"}
    save_file(tensors, tmp_path / "ours.safetensors", metadata)
    package.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    theirs = package.load_file(str(tmp_path / "ours.safetensors"))
    ours, read_metadata = load_file(tmp_path / "theirs.safetensors")
    assert read_metadata == metadata
    for name, value in tensors.items():
        for got in (theirs[name], ours[name]):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                       st.tuples(st.sampled_from(sorted(DTYPES)),
                                 st.lists(st.integers(0, 3), max_size=3)), max_size=5))
def test_any_tensors_round_trip(tmp_path_factory, entries):
    rng = np.random.default_rng(0)
    tensors = {n: (rng.normal(size=shape) * 50).astype(DTYPES[code]) for n, (code, shape) in entries.items()}
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_file(tensors, path)
    loaded, _ = load_file(path)
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value), name


def rewrite(path, header, data=None):
    """Write `path` again with another header (and data): a file that lies."""
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    data = raw[8 + length:] if data is None else data
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def header_of(path):
    raw = path.read_bytes()
    return json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])


@pytest.mark.parametrize("lie, message", [
    (lambda h: h["a"].update(data_offsets=[0, 16]), r"tensor 'a': shape \[3\] of F32 is 12 bytes but its data_offsets \[0, 16\] span 16"),
    (lambda h: h["b"].update(data_offsets=[8, 20]), r"tensors 'a' and 'b' overlap"),
    (lambda h: (h["a"].update(data_offsets=[4, 16]), h["b"].update(data_offsets=[16, 28])), r"a hole of 4 bytes before tensor 'a'"),
    (lambda h: h["b"].update(shape=[2]), r"tensor 'b': shape \[2\] of F32 is 8 bytes"),
    (lambda h: h["a"].update(dtype="BF16"), r"tensor 'a': dtype 'BF16' is not one of"),
    (lambda h: h["a"].update(data_offsets=[12, 0]), r"tensor 'a': data_offsets \[12, 0\] are not"),
    (lambda h: h.update(c={"dtype": "F32", "shape": [1], "data_offsets": [24, 28]}), r"the tensors end at byte 28 of the data but the file holds 24 \(truncated\?\)"),
    (lambda h: h["a"].update(extra=1), r"tensor 'a': an entry needs exactly dtype, shape and data_offsets"),
])
def test_a_header_that_lies_is_refused_by_tensor_name(tmp_path, lie, message):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32), "b": np.ones(3, np.float32)}, path)
    header = header_of(path)
    lie(header)
    rewrite(path, header)
    with pytest.raises(SafetensorsError, match=message):
        load_file(path)


def test_files_that_are_not_safetensors_are_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, path)
    whole = path.read_bytes()
    cases = [(whole[:5], "shorter than the 8-byte header length"),
             (struct.pack("<Q", 10**6) + whole[8:], "the header length says 1,000,000 bytes"),
             (whole[:-4], r"the file holds 8 \(truncated\?\)"),
             (whole + b"\0" * 4, r"bytes after the last tensor"),
             (struct.pack("<Q", 4) + b"{abc", "the header is not JSON"),
             (struct.pack("<Q", 2) + b"[]", "the header is not a JSON object")]
    for raw, message in cases:
        path.write_bytes(raw)
        with pytest.raises(SafetensorsError, match=message):
            load_file(path)


def test_writes_are_atomic_and_refuse_what_the_format_cannot_hold(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(SafetensorsError, match="not object"):
        save_file({"a": np.array([None])}, path)
    with pytest.raises(SafetensorsError, match="not complex128"):
        save_file({"a": np.zeros(2, complex)}, path)

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_file({"a": np.ones(3, np.float32)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["t.safetensors"]


def test_a_tensor_listed_twice_in_the_header_is_refused(tmp_path):
    """json.loads keeps the last of two entries with one name: which tensor is it?"""
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, path)
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    text = raw[8:8 + length].decode().rstrip()
    text = '{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},' + text[1:]
    text += " " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + raw[8 + length:])
    with pytest.raises(SafetensorsError, match=r"tensor 'a' is listed twice in the header"):
        load_file(path)


def test_metadata_that_is_not_a_dict_is_refused_by_name(tmp_path):
    with pytest.raises(SafetensorsError, match=r"^save_file: metadata must map strings to strings"):
        save_file({"a": np.zeros(2)}, tmp_path / "t.safetensors", metadata=[("a", "b")])
