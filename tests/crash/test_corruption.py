"""Bit rot: single flipped bytes and bits anywhere in a store.

Whatever byte is damaged, logshelf must never return a wrong value. Opening
either raises CorruptionError or succeeds; after a successful open every key
either reads back its correct value or raises CorruptionError naming the key,
the file and the offset. Damage in the last batch of the active segment may
instead be taken for a torn tail, and then the store must show exactly the
state before that batch. Nothing may leak struct.error, UnicodeDecodeError,
MemoryError or unpickling errors.
"""

from __future__ import annotations

import collections
import mmap
import os
import pickle
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._fs import FileSystem

from ._helpers import (
    Rec,
    active_segment,
    flip,
    hint_of,
    last_batch,
    parse_records,
    quarantined,
    read_all,
    restore,
    snapshot,
    with_crc_fixed,
)

MIDDLE_KEY = "ключ-10é"  # non-ASCII on purpose: the key bytes are UTF-8


def _key(i: int) -> str:
    return MIDDLE_KEY if i == 10 else f"k{i:02d}"


def _value(i: int) -> dict[str, Any]:
    return {"n": i, "text": f"value number {i}", "pad": "x" * (i % 7)}


@dataclass
class Layout:
    """A built store: its files, and the states before and after its last batch."""

    files: dict[str, bytes]
    expected: dict[str, Any]  # the full contents
    prior: dict[str, Any]  # the contents without the last batch of the active segment
    seg_name: str


def _build(store: Path, last: str = "new", **options: Any) -> Layout:
    """20 single puts, a batch and a delete in the middle, then one last put
    (a new key, or an overwrite when ``last == "overwrite"``)."""
    expected: dict[str, Any] = {}
    with logshelf.open(store, **options) as db:
        for i in range(20):
            db[_key(i)] = _value(i)
            expected[_key(i)] = _value(i)
            if i == 5:
                batch = {"b0": [0] * 3, "b1": "bee one", "k02": "k02 rewritten"}
                db.update(batch)
                expected.update(batch)
            if i == 8:
                del db["k03"]
                del expected["k03"]
        prior = dict(expected)
        if last == "new":
            db["k20"] = _value(20)
            expected["k20"] = _value(20)
        else:
            db["k07"] = "k07 overwritten last"
            expected["k07"] = "k07 overwritten last"
    with logshelf.open(store, "r") as db:
        assert read_all(db) == expected
    return Layout(snapshot(store), expected, prior, active_segment(store).name)


def _live_put(records: list[Rec], rec: Rec) -> bool:
    """True when ``rec`` is the PUT that holds its key's current value."""
    if rec.header.kind != fmt.KIND_PUT:
        return False
    later = [r for r in records if r.key == rec.key and r.offset > rec.offset]
    return not later


class Outcome:
    OPEN_ERROR = "open-error"
    READ_ERROR = "read-error"
    CORRECT = "correct"
    PREFIX = "prefix"


def _judge(
    store: Path,
    seg_path: Path,
    records: list[Rec],
    rec: Rec,
    expected: dict[str, Any],
    prior: dict[str, Any],
    tag: str,
    last_is_torn_ok: bool = True,
    flag: str = "r",
) -> str:
    """Open the damaged store and classify what happened to ``rec``; fail on
    anything a damaged store must never do."""
    in_last = last_is_torn_ok and rec in last_batch(records)
    key = rec.key.decode("utf-8") if rec.key else None
    try:
        db = logshelf.open(store, flag)
    except logshelf.CorruptionError as exc:
        msg = str(exc)
        assert not in_last, f"{tag}: damage in the last batch must read as a torn tail: {msg}"
        assert str(seg_path) in msg and f"offset {rec.offset}" in msg, f"{tag}: {msg}"
        return Outcome.OPEN_ERROR
    with db:
        outcomes: dict[str, str] = {}
        for k in sorted(set(expected) | set(prior)):
            try:
                got = db[k]
            except logshelf.CorruptionError as exc:
                msg = str(exc)
                assert k == key, f"{tag}: undamaged key {k!r} raised {msg}"
                assert repr(k) in msg and str(seg_path) in msg, f"{tag}: {msg}"
                assert f"offset {rec.offset}" in msg, f"{tag}: {msg}"
                outcomes[k] = Outcome.READ_ERROR
                continue
            except KeyError:
                got = KeyError
            want = expected.get(k, KeyError)
            was = prior.get(k, KeyError)
            if got == want:
                outcomes[k] = Outcome.CORRECT
            elif in_last and got == was:
                outcomes[k] = Outcome.PREFIX
            else:
                raise AssertionError(f"{tag}: key {k!r} read {got!r}, expected {want!r}")
        try:
            keys = set(db.keys())
        except logshelf.CorruptionError as exc:
            # Opened from the INDEX file, the handle met the damage only when
            # it loaded the full index (which refuses it as an open would).
            msg = str(exc)
            assert not in_last, f"{tag}: damage in the last batch must read as a torn tail: {msg}"
            assert str(seg_path) in msg and f"offset {rec.offset}" in msg, f"{tag}: {msg}"
            return Outcome.OPEN_ERROR
    changed = {
        r.key_str
        for r in last_batch(records)
        if r.key and expected.get(r.key_str, KeyError) != prior.get(r.key_str, KeyError)
    }
    if any(o == Outcome.PREFIX for o in outcomes.values()):
        # Taken for a torn tail: exactly the state before the last batch.
        assert all(outcomes[k] == Outcome.PREFIX for k in changed), f"{tag}: {outcomes}"
        assert keys == set(prior), tag
        return Outcome.PREFIX
    assert keys == set(expected), f"{tag}: {sorted(keys ^ set(expected))}"
    if key is not None and outcomes.get(key) == Outcome.READ_ERROR:
        return Outcome.READ_ERROR
    if in_last and key in changed:
        raise AssertionError(f"{tag}: the damaged last batch was accepted as valid")
    return Outcome.CORRECT


def _damaged(layout: Layout, hint: bool, seg_name: str, offset: int, mask: int) -> dict[str, bytes]:
    files = dict(layout.files)
    files[seg_name] = flip(files[seg_name], offset, mask)
    if not hint:
        for name in list(files):
            if name.endswith(".hint") or name == "INDEX":  # so that opening scans
                del files[name]
    return files


# -- the middle record: every byte -------------------------------------------


@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "hint"])
def test_corrupt_middle_record_every_byte_is_detected(tmp_path: Path, hint: bool) -> None:
    """Every byte of a record in the middle of the segment, inverted, is
    reported (at open or when its key is read) and never returns a wrong
    value; every other key still reads correctly when the open succeeds."""
    store = tmp_path / "store"
    layout = _build(store)
    seg = store / layout.seg_name
    records = parse_records(layout.files[layout.seg_name])
    (rec,) = [r for r in records if r.key == MIDDLE_KEY.encode()]
    assert records.index(rec) < len(records) - 5
    assert 60 <= rec.end - rec.offset <= 160
    seen = set()
    for offset in range(rec.offset, rec.end):
        restore(store, _damaged(layout, hint, layout.seg_name, offset, 0xFF))
        tag = f"byte {offset - rec.offset} of the middle record"
        outcome = _judge(store, seg, records, rec, layout.expected, layout.prior, tag)
        # Every byte of a record is under a checksum: the damage cannot go unseen.
        assert outcome in (Outcome.OPEN_ERROR, Outcome.READ_ERROR), tag
        seen.add(outcome)
    if hint:
        assert seen == {Outcome.READ_ERROR}  # the hint spares the scan: reads catch it
    else:
        assert seen == {Outcome.OPEN_ERROR, Outcome.READ_ERROR}


def test_corrupt_middle_record_header_and_key_every_bit_is_detected(tmp_path: Path) -> None:
    """Every single-bit flip in the header and key of a middle record is
    caught at open (the scan stops there while valid records follow)."""
    store = tmp_path / "store"
    layout = _build(store)
    seg = store / layout.seg_name
    records = parse_records(layout.files[layout.seg_name])
    (rec,) = [r for r in records if r.key == MIDDLE_KEY.encode()]
    key_end = rec.offset + fmt.RECORD_HEADER.size + rec.header.klen
    for offset in range(rec.offset, key_end):
        for bit in range(8):
            restore(store, _damaged(layout, False, layout.seg_name, offset, 1 << bit))
            tag = f"bit {bit} of byte {offset - rec.offset} of the middle record"
            outcome = _judge(store, seg, records, rec, layout.expected, layout.prior, tag)
            assert outcome == Outcome.OPEN_ERROR, tag


def test_corrupt_middle_value_bit_flip_raises_on_read_naming_key_file_offset(
    tmp_path: Path,
) -> None:
    """A flipped bit in a middle record's value keeps the store openable (for
    readers and writers); reading that key raises CorruptionError naming key,
    file and offset, and the other keys and new writes work."""
    store = tmp_path / "store"
    layout = _build(store)
    seg = store / layout.seg_name
    records = parse_records(layout.files[layout.seg_name])
    (rec,) = [r for r in records if r.key == MIDDLE_KEY.encode()]
    value_at = rec.offset + fmt.RECORD_HEADER.size + rec.header.klen
    restore(store, _damaged(layout, False, layout.seg_name, value_at + 3, 0x10))
    with logshelf.open(store, "w") as db:
        with pytest.raises(logshelf.CorruptionError) as info:
            db[MIDDLE_KEY]
        msg = str(info.value)
        assert repr(MIDDLE_KEY) in msg and str(seg) in msg and f"offset {rec.offset}" in msg
        db["after"] = 1
        assert MIDDLE_KEY in db
    with logshelf.open(store, "r") as db:
        with pytest.raises(logshelf.CorruptionError):
            db[MIDDLE_KEY]
        others = {k: v for k, v in layout.expected.items() if k != MIDDLE_KEY}
        assert {k: db[k] for k in others} == others
        assert db["after"] == 1


# -- the last record: torn-tail semantics ----------------------------------


@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "hint"])
@pytest.mark.parametrize("last", ["new", "overwrite"])
def test_corrupt_last_record_every_byte_is_prefix_or_error(
    tmp_path: Path, last: str, hint: bool
) -> None:
    """Every byte of the last record, inverted, either makes the store show
    exactly its state before that record (torn tail: the key absent or at its
    previous value) or makes reading the key raise; writing then continues
    and keeps the same answers for the old keys."""
    store = tmp_path / "store"
    layout = _build(store, last)
    seg = store / layout.seg_name
    records = parse_records(layout.files[layout.seg_name])
    rec = records[-1]
    seen = set()
    for offset in range(rec.offset, rec.end):
        files = _damaged(layout, hint, layout.seg_name, offset, 0xFF)
        restore(store, files)
        tag = f"{last}: byte {offset - rec.offset} of the last record"
        outcome = _judge(store, seg, records, rec, layout.expected, layout.prior, tag)
        assert outcome in (Outcome.PREFIX, Outcome.READ_ERROR), tag
        seen.add(outcome)
        if (offset - rec.offset) % 5:
            continue
        # A writer continues after it (cutting the tail when it is torn).
        with logshelf.open(store, "w") as db:
            db["after"] = offset
        with logshelf.open(store, "r") as db:
            base = layout.prior if outcome == Outcome.PREFIX else layout.expected
            for k, v in base.items():
                if k == rec.key_str and outcome == Outcome.READ_ERROR:
                    with pytest.raises(logshelf.CorruptionError):
                        db[k]
                else:
                    assert db[k] == v, tag
            assert set(db.keys()) == set(base) | {"after"}
            assert db["after"] == offset
        if outcome == Outcome.PREFIX:
            assert quarantined(store) == [files[layout.seg_name][rec.offset :]], tag
    # Without a hint a damaged last record is a torn tail. With one, damage
    # to its value is a read error (the hint vouches for the record); damage
    # to its header or key also fails the hint's check record (the last put
    # it lists), so the hint is ignored and the record is a torn tail again.
    assert seen == ({Outcome.READ_ERROR, Outcome.PREFIX} if hint else {Outcome.PREFIX})


# -- a sample of bytes and bits everywhere --------------------------------


@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "hint"])
def test_corrupt_sampled_bytes_anywhere_never_return_wrong_values(
    tmp_path: Path, hint: bool
) -> None:
    """Single bytes and bits flipped at random places in the records (puts,
    batch members, tombstones) never yield a wrong value or a stray exception."""
    store = tmp_path / "store"
    layout = _build(store, "overwrite")
    seg = store / layout.seg_name
    data = layout.files[layout.seg_name]
    records = parse_records(data)
    assert records[-1].end == len(data)
    rng = random.Random(1234 + hint)
    for _ in range(150):
        offset = rng.randrange(fmt.SEGMENT_HEADER.size, len(data))
        mask = rng.choice([0xFF, 1 << rng.randrange(8), rng.randrange(1, 256)])
        rec = next(r for r in records if r.offset <= offset < r.end)
        restore(store, _damaged(layout, hint, layout.seg_name, offset, mask))
        tag = f"offset {offset} ^ {mask:#04x} (record at {rec.offset})"
        outcome = _judge(store, seg, records, rec, layout.expected, layout.prior, tag)
        if _live_put(records, rec) and rec not in last_batch(records):
            assert outcome in (Outcome.OPEN_ERROR, Outcome.READ_ERROR), tag


@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "hint"])
def test_corrupt_sealed_segments_never_return_wrong_values(tmp_path: Path, hint: bool) -> None:
    """In a store of several segments, a flipped byte in a sealed segment is
    reported at open or on reading its key; never a wrong value."""
    store = tmp_path / "store"
    expected: dict[str, Any] = {}
    with logshelf.open(store, max_segment_size=4096) as db:
        for i in range(60):
            expected[f"key-{i}"] = ("v", i, "y" * 80)
            db[f"key-{i}"] = expected[f"key-{i}"]
    files = snapshot(store)
    segments = sorted(n for n in files if n.endswith(".log"))
    assert len(segments) >= 3
    active = active_segment(store).name
    rng = random.Random(99 + hint)
    checked = 0
    for name in segments:
        if name == active:
            continue
        data = files[name]
        records = parse_records(data)
        assert records[-1].header.kind == fmt.KIND_SEAL
        for offset in rng.sample(range(fmt.SEGMENT_HEADER.size, len(data)), 25):
            rec = next(r for r in records if r.offset <= offset < r.end)
            damaged = dict(files)
            damaged[name] = flip(data, offset, 0xFF)
            if not hint:
                damaged = {
                    n: b for n, b in damaged.items() if not n.endswith(".hint") and n != "INDEX"
                }
            restore(store, damaged)
            tag = f"{name} offset {offset} (record at {rec.offset})"
            outcome = _judge(
                store, store / name, records, rec, expected, expected, tag, last_is_torn_ok=False
            )
            if rec.header.kind == fmt.KIND_PUT:
                assert outcome in (Outcome.OPEN_ERROR, Outcome.READ_ERROR), tag
            checked += 1
    assert checked >= 50


def _compressed_store(store: Path, codec: str) -> tuple[dict[str, bytes], Path, Rec]:
    big = {"text": "compressible " * 200, "n": 1}
    with logshelf.open(store, compression=codec) as db:
        db["first"] = 1
        db["big"] = big
        db["last"] = 2
    seg = active_segment(store)
    files = snapshot(store)
    del files[hint_of(seg).name]
    records = parse_records(files[seg.name])
    rec = records[1]
    assert rec.key == b"big" and rec.header.rawlen > rec.header.vlen  # really compressed
    return files, seg, rec


@pytest.mark.parametrize("codec", ["lz4", "zlib", "bz2"])
def test_corrupt_compressed_value_flip_raises_corruption_error(tmp_path: Path, codec: str) -> None:
    """A flipped byte in a compressed value raises CorruptionError naming key,
    file and offset (the checksum catches it before any decompressor runs)."""
    store = tmp_path / "store"
    files, seg, rec = _compressed_store(store, codec)
    data = files[seg.name]
    value_at = rec.offset + fmt.RECORD_HEADER.size + rec.header.klen
    for offset in range(value_at, rec.end, max(1, rec.header.vlen // 40)):
        restore(store, {**files, seg.name: flip(data, offset, 0x5A)})
        with logshelf.open(store, "r") as db:
            with pytest.raises(logshelf.CorruptionError) as info:
                db["big"]
            msg = str(info.value)
            assert "'big'" in msg and str(seg) in msg and f"offset {rec.offset}" in msg
            assert db["first"] == 1 and db["last"] == 2


class _CountingMaps(FileSystem):
    """Counts the memory maps the store makes (the seam every file operation
    goes through), to show that a read was served from a map."""

    def __init__(self) -> None:
        self.maps = 0

    def map(self, fd: int, length: int) -> mmap.mmap:
        self.maps += 1
        return super().map(fd, length)


@pytest.mark.parametrize("codec", [None, "lz4"])
def test_corrupt_value_in_a_mapped_segment_raises_on_every_read(
    tmp_path: Path, codec: str | None
) -> None:
    """Reads of a segment with 256 KiB or more of committed bytes are served
    from a memory map, with checksums of their own: a flipped value bit
    there raises CorruptionError on the first read (which maps the segment)
    and again on the second (the map's fast path), for an uncompressed and
    an lz4-compressed record."""
    store = tmp_path / "store"
    victim = {"blob": b"victim bytes " * 100}  # about 1.3 KB: lz4 shrinks it well
    with logshelf.open(store, compression=codec) as db:
        db["victim"] = victim
        for i in range(40):  # 320 KiB that no codec shrinks, after the victim
            db[f"filler{i}"] = os.urandom(8 << 10)
        db["last"] = "last"
    seg = active_segment(store)
    files = snapshot(store)
    assert len(files[seg.name]) > 300 << 10
    (rec,) = [r for r in parse_records(files[seg.name]) if r.key == b"victim"]
    assert fmt.codec_of(rec.header.flags) == (1 if codec else 0)
    # The last byte of the stored value: the pickle's STOP opcode when
    # uncompressed, a literal of the last lz4 sequence when compressed, so a
    # read that skipped the checksum would return or decode wrong bytes.
    restore(store, {**files, seg.name: flip(files[seg.name], rec.end - 1, 0x01)})
    fs = _CountingMaps()
    with logshelf.open(store, "r", _fs=fs) as db:
        for attempt in ("first", "second"):
            with pytest.raises(logshelf.CorruptionError) as info:
                db["victim"]
            assert "'victim'" in str(info.value) and f"offset {rec.offset}" in str(info.value), (
                attempt
            )
        assert fs.maps >= 1, "the segment was never mapped: the test misses the fast path"
        assert db["last"] == "last"


def _forged_compressed(tmp_path: Path, codec: str) -> dict[str, tuple[str, str]]:
    """Read a checksum-valid record whose stored bytes do not decompress to
    its recorded length, in several ways; return case -> (error type, message)."""
    store = tmp_path / "store"
    files, seg, rec = _compressed_store(store, codec)
    data = files[seg.name]
    salt = fmt.decode_segment_header(data[:64], str(seg)).salt
    value_at = rec.offset + fmt.RECORD_HEADER.size + rec.header.klen
    stored = data[value_at : rec.end]
    cases = {
        "rawlen-short": (stored, rec.header.rawlen - 1),
        "rawlen-long": (stored, rec.header.rawlen + 1),
        "truncated": (stored[: len(stored) // 2], rec.header.rawlen),
        "garbage": (bytes(range(256)) * 2, rec.header.rawlen),
    }
    results = {}
    for name, (value, rawlen) in cases.items():
        forged = fmt.pack_record(
            salt,
            rec.header.txid,
            fmt.KIND_PUT,
            True,
            fmt.codec_of(rec.header.flags),
            b"big",
            value,
            zlib.crc32(value),
            rawlen,
        )
        restore(store, {**files, seg.name: data[: rec.offset] + forged + data[rec.end :]})
        with logshelf.open(store, "r") as db:
            try:
                db["big"]
            except logshelf.CorruptionError as exc:
                results[name] = ("CorruptionError", str(exc))
            else:
                results[name] = ("no error", "")
            assert db["first"] == 1 and db["last"] == 2, name
    return results


@pytest.mark.parametrize("codec", ["lz4", "zlib", "bz2"])
def test_corrupt_undecompressable_value_raises_corruption_error(tmp_path: Path, codec: str) -> None:
    """A checksum-valid value that does not decompress to its recorded length
    (a writer bug, or damage before the checksum was taken) raises
    CorruptionError, never a zlib, bz2 or lz4 exception."""
    results = _forged_compressed(tmp_path, codec)
    assert {name: kind for name, (kind, _) in results.items()} == dict.fromkeys(
        results, "CorruptionError"
    )


@pytest.mark.parametrize("codec", ["lz4", "zlib", "bz2"])
def test_corrupt_undecompressable_value_error_names_key_file_and_offset(
    tmp_path: Path, codec: str
) -> None:
    """The CorruptionError for a value that does not decompress names the key,
    the segment file and the record offset, like every other read error."""
    results = _forged_compressed(tmp_path, codec)
    seg = active_segment(tmp_path / "store")
    offset = parse_records(seg.read_bytes())[1].offset
    bad = {
        name: msg
        for name, (_, msg) in results.items()
        if not ("'big'" in msg and str(seg) in msg and f"offset {offset}" in msg)
    }
    assert not bad, bad


# -- MANIFEST ---------------------------------------------------------------


def _small_store(store: Path) -> dict[str, Any]:
    expected = {f"k{i}": i for i in range(5)}
    with logshelf.open(store) as db:
        db.update(expected)
    return expected


@pytest.mark.parametrize("flag", ["r", "w", "c"])
def test_corrupt_manifest_every_byte_raises_and_touches_nothing(tmp_path: Path, flag: str) -> None:
    """Each byte of the MANIFEST flipped (whole byte and single bits) makes
    open raise FormatError for the magic and CorruptionError anywhere else
    (the checksum is checked before the version, so a flipped version bit is
    damage, not a newer format); no file is changed."""
    store = tmp_path / "store"
    _small_store(store)
    files = snapshot(store)
    manifest = files[fmt.MANIFEST_NAME]
    for offset in range(len(manifest)):
        for mask in (0xFF, 0x01, 0x80):
            damaged = {**files, fmt.MANIFEST_NAME: flip(manifest, offset, mask)}
            restore(store, damaged)
            if offset < 8:
                expected_error: type[Exception] = logshelf.FormatError
            else:
                expected_error = logshelf.CorruptionError
            with pytest.raises(logshelf.StoreError) as info:
                logshelf.open(store, flag)
            assert type(info.value) is expected_error, (offset, mask, info.value)
            assert str(store / fmt.MANIFEST_NAME) in str(info.value)
            assert snapshot(store) == damaged, (offset, mask)


def test_corrupt_manifest_truncated_or_garbage(tmp_path: Path) -> None:
    """A MANIFEST cut short raises CorruptionError (FormatError when not even
    the magic is left); garbage or another file's magic raises FormatError
    saying what was found."""
    store = tmp_path / "store"
    _small_store(store)
    files = snapshot(store)
    manifest = files[fmt.MANIFEST_NAME]
    for length in range(len(manifest)):
        restore(store, {**files, fmt.MANIFEST_NAME: manifest[:length]})
        error = logshelf.FormatError if length < 8 else logshelf.CorruptionError
        with pytest.raises(error):
            logshelf.open(store, "r")
    rng = random.Random(5)
    for junk in (
        b"hello, world\n" * 4,
        rng.randbytes(64),
        b"LSHFSEG\x00" + manifest[8:],
        b"\x00" * 52,
    ):
        restore(store, {**files, fmt.MANIFEST_NAME: junk})
        for flag in ("r", "w", "c"):
            with pytest.raises(logshelf.FormatError) as info:
                logshelf.open(store, flag)
            assert repr(junk[:8]) in str(info.value), str(info.value)
        assert snapshot(store) == {**files, fmt.MANIFEST_NAME: junk}


def _multi_segment_store(store: Path) -> tuple[dict[str, bytes], list[str]]:
    with logshelf.open(store, max_segment_size=4096) as db:
        for i in range(40):
            db[f"k{i}"] = "z" * 100
    files = snapshot(store)
    sealed = [n for n in sorted(files) if n.endswith(".log") and n != active_segment(store).name]
    assert sealed
    return files, sealed


def test_corrupt_manifest_naming_short_segment_raises(tmp_path: Path) -> None:
    """A MANIFEST whose sealed segment is shorter than recorded raises
    CorruptionError naming the file."""
    store = tmp_path / "store"
    files, sealed = _multi_segment_store(store)
    name = sealed[0]
    restore(store, {**files, name: files[name][:-10]})
    for flag in ("r", "w"):
        with pytest.raises(logshelf.CorruptionError) as info:
            logshelf.open(store, flag)
        assert str(store / name) in str(info.value)


@pytest.mark.parametrize("which", ["sealed", "active"])
def test_corrupt_manifest_naming_missing_segment_raises_corruption_error(
    tmp_path: Path, which: str
) -> None:
    """A MANIFEST naming a segment file that is gone is a damaged store:
    CorruptionError naming the file, not a bare FileNotFoundError that reads
    like "no store here" (StoreNotFoundError is a FileNotFoundError too)."""
    store = tmp_path / "store"
    files, sealed = _multi_segment_store(store)
    name = sealed[0] if which == "sealed" else active_segment(store).name
    restore(store, {n: b for n, b in files.items() if n != name})
    for flag in ("r", "w", "c"):
        with pytest.raises(logshelf.StoreError) as info:
            logshelf.open(store, flag)
        assert type(info.value) is logshelf.CorruptionError, type(info.value)  # no private type
        assert str(store / name) in str(info.value)
    assert not (store / name).exists()


# -- segment header ---------------------------------------------------------


@pytest.mark.parametrize("flag", ["r", "w", "c"])
def test_corrupt_segment_header_every_byte_raises_and_touches_nothing(
    tmp_path: Path, flag: str
) -> None:
    """Each byte of the active segment's 64-byte header flipped makes open
    raise (FormatError for the magic, CorruptionError otherwise), naming the
    segment file, and changes no file."""
    store = tmp_path / "store"
    _small_store(store)
    seg_name = active_segment(store).name
    files = snapshot(store)
    for offset in range(fmt.SEGMENT_HEADER.size):
        for mask in (0xFF, 0x04):
            damaged = {**files, seg_name: flip(files[seg_name], offset, mask)}
            restore(store, damaged)
            error = logshelf.FormatError if offset < 8 else logshelf.CorruptionError
            with pytest.raises(logshelf.StoreError) as info:
                logshelf.open(store, flag)
            assert type(info.value) is error, (offset, mask, info.value)
            assert str(store / seg_name) in str(info.value)
            assert snapshot(store) == damaged


def test_corrupt_segment_header_with_wrong_id_raises(tmp_path: Path) -> None:
    """A checksum-valid segment header naming another segment id (a file
    swapped in from elsewhere) raises CorruptionError."""
    store = tmp_path / "store"
    _small_store(store)
    seg_name = active_segment(store).name
    files = snapshot(store)
    data = bytearray(files[seg_name])
    data[16:24] = (77).to_bytes(8, "little")
    data = bytearray(with_crc_fixed(bytes(data[:64]), 60) + bytes(data[64:]))
    restore(store, {**files, seg_name: bytes(data)})
    with pytest.raises(logshelf.CorruptionError) as info:
        logshelf.open(store, "r")
    assert str(store / seg_name) in str(info.value)


# -- hint files -------------------------------------------------------------


def _hinted_store(store: Path) -> tuple[dict[str, bytes], dict[str, Any], str]:
    expected: dict[str, Any] = {}
    with logshelf.open(store) as db:
        for i in range(12):
            expected[f"h{i}"] = [i] * i
            db[f"h{i}"] = expected[f"h{i}"]
        del db["h4"]
        del expected["h4"]
        db["h5"] = "h5 again"
        expected["h5"] = "h5 again"
    files = snapshot(store)
    files.pop("INDEX", None)  # these tests are of hints: opening must use the hint
    hint_name = hint_of(active_segment(store)).name
    assert hint_name in files
    return files, expected, hint_name


def _reads_correctly(store: Path, expected: dict[str, Any], tag: str) -> None:
    with logshelf.open(store, "r") as db:
        assert read_all(db) == expected, tag
        assert "h4" not in db
    with logshelf.open(store, "w") as db:
        assert read_all(db) == expected, tag
        db["w"] = tag
    with logshelf.open(store, "r") as db:
        assert read_all(db) == {**expected, "w": tag}, tag


def test_corrupt_hint_every_byte_is_ignored(tmp_path: Path) -> None:
    """A hint file with any byte inverted is ignored silently: the store opens
    and reads exactly its contents by scanning the segment."""
    store = tmp_path / "store"
    files, expected, hint_name = _hinted_store(store)
    hint = files[hint_name]
    for offset in range(len(hint)):
        restore(store, {**files, hint_name: flip(hint, offset, 0xFF)})
        _reads_correctly(store, expected, f"hint byte {offset}")


def test_corrupt_hint_truncated_or_junk_is_ignored(tmp_path: Path) -> None:
    """A hint cut short, empty, or replaced by junk is ignored silently."""
    store = tmp_path / "store"
    files, expected, hint_name = _hinted_store(store)
    hint = files[hint_name]
    rng = random.Random(7)
    for junk in [hint[:n] for n in range(0, len(hint), 5)] + [
        rng.randbytes(300),
        b"\x00" * 80,
        hint + b"extra",
    ]:
        restore(store, {**files, hint_name: junk})
        _reads_correctly(store, expected, f"hint {junk[:12]!r}... ({len(junk)} bytes)")


def test_corrupt_hint_of_another_segment_is_ignored(tmp_path: Path) -> None:
    """A checksum-valid hint whose salt or segment id does not match its
    segment (copied from another store or another segment), or whose covered
    range is impossible, is ignored."""
    store = tmp_path / "store"
    files, expected, hint_name = _hinted_store(store)
    decoded = fmt.decode_hint(files[hint_name])
    assert decoded is not None

    other = tmp_path / "other"
    with logshelf.open(other) as db:  # same segment id 1, another salt
        for i in range(12):
            db[f"h{i}"] = "wrong store"
        db["intruder"] = 1
    foreign = hint_of(active_segment(other)).read_bytes()
    assert fmt.decode_hint(foreign) is not None

    seg_len = len(files[active_segment(store).name])
    variants = {
        "foreign": foreign,
        "wrong-id": fmt.encode_hint(decoded._replace(segment_id=decoded.segment_id + 1)),
        "wrong-salt": fmt.encode_hint(decoded._replace(salt=decoded.salt ^ 1)),
        "covered-past-end": fmt.encode_hint(decoded._replace(covered=seg_len + 1)),
        "covered-in-header": fmt.encode_hint(decoded._replace(covered=10)),
    }
    for name, hint in variants.items():
        restore(store, {**files, hint_name: hint})
        _reads_correctly(store, expected, name)


def _forged_hint(head: fmt.Hint, payload: bytes) -> bytes:
    """A hint of the current version (2) whose header matches its segment and
    whose two checksums are valid, carrying ``payload`` as it is: only the
    payload checks of ``decode_hint`` stand between it and the index."""
    body = fmt.HINT_HEADER.pack(
        b"LSHFHNT\x00",
        fmt.HINT_VERSION,
        0,
        head.salt,
        head.segment_id,
        head.covered,
        head.max_txid,
        len(payload),
        zlib.crc32(payload),
    )
    return body + zlib.crc32(body).to_bytes(4, "little") + payload


def _hint_payload(head: fmt.Hint, nputs: int, ndels: int, offsets: bytes, keys: bytes) -> bytes:
    """A payload laid out as docs/format.md section 5 says, with any counts.
    It names ``head``'s check record, so that a payload that got past the
    decoder would also pass the engine's check and be used."""
    counts = struct.pack("<QQQQII", nputs, ndels, 0, head.check_offset, head.check_hcrc, 0)
    return counts + offsets + keys


def test_corrupt_hint_payload_failing_its_checks_is_ignored(tmp_path: Path) -> None:
    """A version-2 hint with valid checksums whose payload breaks the layout
    (counts the bytes cannot hold, a key list that does not match the counts,
    a missing terminator, a pickle where the layout belongs) is ignored: the
    segment is scanned and every key reads its own value.

    The header and checksums are forged correctly (a control payload built
    the same way decodes), so each case reaches the payload checks."""
    store = tmp_path / "store"
    files, expected, hint_name = _hinted_store(store)
    head = fmt.decode_hint(files[hint_name])
    assert head is not None and len(head.put_keys) >= 2
    first, second = (key.encode() + b"\xff" for key in head.put_keys[:2])
    offset = struct.pack("<Q", head.put_offsets[0])
    control = _hint_payload(head, 1, 0, offset, first)
    decoded = fmt.decode_hint(_forged_hint(head, control))
    assert decoded is not None and decoded.put_keys == head.put_keys[:1]

    payloads = {
        "shorter than its fixed head": b"\x00" * 39,
        "put count beyond the payload": _hint_payload(head, 2**60, 0, b"", first),
        "offsets cut short": _hint_payload(head, 2, 0, offset, b""),
        "more keys counted than present": _hint_payload(head, 1, 5, offset, first),
        "fewer keys counted than present": _hint_payload(head, 1, 0, offset, first + second),
        "last key without its terminator": _hint_payload(head, 1, 1, offset, first + second[:-1]),
        "a pickle naming a class": pickle.dumps((collections.OrderedDict(), b"", []), protocol=4),
        "a pickle of the version-1 layout": pickle.dumps(([first], offset, []), protocol=4),
    }
    for name, payload in payloads.items():
        forged = _forged_hint(head, payload)
        assert fmt.decode_hint(forged) is None, name
        restore(store, {**files, hint_name: forged})
        _reads_correctly(store, expected, name)


# -- damage followed by more writes --------------------------------------------


def test_corrupt_middle_header_refuses_writer_and_cuts_nothing(tmp_path: Path) -> None:
    """Header damage in the middle of the active segment makes writers and
    readers refuse to open, and no byte is cut or quarantined."""
    store = tmp_path / "store"
    layout = _build(store)
    records = parse_records(layout.files[layout.seg_name])
    (rec,) = [r for r in records if r.key == MIDDLE_KEY.encode()]
    files = _damaged(layout, False, layout.seg_name, rec.offset + 20, 0x01)
    restore(store, files)
    for flag in ("c", "w", "r"):
        with pytest.raises(logshelf.CorruptionError) as info:
            logshelf.open(store, flag)
        assert f"offset {rec.offset}" in str(info.value)
    assert snapshot(store) == files
