"""Values with large arrays: out-of-band buffers (docs/format.md section 4.2),
copies and read-only views (docs/objects.md)."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._encoding import OUT_OF_BAND_MIN

BIG = OUT_OF_BAND_MIN // 8 * 2  # float64 elements: twice the threshold


def _flags(db: logshelf.Shelf, key: str) -> int:
    segment, offset = db.locate(key)
    with open(segment, "rb") as f:
        f.seek(offset)
        return fmt.RECORD_HEADER.unpack(f.read(fmt.RECORD_HEADER.size))[-1]


def _buffer_offset(db: logshelf.Shelf, key: str) -> tuple[str, int]:
    """File and offset of the first buffer of ``key``'s value."""
    segment, offset = db.locate(key)
    data = Path(segment).read_bytes()
    header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, offset))
    at = offset + fmt.RECORD_HEADER.size + header.klen
    head_len = int.from_bytes(data[at : at + 4], "little")
    return segment, -(-(at + head_len) // 64) * 64


@pytest.mark.parametrize(
    "value",
    [
        np.arange(BIG, dtype=np.float64),
        np.arange(BIG, dtype=np.int32).reshape(64, -1),
        np.asfortranarray(np.arange(BIG, dtype=np.float64).reshape(128, -1)),
        np.zeros(BIG, dtype=[("a", "<i4"), ("b", "<f8")]),
    ],
    ids=["float64", "int32-2d", "fortran", "structured"],
)
def test_large_arrays_go_out_of_band_and_read_back_writable(tmp_path: Path, value: Any) -> None:
    with logshelf.open(tmp_path / "s") as db:
        db["a"] = value
        assert _flags(db, "a") & fmt.FLAG_BUFFERS
        back = db["a"]
    assert back.dtype == value.dtype and back.shape == value.shape
    assert np.array_equal(back, value)
    assert back.flags.writeable and back.flags.f_contiguous == value.flags.f_contiguous
    back[...] = 0  # a fresh copy: writing to it changes nothing stored
    with logshelf.open(tmp_path / "s", "r") as db:
        assert np.array_equal(db["a"], value)


def test_small_arrays_and_protocol_4_stay_in_band(tmp_path: Path) -> None:
    small = np.arange(OUT_OF_BAND_MIN // 8 - 1, dtype=np.float64)
    with logshelf.open(tmp_path / "s") as db:
        db["small"] = small
        assert not _flags(db, "small") & fmt.FLAG_BUFFERS
        assert np.array_equal(db["small"], small)
    with logshelf.open(tmp_path / "p4", protocol=4) as db:
        db["big"] = np.arange(BIG, dtype=np.float64)
        assert not _flags(db, "big") & fmt.FLAG_BUFFERS
        assert np.array_equal(db["big"], np.arange(BIG, dtype=np.float64))


def test_dataframes_and_mixed_values(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(BIG, dtype=np.float64), "y": np.arange(BIG), "s": "t"})
    mixed = {"arrays": [np.ones(BIG), np.arange(10)], "text": "hello", "n": 3}
    with logshelf.open(tmp_path / "s") as db:
        db.update({"frame": frame, "mixed": mixed, "plain": {"a": 1}})  # one batch
        assert _flags(db, "frame") & fmt.FLAG_BUFFERS
    with logshelf.open(tmp_path / "s", "r") as db:
        assert db["frame"].equals(frame)
        back = db["mixed"]
        assert np.array_equal(back["arrays"][0], np.ones(BIG)) and back["text"] == "hello"
        assert db["plain"] == {"a": 1}
        assert db.verify() == []


def test_buffers_are_64_byte_aligned_in_the_file(tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "s") as db:
        for n in range(5):
            db[f"k{'x' * n}"] = np.full(OUT_OF_BAND_MIN + n, n, dtype=np.uint8)
            assert _flags(db, f"k{'x' * n}") & fmt.FLAG_BUFFERS
            _, at = _buffer_offset(db, f"k{'x' * n}")
            assert at % 64 == 0
            view = db.get(f"k{'x' * n}", copy=False)
            assert view.ctypes.data % 64 == 0  # the map is page-aligned


def test_copy_false_views_are_read_only_and_outlive_close_and_compaction(tmp_path: Path) -> None:
    first = np.arange(BIG, dtype=np.float64)
    with logshelf.open(tmp_path / "s", max_segment_size=4096, auto_compact=None) as db:
        db["a"] = first
        view = db.get("a", copy=False)
        assert not view.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1.0
        db["a"] = first * 2  # the old record is dead ...
        db.compact()  # ... and its segment deleted
        assert np.array_equal(db["a"], first * 2)
    gc.collect()
    assert np.array_equal(view, first)  # the map keeps the deleted file
    with logshelf.open(tmp_path / "s", "r", copy=False) as db:
        handle_default = db["a"]
        assert not handle_default.flags.writeable
        assert db.get("a", copy=True).flags.writeable
    assert np.array_equal(handle_default, first * 2)


def test_a_damaged_buffer_is_caught_by_copies_and_verify(tmp_path: Path) -> None:
    value = np.arange(BIG, dtype=np.float64)
    with logshelf.open(tmp_path / "s") as db:
        db["a"] = value
        db["b"] = {"small": 1}
        segment, at = _buffer_offset(db, "a")
    with open(segment, "r+b") as f:
        f.seek(at + 1000)
        byte = f.read(1)
        f.seek(at + 1000)
        f.write(bytes([byte[0] ^ 0x40]))
    with logshelf.open(tmp_path / "s", "r") as db:
        with pytest.raises(logshelf.CorruptionError, match=r"key 'a'.*buffer checksum"):
            db["a"]
        # A view is not checked on read (docs/durability.md): verify() is.
        assert not np.array_equal(db.get("a", copy=False), value)
        problems = db.verify()
        assert any("checksum" in p for p in problems), problems
        assert db["b"] == {"small": 1}


def test_a_transaction_keeps_the_array_as_it_was_when_assigned(tmp_path: Path) -> None:
    array = np.ones(BIG)
    with logshelf.open(tmp_path / "s") as db:
        with db.transaction():
            db["a"] = array
            array[:] = 5.0
            assert db["a"].sum() == BIG  # read inside: the snapshot
        assert db["a"].sum() == BIG
    with logshelf.open(tmp_path / "s", "r") as db:
        assert db["a"].sum() == BIG


def test_compressible_buffers_are_compressed_each_and_incompressible_ones_not(
    tmp_path: Path,
) -> None:
    zeros = np.zeros(BIG)
    noise = np.random.default_rng(1).standard_normal(BIG)
    with logshelf.open(tmp_path / "s", compression="lz4") as db:
        db["v"] = {"zeros": zeros, "noise": noise}
        segment, _ = db.locate("v")
        size = os.path.getsize(segment)
        back = db["v"]
        view = db.get("v", copy=False)
    assert size < noise.nbytes + zeros.nbytes // 4  # the zeros shrank
    assert np.array_equal(back["zeros"], zeros) and back["zeros"].flags.writeable
    assert np.array_equal(back["noise"], noise)
    # A compressed buffer cannot be a view: it is decompressed (copied).
    assert view["zeros"].flags.writeable and not view["noise"].flags.writeable


def test_another_process_handle_sees_arrays_through_its_scan(tmp_path: Path) -> None:
    """A reader that follows another writer scans the new records, buffers
    included (the change-counter path, not the writer's own index)."""
    value = np.arange(BIG, dtype=np.float64)
    with logshelf.open(tmp_path / "s") as writer, logshelf.open(tmp_path / "s", "r") as reader:
        assert "a" not in reader
        writer["a"] = value
        writer["b"] = 2
        assert np.array_equal(reader["a"], value) and reader["b"] == 2


def test_a_torn_array_record_is_cut_like_any_torn_tail(tmp_path: Path) -> None:
    value = np.arange(BIG, dtype=np.float64)
    with logshelf.open(tmp_path / "s") as db:
        db["before"] = {"n": 1}
        db["a"] = value
        segment, at = _buffer_offset(db, "a")
    os.truncate(segment, at + 4096)  # killed while writing the buffer
    with logshelf.open(tmp_path / "s") as db:
        assert "a" not in db and db["before"] == {"n": 1}
        db["a"] = value
    with logshelf.open(tmp_path / "s", "r") as db:
        assert np.array_equal(db["a"], value) and db.verify() == []


def test_salvage_and_safe_loading_keep_arrays(tmp_path: Path) -> None:
    value = np.arange(BIG, dtype=np.float64)
    with logshelf.open(tmp_path / "s") as db:
        db["a"] = value
        db["b"] = [1, 2]
    report = logshelf.salvage(tmp_path / "s", tmp_path / "copy")
    assert report.lost_keys == []
    with logshelf.open(tmp_path / "copy", "r", safe=True, trusted_owner=True) as db:
        assert np.array_equal(db["a"], value) and db["b"] == [1, 2]


def test_copy_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="copy must be True or False"):
        logshelf.open(tmp_path / "s", copy="no")  # type: ignore[arg-type]
    with logshelf.open(tmp_path / "s") as db:
        db["a"] = 1
        with pytest.raises(TypeError, match="copy must be True or False"):
            db.get("a", copy=1)  # type: ignore[arg-type]


def test_pickle_buffers_of_any_object_go_out_of_band(tmp_path: Path) -> None:
    """Not only numpy: anything that hands pickle a PickleBuffer."""
    data = bytearray(os.urandom(OUT_OF_BAND_MIN))
    with logshelf.open(tmp_path / "s") as db:
        db["b"] = pickle.PickleBuffer(data)
        assert _flags(db, "b") & fmt.FLAG_BUFFERS
        assert db["b"] == data
