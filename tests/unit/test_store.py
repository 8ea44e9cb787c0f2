"""The shelve-compatible API: flags, misuse, keys, values, codecs, writeback."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _codecs, _writer
from logshelf import _format as fmt
from logshelf._fs import FileSystem


def _files(path: Path) -> dict[str, bytes]:
    """The store's data files and their bytes: not LOCK (empty), and not the
    change counter in CHANGES, which every hold of the writer lock raises,
    even one that then writes nothing."""
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and p.name != "LOCK"}
    files[fmt.CHANGES_NAME] = files[fmt.CHANGES_NAME][: fmt.CHANGES_COUNTER.start]
    return files


# -- flags -----------------------------------------------------------------


def test_flag_c_creates_and_reopens(store_path: Path) -> None:
    """Flag "c" creates a missing store and opens an existing one unchanged."""
    with logshelf.open(store_path, "c") as db:
        db["k"] = 1
    assert store_path.is_dir() and (store_path / "MANIFEST").is_file()
    with logshelf.open(store_path, "c") as db:
        assert db["k"] == 1


def test_flag_n_always_starts_empty(store_path: Path) -> None:
    """Flag "n" empties an existing store, and the old data stays gone after reopen."""
    with logshelf.open(store_path) as db:
        db.update({f"k{i}": i for i in range(50)})
    with logshelf.open(store_path, "n") as db:
        assert len(db) == 0
        db["fresh"] = True
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {"fresh": True}
    segments = [p for p in store_path.iterdir() if p.suffix == ".log"]
    assert len(segments) == 1


def test_flag_n_creates_missing(store_path: Path) -> None:
    """Flag "n" on a missing path creates an empty store."""
    with logshelf.open(store_path, "n") as db:
        assert len(db) == 0


@pytest.mark.parametrize("flag", ["r", "w"])
def test_flag_r_and_w_need_an_existing_store(store_path: Path, flag: str) -> None:
    """Flags "r" and "w" on a missing path raise StoreNotFoundError and create nothing."""
    with pytest.raises(logshelf.StoreNotFoundError) as info:
        logshelf.open(store_path, flag)
    assert isinstance(info.value, FileNotFoundError)
    assert str(store_path) in str(info.value)
    assert not store_path.exists()


def test_flag_w_reads_and_writes(store_path: Path) -> None:
    """Flag "w" opens an existing store for reading and writing."""
    logshelf.open(store_path).close()
    with logshelf.open(store_path, "w") as db:
        db["k"] = "v"
        assert db["k"] == "v"


@pytest.mark.parametrize("flag", ["x", "rw", "", "C", None, 1])
def test_bad_flag_is_named(store_path: Path, flag: Any) -> None:
    """An unknown flag raises ValueError naming it, before touching the disk."""
    with pytest.raises(ValueError, match=repr(flag).replace("(", r"\(")):
        logshelf.open(store_path, flag)
    assert not store_path.exists()


def test_read_only_rejects_every_write(store_path: Path) -> None:
    """Every write on flag "r" raises ReadOnlyError and changes no file."""
    with logshelf.open(store_path) as db:
        db.update({"a": 1, "b": 2})
    before = _files(store_path)
    with logshelf.open(store_path, "r") as db:
        attempts = [
            lambda: db.__setitem__("c", 3),
            lambda: db.__delitem__("a"),
            lambda: db.update({"d": 4}),
            lambda: db.set_many({"d": 4}),
            lambda: db.delete_many(["a"]),
            lambda: db.pop("a"),
            lambda: db.clear(),
            lambda: db.setdefault("z", 1),
        ]
        for attempt in attempts:
            with pytest.raises(logshelf.ReadOnlyError, match="read-only"):
                attempt()
        with pytest.raises(logshelf.ReadOnlyError), db.transaction():
            pass
        assert dict(db) == {"a": 1, "b": 2}
    assert _files(store_path) == before


# -- closed store ----------------------------------------------------------


def test_closed_store_raises_on_every_use(store_path: Path) -> None:
    """After close() every operation raises StoreClosedError (a ValueError); close is idempotent."""
    db = logshelf.open(store_path)
    db["k"] = 1
    db.close()
    db.close()
    assert db.closed
    uses = [
        lambda: db["k"],
        lambda: db.__setitem__("k", 2),
        lambda: db.__delitem__("k"),
        lambda: "k" in db,
        lambda: len(db),
        lambda: list(db),
        lambda: db.get("k"),
        lambda: db.keys() and list(db.keys()),
        lambda: db.update({"a": 1}),
        lambda: db.get_many(["k"]),
        lambda: db.sync(),
        lambda: db.transaction().__enter__(),
    ]
    for use in uses:
        with pytest.raises(logshelf.StoreClosedError) as info:
            use()
        assert isinstance(info.value, ValueError)


def test_context_manager_closes(store_path: Path) -> None:
    """Leaving the with-block closes the store, also on an exception."""
    with pytest.raises(RuntimeError), logshelf.open(store_path) as db:
        db["k"] = 1
        raise RuntimeError("boom")
    assert db.closed
    with logshelf.open(store_path) as again:
        assert again["k"] == 1


# -- keys ------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, 1.5, b"bytes", None, ("t",), object()])
def test_non_str_key_raises_type_error_naming_type(db: logshelf.Shelf, key: Any) -> None:
    """A key that is not a str raises TypeError naming its type, and nothing is written."""
    for operation in (lambda: db.__setitem__(key, 1), lambda: db[key], lambda: db.__delitem__(key)):
        with pytest.raises(TypeError, match=type(key).__name__):
            operation()
    with pytest.raises(TypeError):
        db.update({key: 1, "ok": 2})
    assert len(db) == 0


@pytest.mark.parametrize(
    "key", ["", "a", "ключ", "键", "🙂 emoji", "tab\tand\nnewline", "nul\x00byte", "x" * 20000]
)
def test_unicode_keys_round_trip(store_path: Path, key: str) -> None:
    """Any str key that UTF-8 can encode is stored and read back after reopen."""
    with logshelf.open(store_path) as db:
        db[key] = key[::-1]
    with logshelf.open(store_path, "r") as db:
        assert list(db) == [key]
        assert db[key] == key[::-1]


def test_unencodable_and_oversized_keys_are_rejected(db: logshelf.Shelf) -> None:
    """Lone surrogates and keys over 65535 UTF-8 bytes raise ValueError; nothing is written."""
    with pytest.raises(ValueError, match="UTF-8"):
        db["\ud800"] = 1
    with pytest.raises(ValueError, match="too long"):
        db["é" * 40000] = 1
    assert len(db) == 0


# -- values ----------------------------------------------------------------


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


VALUES: list[Any] = [
    None,
    0,
    -1,
    2**100,
    1.5,
    "text",
    b"\x00bytes",
    bytearray(b"ba"),
    [1, [2]],
    (1, 2),
    {"nested": {"a": [1, 2, {"b": None}]}},
    {1, 2},
    frozenset({3}),
    Point(1, 2),
    "x" * 100_000,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip(store_path: Path, value: Any) -> None:
    """Picklable values of every common kind are read back equal after reopen."""
    with logshelf.open(store_path) as db:
        db["v"] = value
    with logshelf.open(store_path, "r") as db:
        assert db["v"] == value


def test_unpicklable_value_writes_nothing(store_path: Path) -> None:
    """A value that cannot be pickled raises and leaves the store byte-for-byte unchanged."""
    with logshelf.open(store_path) as db:
        db["keep"] = 1
        before = _files(store_path)
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            db["bad"] = threading.Lock()
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            db.update({"good": 1, "bad": lambda: None})
        assert _files(store_path) == before
        assert dict(db) == {"keep": 1}


def test_reads_return_copies(db: logshelf.Shelf) -> None:
    """Without writeback, mutating a value read from the store changes nothing on disk."""
    db["list"] = [1]
    db["list"].append(2)
    assert db["list"] == [1]


# -- codecs ----------------------------------------------------------------


def test_every_codec_round_trips(store_path: Path, compression: str | None) -> None:
    """Each codec stores compressible, incompressible and small values and reads them back."""
    values = {
        "small": 1,
        "text": "abc" * 5000,
        "random": os.urandom(50_000),
        "mixed": ["x" * 300] * 10,
    }
    with logshelf.open(store_path, compression=compression) as db:
        db.update(values)
        db["single"] = "y" * 4000
    with logshelf.open(store_path, "r") as db:
        assert {k: db[k] for k in values} == values
        assert db["single"] == "y" * 4000


def test_compression_shrinks_and_is_recorded(store_path: Path, compression: str | None) -> None:
    """Compressible values take less space with a codec; the codec is stored per record."""
    with logshelf.open(store_path, compression=compression) as db:
        db["text"] = "abcdefgh" * 10_000
    size = sum(p.stat().st_size for p in store_path.glob("seg-*.log"))
    if compression is None:
        assert size > 80_000
    else:
        assert size < 20_000


def test_mixed_codecs_in_one_store(store_path: Path) -> None:
    """Records written under different compression settings all read back under any setting."""
    written = {}
    for codec in (None, "lz4", "zlib", "bz2"):
        with logshelf.open(store_path, compression=codec) as db:
            written[f"v-{codec}"] = f"{codec} " * 3000
            db[f"v-{codec}"] = written[f"v-{codec}"]
    for codec in (None, "lz4", "zlib", "bz2"):
        with logshelf.open(store_path, "r", compression=codec) as db:
            assert dict(db) == written


def test_bad_compression_is_named(store_path: Path) -> None:
    """An unknown codec raises ValueError naming it."""
    with pytest.raises(ValueError, match="'zstd'"):
        logshelf.open(store_path, compression="zstd")


def test_incompressible_values_stay_raw() -> None:
    """A value that does not shrink by an eighth is stored uncompressed."""
    data = os.urandom(10_000)
    assert _codecs.compress(_codecs.Codec.LZ4, data) == (_codecs.Codec.NONE, data)
    codec, packed = _codecs.compress(_codecs.Codec.ZLIB, b"a" * 10_000)
    assert codec is _codecs.Codec.ZLIB and len(packed) < 1000
    assert _codecs.decompress(codec, packed, 10_000) == b"a" * 10_000


def test_decompression_is_bounded() -> None:
    """A record cannot decompress to more than its recorded length."""
    for codec in (_codecs.Codec.LZ4, _codecs.Codec.ZLIB, _codecs.Codec.BZ2):
        _, packed = _codecs.compress(codec, b"z" * 100_000)
        with pytest.raises(logshelf.CorruptionError):
            _codecs.decompress(codec, packed, 1000)


# -- pickle protocols ------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol(store_path: Path, protocol: int) -> None:
    """Records pickled with any protocol read back, whatever protocol the reader uses."""
    with logshelf.open(store_path, protocol=protocol) as db:
        db["v"] = {"p": protocol, "data": [Point(1, 2)]}
    with logshelf.open(store_path, "r", protocol=0) as db:
        assert db["v"] == {"p": protocol, "data": [Point(1, 2)]}


def test_bad_protocol_is_named(store_path: Path) -> None:
    """An impossible protocol raises ValueError naming it."""
    with pytest.raises(ValueError, match="99"):
        logshelf.open(store_path, protocol=99)


# -- writeback -------------------------------------------------------------


def test_writeback_writes_mutations_back_on_sync_and_close(store_path: Path) -> None:
    """With writeback=True, in-place mutations of read entries are saved by sync() and close()."""
    with logshelf.open(store_path) as db:
        db["a"] = [1]
        db["b"] = {"n": 0}
    db = logshelf.open(store_path, writeback=True)
    db["a"].append(2)
    db.sync()
    with logshelf.open(store_path, "r") as other:
        assert other["a"] == [1, 2]
    db["b"]["n"] += 1
    db["c"] = []
    db["c"].append("x")
    db.close()
    with logshelf.open(store_path, "r") as other:
        assert dict(other) == {"a": [1, 2], "b": {"n": 1}, "c": ["x"]}


def test_writeback_off_loses_in_place_mutations(store_path: Path) -> None:
    """With writeback=False (the default), in-place mutations are not saved, as in shelve."""
    with logshelf.open(store_path) as db:
        db["a"] = [1]
        db["a"].append(2)
    with logshelf.open(store_path, "r") as db:
        assert db["a"] == [1]


def test_writeback_cache_returns_same_object(store_path: Path) -> None:
    """With writeback=True repeated reads return the same cached object; delete drops it."""
    with logshelf.open(store_path, writeback=True) as db:
        db["a"] = [1]
        assert db["a"] is db["a"]
        del db["a"]
        assert "a" not in db
        with pytest.raises(KeyError):
            db["a"]


# -- persistence across processes -------------------------------------------


def test_second_process_reads_what_was_written(store_path: Path) -> None:
    """A separate interpreter reads back values written here, and vice versa."""
    with logshelf.open(store_path, compression="lz4") as db:
        db.update({"int": 1, "text": "é" * 1000, "list": list(range(100))})
    script = (
        "import logshelf, sys\n"
        "with logshelf.open(sys.argv[1]) as db:\n"
        "    assert db['int'] == 1 and db['text'] == 'é' * 1000\n"
        "    assert db['list'] == list(range(100))\n"
        "    db['from_child'] = {'ok': True}\n"
    )
    subprocess.run([sys.executable, "-c", script, str(store_path)], check=True, timeout=60)
    with logshelf.open(store_path, "r") as db:
        assert db["from_child"] == {"ok": True}
        assert len(db) == 4


def test_open_handles_see_each_other_without_reopening(store_path: Path) -> None:
    """Two handles on one store see each other's writes and deletes on the next access."""
    writer = logshelf.open(store_path)
    reader = logshelf.open(store_path, "r")
    try:
        writer["a"] = 1
        assert reader["a"] == 1
        writer.update({"b": 2, "c": 3})
        del writer["a"]
        assert dict(reader) == {"b": 2, "c": 3}
        assert len(reader) == 2
    finally:
        writer.close()
        reader.close()


# -- options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("durability", "sometimes"),
        ("lock_timeout", -1),
        ("sync_interval", -0.5),
        ("lock_backend", "posix"),
        ("compress_min", -1),
        ("max_segment_size", 10),
    ],
)
def test_bad_options_are_named(store_path: Path, option: str, value: Any) -> None:
    """Each bad option raises ValueError whose message names the value."""
    with pytest.raises(ValueError, match=str(value).replace(".", r"\.")):
        logshelf.open(store_path, **{option: value})


@pytest.mark.parametrize("durability", ["none", "always", "interval"])
def test_durability_modes_work(store_path: Path, durability: str) -> None:
    """Every durability mode reads back what it wrote."""
    with logshelf.open(store_path, durability=durability, sync_interval=0.0) as db:
        for i in range(20):
            db[f"k{i}"] = i
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {f"k{i}": i for i in range(20)}


def test_sync_is_called_per_write_only_when_asked(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durability="always" fdatasyncs every write; "none" syncs only on sync() and close()."""
    calls: list[int] = []
    from logshelf import _fs

    real = _fs.FileSystem.datasync
    monkeypatch.setattr(
        _fs.FileSystem, "datasync", lambda self, fd: (calls.append(fd), real(self, fd))[1]
    )
    with logshelf.open(store_path, durability="always") as db:
        calls.clear()
        for i in range(5):
            db[f"k{i}"] = i
        assert len(calls) == 5
    with logshelf.open(store_path) as db:
        calls.clear()
        for i in range(5):
            db[f"k{i}"] = i
        assert calls == []
        db.sync()
        assert len(calls) == 1


def test_interval_durability_syncs_once_the_interval_has_passed(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durability="interval": a write fdatasyncs when ``sync_interval``
    seconds have passed since the last sync (checked at write time). With an
    interval of 0 every write syncs; with an hour none of a few quick writes
    does (no clock is read by the test: the outcome shows it)."""
    calls: list[int] = []
    from logshelf import _fs

    real = _fs.FileSystem.datasync
    monkeypatch.setattr(
        _fs.FileSystem, "datasync", lambda self, fd: (calls.append(fd), real(self, fd))[1]
    )
    with logshelf.open(store_path, durability="interval", sync_interval=0.0) as db:
        calls.clear()
        for i in range(5):
            db[f"k{i}"] = i
        db.update({"a": 1, "b": 2})
        assert len(calls) == 6
    with logshelf.open(store_path, durability="interval", sync_interval=3600.0) as db:
        calls.clear()
        for i in range(5):
            db[f"k{i}"] = i
        assert calls == []


class _Writebacks(FileSystem):
    """Records every ``start_writeback`` as (fd, offset, length); with
    ``fail``, each raises instead."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail = fail

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        self.calls.append((fd, offset, length))
        if self.fail:
            raise OSError(5, "injected EIO")
        super().start_writeback(fd, offset, length)


def test_writeback_is_started_as_each_segment_grows(store_path: Path) -> None:
    """With ``durability="none"`` the writer asks the kernel to start writing
    what it appends, every ``_WRITE_BEHIND`` bytes (so that the sync of a
    rollover or close has little left): single puts and batches alike, in
    ranges that follow each other without a gap, each segment from its start."""
    fs = _Writebacks()
    value = b"v" * (16 << 10)
    assert _writer._WRITE_BEHIND == 256 << 10  # the sizes below assume it
    with logshelf.open(store_path, durability="none", max_segment_size=1 << 20, _fs=fs) as db:
        for i in range(40):
            db[f"one{i}"] = value
        after_puts = len(fs.calls)
        for i in range(0, 40, 4):
            db.update({f"batch{i + j}": value for j in range(4)})
        assert after_puts >= 2 and len(fs.calls) >= after_puts + 2, fs.calls
        segments = [seg.fd for seg in db._engine._view.segments]
    by_fd: dict[int, list[tuple[int, int]]] = {}
    for fd, offset, length in fs.calls:
        by_fd.setdefault(fd, []).append((offset, length))
    assert len(by_fd) >= 2, fs.calls  # 1.25 MiB in segments of 1 MiB: a rollover
    for ranges in by_fd.values():
        assert ranges[0][0] == 0
        for (offset, length), (next_offset, _) in itertools.pairwise(ranges):
            assert next_offset == offset + length
        assert all(length >= _writer._WRITE_BEHIND for _, length in ranges)
    assert len(segments) >= 2


def test_a_failed_writeback_request_costs_nothing(store_path: Path) -> None:
    """``start_writeback`` is a hint: when it fails, writes still succeed,
    and the sync at close (which would meet a real I/O error) is unaffected."""
    fs = _Writebacks(fail=True)
    value = b"w" * (256 << 10)
    with logshelf.open(store_path, durability="none", _fs=fs) as db:
        for i in range(12):
            db[f"k{i}"] = value
    assert fs.calls
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {f"k{i}": value for i in range(12)}


def test_start_writeback_calls_the_kernel_on_linux(tmp_path: Path) -> None:
    """The real call: ``sync_file_range`` is found on Linux (else the method
    is a no-op) and accepts a range of a file just written."""
    from logshelf import _fs

    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * 8192)
        FileSystem().start_writeback(fd, 0, 8192)
        if sys.platform.startswith("linux"):
            call = _fs._sync_file_range()
            assert call is not None
            assert call(fd, 0, 8192, _fs._SYNC_FILE_RANGE_WRITE) == 0
    finally:
        os.close(fd)


def test_segments_roll_over(store_path: Path) -> None:
    """Past max_segment_size writing moves to a new segment, and everything reads back."""
    with logshelf.open(store_path, max_segment_size=8192) as db:
        for i in range(300):
            db[f"k{i}"] = "v" * 100
        del db["k0"]
    assert len(list(store_path.glob("seg-*.log"))) > 3
    reader = logshelf.open(store_path, "r")
    with logshelf.open(store_path, max_segment_size=8192) as db:
        assert len(db) == 299 and db["k299"] == "v" * 100
        for i in range(300, 400):
            db[f"k{i}"] = i
        assert reader["k399"] == 399
        assert len(reader) == 399
    reader.close()


class _HintReads(FileSystem):
    """Counts hint files read: a full reload of the index reads every
    segment's hint; following a plain rollover reads none."""

    def __init__(self) -> None:
        self.hints = 0

    def read_file(self, path: str) -> bytes:
        if path.endswith(".hint"):
            self.hints += 1
        return super().read_file(path)


def test_other_handles_follow_rollovers_without_reloading(store_path: Path) -> None:
    """A reader and a second writer that see a rollover adopt the successor
    segment without reloading the whole index, and their view stays exact;
    a compaction's switch (segments replaced) still reloads."""
    other_fs, reader_fs = _HintReads(), _HintReads()
    with (
        logshelf.open(store_path, max_segment_size=4096, auto_compact=None) as writer,
        logshelf.open(store_path, max_segment_size=4096, auto_compact=None, _fs=other_fs) as other,
        logshelf.open(store_path, "r", _fs=reader_fs) as reader,
    ):
        model = {f"k{i}": i for i in range(20)}
        writer.update(model)
        assert len(reader) == 20 and len(other) == 20
        other_fs.hints = reader_fs.hints = 0
        for i in range(20, 200):
            writer[f"k{i}"] = model[f"k{i}"] = "v" * (50 + i % 50)
            if i % 7 == 0:
                del writer[f"k{i - 20}"]
                del model[f"k{i - 20}"]
            if i % 10 == 0:
                other[f"o{i}"] = model[f"o{i}"] = i  # follows under the writer lock
            assert dict(reader) == model
        assert dict(other) == dict(writer) == model
        assert len(list(store_path.glob("seg-*.log"))) > 5
        assert (other_fs.hints, reader_fs.hints) == (0, 0)
        writer.compact()
        assert dict(reader) == dict(other) == dict(writer) == model
        assert other_fs.hints > 0 and reader_fs.hints > 0
    with logshelf.open(store_path, "r") as again:
        assert dict(again) == model


def test_deletes_write_only_what_they_delete(store_path: Path) -> None:
    """A delete of an absent key raises KeyError and writes nothing, outside
    and inside a transaction; a delete sees keys another handle just wrote;
    deletes roll segments over like puts and stay deleted after a reopen."""
    with logshelf.open(store_path, max_segment_size=4096) as db, logshelf.open(store_path) as other:
        db["a"] = 1
        before = _files(store_path)
        with pytest.raises(KeyError):
            del db["missing"]
        with db.transaction():
            with pytest.raises(KeyError):
                del db["missing"]
            db["b"] = 2
            del db["b"]  # deleted within the transaction it was written in
            with pytest.raises(KeyError):
                del db["b"]
        assert _files(store_path) == before
        other["c"] = 3
        del db["c"]  # written by another handle since db last looked
        assert "c" not in other
        for i in range(200):
            db[f"k{i}"] = "v" * 40
        for i in range(0, 200, 2):
            del db[f"k{i}"]
    assert len(list(store_path.glob("seg-*.log"))) > 3
    with logshelf.open(store_path, "r") as db:
        assert sorted(db) == sorted(["a"] + [f"k{i}" for i in range(1, 200, 2)])


def test_repr_names_path(db: logshelf.Shelf) -> None:
    """repr() shows the store path and state."""
    assert db.path in repr(db)
    db.close()
    assert "closed" in repr(db)


def test_close_without_writes_keeps_the_hint(store_path: Path) -> None:
    """Opening and closing a store without writing does not rewrite its hint file."""
    with logshelf.open(store_path) as db:
        db.update({f"k{i}": i for i in range(100)})
    hint = next(store_path.glob("*.hint"))
    before = (hint.stat().st_ino, hint.stat().st_mtime_ns)
    logshelf.open(store_path).close()
    assert (hint.stat().st_ino, hint.stat().st_mtime_ns) == before
    with logshelf.open(store_path) as db:
        db["new"] = 1
    assert hint.stat().st_ino != before[0]


def test_writeback_sync_empties_the_cache(store_path: Path) -> None:
    """After sync() the writeback cache starts afresh, as in shelve: later
    reads see other writers."""
    with logshelf.open(store_path) as db:
        db["a"] = 1
    db = logshelf.open(store_path, writeback=True)
    try:
        assert db["a"] == 1
        db.sync()
        with logshelf.open(store_path) as other:
            other["a"] = 2
        assert db["a"] == 2
    finally:
        db.close()
    with logshelf.open(store_path, "r") as check:
        assert check["a"] == 2  # closing wrote back only what was read after the sync


# -- documented behaviour of transactions and bulk calls ------------------------


def test_nested_transactions_join_the_outermost(store_path: Path) -> None:
    """Shelf.transaction(): "Nested transactions join the outermost one" and
    "On an exception nothing is written". Writes of an inner block become
    visible to other handles only when the outermost block ends, and an
    exception that leaves the outermost block discards the writes of every
    level."""
    with logshelf.open(store_path) as db, logshelf.open(store_path, "r") as other:
        db["base"] = 0
        with db.transaction():
            db["outer"] = 1
            with db.transaction():
                db["inner"] = 2
                assert db["outer"] == 1  # the inner block sees the outer's writes
            assert db["inner"] == 2
            assert "inner" not in other and "outer" not in other  # nothing committed yet
        assert dict(other) == {"base": 0, "outer": 1, "inner": 2}
        before = _files(store_path)
        with pytest.raises(KeyError, match="raised inside"), db.transaction():
            db["outer-2"] = 3
            with db.transaction():
                db["inner-2"] = 4
                del db["base"]
                raise KeyError("raised inside the inner block")
        assert _files(store_path) == before
        assert dict(db) == dict(other) == {"base": 0, "outer": 1, "inner": 2}


def test_set_many_with_a_repeated_key_keeps_the_later_value(store_path: Path) -> None:
    """A batch that names a key twice stores the later value (as dict.update
    would), in the handle that wrote it and after a reopen."""
    with logshelf.open(store_path) as db:
        db.set_many([("a", "first"), ("b", 1), ("a", "second"), ("b", 2), ("a", "third")])
        assert dict(db) == {"a": "third", "b": 2}
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {"a": "third", "b": 2}


def test_delete_many_returns_how_many_were_present(store_path: Path) -> None:
    """delete_many() returns the number of the given keys that were present
    (counting a transaction's own writes), and deletes exactly those."""
    with logshelf.open(store_path) as db:
        db.update({"a": 1, "b": 2, "c": 3})
        assert db.delete_many(["a", "missing", "c"]) == 2
        assert db.delete_many(["a", "missing"]) == 0
        assert db.delete_many([]) == 0
        with db.transaction():
            db["new"] = 4
            assert db.delete_many(["new", "b", "gone"]) == 2
        assert dict(db) == {}


def test_get_many_maps_absent_keys_to_default(db: logshelf.Shelf) -> None:
    """get_many(): absent keys map to ``default`` (None unless given)."""
    db.update({"a": 1, "n": None})
    assert db.get_many(["a", "x", "n"]) == {"a": 1, "x": None, "n": None}
    assert db.get_many(["a", "x", "n"], default="d") == {"a": 1, "x": "d", "n": None}
    assert db.get_many([], default="d") == {}


def _codecs_on_disk(path: Path) -> dict[str, int]:
    """Key -> codec id in the flags of its last record, parsed from the segment files."""
    found: dict[str, int] = {}
    for segment in sorted(path.glob("seg-*.log")):
        data = segment.read_bytes()
        pos = fmt.SEGMENT_HEADER.size
        while pos < len(data):
            header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
            key = data[pos + 32 : pos + 32 + header.klen].decode()
            found[key] = fmt.codec_of(header.flags)
            pos += 32 + header.klen + header.vlen
    return found


def test_values_below_compress_min_are_stored_uncompressed(store_path: Path) -> None:
    """open(compress_min=N): a value whose pickle is shorter than N bytes is
    stored raw (codec 0 in its record's flags) even though it would shrink;
    one at least N bytes long is compressed. The default N is 256."""
    small = "a" * 150  # pickles to about 160 bytes
    medium = "m" * 600  # about 610 bytes
    large = "l" * 3000
    with logshelf.open(store_path, compression="zlib", compress_min=1000) as db:
        db.update({"small": small, "medium": medium, "large": large})
    with logshelf.open(store_path, compression="zlib") as db:  # default compress_min
        db.update({"small-default": small, "medium-default": medium})
    zlib_id = int(_codecs.Codec.ZLIB)
    assert _codecs_on_disk(store_path) == {
        "small": 0,
        "medium": 0,
        "large": zlib_id,
        "small-default": 0,
        "medium-default": zlib_id,
    }
    with logshelf.open(store_path, "r") as db:
        assert db["medium"] == medium and db["large"] == large and db["small-default"] == small


def test_reading_a_record_whose_codec_is_missing_raises_codec_unavailable(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record compressed with lz4 read where the lz4 module is missing
    raises CodecUnavailableError (an ImportError that names the package), not
    CorruptionError; asking for lz4 compression there raises it too, and
    records of the other codecs still read."""
    with logshelf.open(store_path, compression="lz4") as db:
        db["lz4"] = "compressible " * 100
        db["raw"] = 1
    assert _codecs_on_disk(store_path)["lz4"] == int(_codecs.Codec.LZ4)
    # What a missing lz4 package looks like to _codecs: its module is None.
    monkeypatch.setattr(_codecs, "_lz4_block", None)
    with logshelf.open(store_path, "r") as db:
        with pytest.raises(logshelf.CodecUnavailableError, match="pip install lz4") as info:
            db["lz4"]
        assert isinstance(info.value, ImportError)
        assert db["raw"] == 1
    with pytest.raises(logshelf.CodecUnavailableError, match="lz4"):
        logshelf.open(store_path, compression="lz4")
