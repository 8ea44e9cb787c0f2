"""Torn tails: a write cut short at every possible byte, and junk after the log.

A crash can leave any prefix of the last write in the active segment. The
format promises prefix semantics: everything committed before it is intact,
the torn batch is invisible as a whole, readers never touch the file, and the
next writer moves the torn bytes to quarantine/ and cuts them before it
appends anything.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt

from ._helpers import (
    Rec,
    active_segment,
    hint_of,
    last_batch,
    manifest,
    parse_records,
    quarantined,
    read_all,
    restore,
    snapshot,
)

BASE: dict[str, Any] = {f"key{i:02d}": {"i": i, "blob": bytes([i]) * (i * 3)} for i in range(8)}


def _op_put_new(db: logshelf.Shelf) -> None:
    db["last"] = {"fresh": True, "data": list(range(10))}


def _op_put_overwrite(db: logshelf.Shelf) -> None:
    db["key03"] = "a new value for key03"


def _op_update(db: logshelf.Shelf) -> None:
    db.update({"b0": "batch zero", "key02": ("changed", 2), "b1": b"\x00" * 40})


def _op_transaction(db: logshelf.Shelf) -> None:
    with db.transaction():
        db["t0"] = "inside a transaction"
        db["key05"] = 5.5
        del db["key01"]


LAST_OPS: dict[str, tuple[Callable[[logshelf.Shelf], None], Callable[[dict[str, Any]], None]]] = {
    "put-new": (_op_put_new, lambda d: d.update(last={"fresh": True, "data": list(range(10))})),
    "put-overwrite": (_op_put_overwrite, lambda d: d.update(key03="a new value for key03")),
    "update": (
        _op_update,
        lambda d: d.update({"b0": "batch zero", "key02": ("changed", 2), "b1": b"\x00" * 40}),
    ),
    "transaction": (
        _op_transaction,
        lambda d: (d.update(t0="inside a transaction", key05=5.5), d.pop("key01")),
    ),
}


def _build(store: Path, op: str) -> tuple[dict[str, bytes], bytes, dict[str, Any]]:
    """Write BASE (one put each), close, then the last operation, close.

    Returns the final files, the hint as it was after the first close, and the
    full expected contents after the last operation.
    """
    with logshelf.open(store) as db:
        for key, value in BASE.items():
            db[key] = value
    early_hint = hint_of(active_segment(store)).read_bytes()
    do, model = LAST_OPS[op]
    with logshelf.open(store) as db:
        do(db)
    expected_after = dict(BASE)
    model(expected_after)
    with logshelf.open(store, "r") as db:
        assert read_all(db) == expected_after  # the setup itself is sound
    return snapshot(store), early_hint, expected_after


def _torn_files(
    files: dict[str, bytes], seg_name: str, length: int, hint: str, early_hint: bytes
) -> dict[str, bytes]:
    out = dict(files)
    out[seg_name] = files[seg_name][:length]
    hint_name = seg_name[: -len(".log")] + ".hint"
    if hint == "none":
        out.pop(hint_name)
    elif hint == "stale":
        out[hint_name] = early_hint  # covers exactly what the first close committed
    else:
        assert hint == "full"  # covers the whole last batch: longer than the file now
    return out


def _check_torn(
    store: Path, files: dict[str, bytes], seg_name: str, start: int, length: int, tag: str
) -> None:
    """The store in ``files`` holds BASE plus a last batch cut at ``length``."""
    seg = store / seg_name
    original = files[seg_name]
    restore(store, files)

    # A reader sees exactly the committed prefix and changes nothing on disk.
    with logshelf.open(store, "r") as db:
        assert read_all(db) == BASE, tag
        assert len(db) == len(BASE), tag
    assert snapshot(store) == files, f"{tag}: a reader modified the store"

    # A writer opening the store does not resurrect any part of the torn batch.
    with logshelf.open(store, "w") as db:
        assert read_all(db) == BASE, tag
        db["after"] = ("written after the crash", length)
    with logshelf.open(store, "r") as db:
        assert read_all(db) == {**BASE, "after": ("written after the crash", length)}, tag

    # The torn bytes were cut (quarantined), not appended after.
    data = seg.read_bytes()
    assert data[:start] == original[:start], tag
    records = parse_records(data)
    assert records[-1].key == b"after" and records[-1].offset == start, tag
    assert records[-1].end == len(data), tag
    assert quarantined(store) == ([original[start:length]] if length > start else []), tag


def _interesting_lengths(batch: list[Rec], step: int) -> list[int]:
    """Every ``step``-th cut inside the batch plus each record's edges."""
    start, end = batch[0].offset, batch[-1].end
    picks = set(range(start, end, step))
    for rec in batch:
        for edge in (
            rec.offset,
            rec.offset + fmt.RECORD_HEADER.size,
            rec.offset + fmt.RECORD_HEADER.size + rec.header.klen,
        ):
            picks.update((edge - 1, edge, edge + 1))
    picks.add(end - 1)
    return sorted(x for x in picks if start <= x < end)


def _run_every_offset(tmp_path: Path, op: str, hint: str, step: int) -> None:
    store = tmp_path / "store"
    files, early_hint, _ = _build(store, op)
    seg_name = active_segment(store).name
    batch = last_batch(parse_records(files[seg_name]))
    start, end = batch[0].offset, batch[-1].end
    assert end == len(files[seg_name])
    if op in ("update", "transaction"):
        assert len(batch) == 3
    for length in _interesting_lengths(batch, step):
        torn = _torn_files(files, seg_name, length, hint, early_hint)
        _check_torn(store, torn, seg_name, start, length, f"{op}/{hint} cut at {length}")


@pytest.mark.parametrize("op", list(LAST_OPS))
def test_torn_last_batch_every_offset_is_invisible_and_cut(tmp_path: Path, op: str) -> None:
    """Cut at every byte of the last batch (no hint file), the store shows
    exactly the earlier keys (overwritten and deleted keys keep their old
    state), a reader leaves the file alone, and the next write replaces the
    torn bytes."""
    _run_every_offset(tmp_path, op, "none", 1)


@pytest.mark.parametrize("hint", ["stale", "full"])
@pytest.mark.parametrize("op", list(LAST_OPS))
def test_torn_last_batch_with_hint_present_is_invisible_and_cut(
    tmp_path: Path, op: str, hint: str
) -> None:
    """With a hint covering only the earlier session, or one covering the lost
    batch (so longer than the file now), a batch cut at a sample of offsets
    (every record edge) is invisible as a whole and cut by the next writer."""
    _run_every_offset(tmp_path, op, hint, 9)


@pytest.mark.slow
@pytest.mark.parametrize("hint", ["stale", "full"])
@pytest.mark.parametrize("op", list(LAST_OPS))
def test_torn_last_batch_with_hint_every_offset_is_invisible_and_cut(
    tmp_path: Path, op: str, hint: str
) -> None:
    """Same as the sampled hint test, at every byte offset of the last batch."""
    _run_every_offset(tmp_path, op, hint, 1)


@pytest.mark.parametrize("hint", ["none", "stale", "full"])
def test_torn_tail_reader_leaves_file_unchanged(tmp_path: Path, hint: str) -> None:
    """A read-only handle on a store with a torn tail reads the committed
    prefix again and again without changing a byte or creating quarantine/."""
    store = tmp_path / "store"
    files, early_hint, _ = _build(store, "update")
    seg_name = active_segment(store).name
    start = last_batch(parse_records(files[seg_name]))[0].offset
    torn = _torn_files(files, seg_name, start + 50, hint, early_hint)
    restore(store, torn)
    size = (store / seg_name).stat().st_size
    with logshelf.open(store, "r") as db:
        for _ in range(3):
            assert read_all(db) == BASE
            assert "b0" not in db and db.get("key02") == BASE["key02"]
    assert (store / seg_name).stat().st_size == size
    assert snapshot(store) == torn
    assert not (store / fmt.QUARANTINE_DIR).exists()


def _foreign_record(tmp_path: Path) -> bytes:
    """A complete, valid record of another store (another segment salt)."""
    other = tmp_path / "other"
    with logshelf.open(other) as db:
        db["foreign"] = "from another store"
    data = active_segment(other).read_bytes()
    rec = parse_records(data)[-1]
    return data[rec.offset : rec.end]


def _garbage(kind: str, size: int, files: dict[str, bytes], seg_name: str, tmp_path: Path) -> bytes:
    rng = random.Random(f"{kind}-{size}")
    data = files[seg_name]
    records = parse_records(data)
    if kind == "zeros":
        return bytes(size)
    if kind == "ones":
        return b"\xff" * size
    if kind == "random":
        return rng.randbytes(size)
    if kind == "candidates":
        # Random bytes dense in plausible kind/flags pairs, to stress the
        # search for valid records after the stopping point.
        return (rng.choice([b"\xa1\x01", b"\xa2\x00", b"\xa4\x01"]) * size)[:size]
    if kind == "foreign-record":
        rec = _foreign_record(tmp_path)
        return rec if size == 0 else (rec * (size // len(rec) + 1))[:size]
    if kind == "replayed-record":
        # An earlier record of this very segment (valid salt and hcrc, old txid).
        rec = records[2]
        return data[rec.offset : rec.end]
    if kind == "uncommitted-record":
        # A complete, checksum-valid record with a plausible txid but no COMMIT.
        salt = fmt.decode_segment_header(data[:64], seg_name).salt
        value = b"\x80\x05K\x07."  # pickle of 7
        return fmt.pack_record(
            salt,
            records[-1].header.txid + 1,
            fmt.KIND_PUT,
            False,
            0,
            b"ghost",
            value,
            zlib.crc32(value),
            0,
        )
    raise AssertionError(kind)


GARBAGE_CASES = [
    ("zeros", 1),
    ("zeros", 31),
    ("zeros", 32),
    ("zeros", 33),
    ("zeros", 4096),
    ("zeros", 1 << 20),
    ("ones", 100),
    ("random", 1),
    ("random", 77),
    ("random", 5000),
    ("random", 300_000),
    ("candidates", 20_000),
    ("foreign-record", 0),
    ("foreign-record", 1000),
    ("replayed-record", 0),
    ("uncommitted-record", 0),
]


@pytest.mark.parametrize("with_hint", [False, True], ids=["no-hint", "hint"])
@pytest.mark.parametrize(
    ("kind", "size"), GARBAGE_CASES, ids=[f"{k}-{s}" for k, s in GARBAGE_CASES]
)
def test_garbage_tail_is_ignored_by_readers_and_cut_by_writer(
    tmp_path: Path, kind: str, size: int, with_hint: bool
) -> None:
    """Junk appended after the last committed record is invisible to readers
    (which leave it in place), and the next writer copies exactly those bytes to
    quarantine/ and appends its record where the junk began."""
    store = tmp_path / "store"
    with logshelf.open(store) as db:
        for key, value in BASE.items():
            db[key] = value
    seg = active_segment(store)
    files = snapshot(store)
    if not with_hint:
        del files[hint_of(seg).name]
    clean = files[seg.name]
    junk = _garbage(kind, size, files, seg.name, tmp_path)
    files[seg.name] = clean + junk
    restore(store, files)

    with logshelf.open(store, "r") as db:
        assert read_all(db) == BASE
        assert "ghost" not in db and "foreign" not in db
    assert snapshot(store) == files

    with logshelf.open(store, "c") as db:
        assert read_all(db) == BASE
        db["after"] = "new"
    data = seg.read_bytes()
    assert data[: len(clean)] == clean
    records = parse_records(data)
    assert records[-1].key == b"after" and records[-1].offset == len(clean)
    assert records[-1].end == len(data)
    assert quarantined(store) == [junk]
    with logshelf.open(store, "r") as db:
        assert read_all(db) == {**BASE, "after": "new"}


def test_torn_tail_after_reopen_keeps_older_sessions(tmp_path: Path) -> None:
    """A tail torn in a later session loses only that session's unfinished
    batch: batches committed by earlier sessions and earlier in the same
    session all survive, with or without the hints those closes wrote."""
    store = tmp_path / "store"
    expected: dict[str, Any] = {}
    for session in range(3):
        with logshelf.open(store) as db:
            for i in range(5):
                db[f"s{session}-{i}"] = (session, i)
                expected[f"s{session}-{i}"] = (session, i)
            db.update({f"s{session}-batch-{j}": j for j in range(4)})
            expected.update({f"s{session}-batch-{j}": j for j in range(4)})
    seg = active_segment(store)
    data = seg.read_bytes()
    batch = last_batch(parse_records(data))
    for j in range(4):
        expected.pop(f"s2-batch-{j}")
    cut = batch[-1].offset + 3  # inside the commit record of the last batch
    for keep_hint in (True, False):
        seg.write_bytes(data[:cut])
        if not keep_hint:
            hint_of(seg).unlink(missing_ok=True)
        with logshelf.open(store, "r") as db:
            assert read_all(db) == expected


# -- a crash in the middle of a segment rollover -----------------------------


def _rolled_store(store: Path) -> tuple[dict[str, bytes], dict[str, Any], str, fmt.Manifest]:
    """Write single puts into 4 KiB segments until one rolls over; return the
    files, the keys written before the put that caused the rollover, that
    put's key, and the MANIFEST as it was before the rollover."""
    before: dict[str, Any] = {}
    with logshelf.open(store, max_segment_size=4096) as db:
        for i in range(1000):
            key = f"r{i:03d}"
            db[key] = ("roll", i, "x" * 100)
            if len(manifest(store).segments) > 1:
                break
            before[key] = ("roll", i, "x" * 100)
    after = manifest(store)
    assert len(after.segments) == 2
    (old_id, _), (new_id, _) = after.segments
    pre = fmt.Manifest(after.generation - 1, new_id, ((old_id, fmt.ACTIVE),))
    return snapshot(store), before, key, pre


ROLL_STATES = [
    # (SEAL bytes kept: None = all, new segment file, old segment's hint)
    (None, "header", "hint"),  # crash just before the MANIFEST switch
    (None, "header", "none"),
    (None, "absent", "none"),
    (None, "partial", "none"),
    (0, "header", "none"),  # crash before the SEAL landed
    (1, "header", "none"),
    (20, "absent", "none"),
    (39, "partial", "none"),
]


@pytest.mark.parametrize(("seal_kept", "new_seg", "hint"), ROLL_STATES)
def test_torn_rollover_keeps_prefix_and_writing_continues(
    tmp_path: Path, seal_kept: int | None, new_seg: str, hint: str
) -> None:
    """A writer killed mid-rollover (SEAL whole or torn, next segment file
    present, partial or missing, old hint written or not, MANIFEST not yet
    switched) leaves a store that shows every earlier key, and that the next
    writers extend without losing anything across reopens."""
    store = tmp_path / "store"
    files, before, _, pre = _rolled_store(store)
    old_name = fmt.segment_name(pre.segments[0][0])
    new_name = fmt.segment_name(pre.next_segment_id)
    old = files[old_name]
    seal = parse_records(old)[-1]
    assert seal.header.kind == fmt.KIND_SEAL and seal.end == len(old)
    crashed = {"LOCK": files["LOCK"]}
    crashed[fmt.MANIFEST_NAME] = fmt.encode_manifest(pre)
    crashed[old_name] = old if seal_kept is None else old[: seal.offset + seal_kept]
    if hint == "hint":
        crashed[hint_of(store / old_name).name] = files[hint_of(store / old_name).name]
    if new_seg != "absent":
        crashed[new_name] = files[new_name][: 64 if new_seg == "header" else 40]
    restore(store, crashed)

    with logshelf.open(store, "r") as db:
        assert read_all(db) == before
    assert snapshot(store) == crashed

    expected = dict(before)
    for round_no in range(3):
        with logshelf.open(store, "w", max_segment_size=4096) as db:
            assert read_all(db) == expected
            for i in range(5):
                expected[f"after-{round_no}-{i}"] = ("after", round_no, i, "y" * 300)
                db[f"after-{round_no}-{i}"] = expected[f"after-{round_no}-{i}"]
        with logshelf.open(store, "r") as db:
            assert read_all(db) == expected, round_no
        for p in store.glob("*.hint"):
            p.unlink()
        with logshelf.open(store, "r") as db:
            assert read_all(db) == expected, f"{round_no} without hints"
