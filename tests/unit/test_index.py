"""The in-memory index in isolation: applying scans and hints, and snapshots."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from _log_records import append_batch, delete, put, seal

from logshelf import _format as fmt
from logshelf import _index
from logshelf._fs import FileSystem
from logshelf._index import OFFSET_MASK, SLOT_SHIFT, apply_hint, apply_scan, snapshot
from logshelf._segment import Segment, SegmentScan
from logshelf.errors import CorruptionError

# --------------------------------------------------------------------------
# Factories: the only places that call constructors, so a change of their
# signatures is fixed here alone.


def create_segment(directory: Path, segment_id: int = 1) -> Segment:
    """A new, empty, writable segment file in ``directory``."""
    return Segment.create(FileSystem(), str(directory), segment_id, 0)


def scan_segment(segment: Segment) -> SegmentScan:
    """A scan of every record of ``segment``, values verified."""
    return segment.scan(fmt.SEGMENT_HEADER.size, segment.size(), 0)


def make_hint(puts: dict[str, int], deleted: list[str]) -> fmt.Hint:
    """A hint of segment 1 listing ``puts`` (key -> offset) and ``deleted``."""
    return fmt.Hint(1, 0, 1 << 20, 10, list(puts), array("Q", puts.values()), deleted)


# --------------------------------------------------------------------------
# Building segments with the format's own packers (builders: _log_records.py).


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Segment]:
    seg = create_segment(tmp_path)
    try:
        yield seg
    finally:
        seg.close()


def loc(slot: int, offset: int) -> int:
    """An index entry as the module documents it: slot above bit 40, offset below."""
    return slot << 40 | offset


# --------------------------------------------------------------------------
# Packing


def test_index_entries_pack_slot_above_a_40_bit_offset() -> None:
    """40 bits of offset (1 TiB segments), the slot above them, a million slots."""
    assert SLOT_SHIFT == 40
    assert OFFSET_MASK == (1 << 40) - 1
    assert _index.MAX_SEGMENTS == 1 << 20
    entry = loc(3, OFFSET_MASK)
    assert entry >> SLOT_SHIFT == 3 and entry & OFFSET_MASK == OFFSET_MASK
    assert loc(_index.MAX_SEGMENTS - 1, 0) < 1 << 60


# --------------------------------------------------------------------------
# apply_scan


def test_apply_scan_indexes_puts_at_their_slot_and_offset(segment: Segment) -> None:
    """Each put key maps to (slot << 40) | offset of its record."""
    offsets = append_batch(segment, 1, [put("a"), put("b"), put("\u00e9\u00e8")])
    index: dict[str, int] = {}
    assert apply_scan(scan_segment(segment), 5, index, None) == 0
    assert index == {
        "a": loc(5, offsets[0]),
        "b": loc(5, offsets[1]),
        "\u00e9\u00e8": loc(5, offsets[2]),
    }


def test_apply_scan_later_records_win(segment: Segment) -> None:
    """A key written again, in a later batch or later in one batch, points at the last record."""
    append_batch(segment, 1, [put("a", b"1"), put("b", b"1")])
    second = append_batch(segment, 2, [put("a", b"2"), put("b", b"2"), put("b", b"3")])
    index: dict[str, int] = {}
    apply_scan(scan_segment(segment), 0, index, None)
    assert index == {"a": loc(0, second[0]), "b": loc(0, second[2])}


def test_apply_scan_deletes_remove_keys_of_earlier_slots(segment: Segment) -> None:
    """A delete removes the key whatever slot it was in; deleting a missing key is fine."""
    append_batch(segment, 1, [delete("old"), delete("never-existed")])
    index = {"old": loc(0, 100), "kept": loc(0, 200)}
    apply_scan(scan_segment(segment), 1, index, None)
    assert index == {"kept": loc(0, 200)}


def test_apply_scan_tracks_the_final_deletes_of_the_segment(segment: Segment) -> None:
    """``deletes`` holds exactly the keys whose last record here is a delete."""
    append_batch(segment, 1, [put("a"), put("b"), put("c")])
    append_batch(segment, 2, [delete("a"), delete("b")])
    again = append_batch(segment, 3, [put("b")])
    index: dict[str, int] = {}
    deletes = {"stale-from-caller"}
    apply_scan(scan_segment(segment), 2, index, deletes)
    assert deletes == {"stale-from-caller", "a"}
    assert set(index) == {"b", "c"} and index["b"] == loc(2, again[0])


def test_apply_scan_returns_the_seal_target(segment: Segment) -> None:
    """A SEAL record's value (the next segment's id) is returned, and indexes nothing."""
    append_batch(segment, 1, [put("a")])
    append_batch(segment, 2, [seal(42)])
    index: dict[str, int] = {}
    deletes: set[str] = set()
    assert apply_scan(scan_segment(segment), 0, index, deletes) == 42
    assert set(index) == {"a"} and deletes == set()


def test_apply_scan_applies_only_committed_batches(segment: Segment) -> None:
    """Records of a batch without its COMMIT record change nothing."""
    committed = append_batch(segment, 1, [put("a")])
    segment.append(fmt.pack_record(segment.salt, 2, fmt.KIND_PUT, False, 0, b"a", b"", 0, 0))
    segment.append(fmt.pack_record(segment.salt, 2, fmt.KIND_DELETE, False, 0, b"x", b"", 0, 0))
    index = {"x": loc(0, 7)}
    deletes: set[str] = set()
    apply_scan(scan_segment(segment), 1, index, deletes)
    assert index == {"x": loc(0, 7), "a": loc(1, committed[0])}
    assert deletes == set()


def test_apply_scan_rejects_a_key_that_is_not_utf8(segment: Segment) -> None:
    """A checksum-valid record whose key is not UTF-8 is corruption naming file and offset."""
    append_batch(segment, 1, [put("fine")])
    bad = append_batch(segment, 2, [put(b"\xff\xfe")])[0]
    with pytest.raises(CorruptionError, match=rf"{segment.path}: record at offset {bad} .*UTF-8"):
        apply_scan(scan_segment(segment), 0, {}, None)


# --------------------------------------------------------------------------
# apply_hint


def test_apply_hint_applies_puts_then_deletes() -> None:
    """Puts land at the hint's slot; deletes then remove keys, also ones the hint put."""
    index = {"from-earlier": loc(0, 64), "overwritten": loc(0, 96)}
    deletes = {"already"}
    hint = make_hint({"a": 64, "overwritten": 128, "both": 256}, ["from-earlier", "both"])
    apply_hint(hint, 3, index, deletes)
    assert index == {"a": loc(3, 64), "overwritten": loc(3, 128)}
    assert deletes == {"already", "from-earlier", "both"}


def test_apply_hint_without_delete_tracking() -> None:
    """``deletes=None`` still removes the deleted keys."""
    index = {"gone": loc(0, 64)}
    apply_hint(make_hint({"a": 80}, ["gone"]), 1, index, None)
    assert index == {"a": loc(1, 80)}


@pytest.mark.parametrize("slot", [0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, _index.MAX_SEGMENTS - 1])
def test_entries_equal_slot_or_offset_for_every_slot_byte(slot: int) -> None:
    """The byte-level packing gives ``(slot << 40) | offset`` exactly, each
    byte of the slot in its place, offsets up to the largest of 40 bits."""
    offsets = array("Q", [0, 64, 0xFF_FFFF_FFFF, 0x12_3456_789A, *range(64, 6400, 97)])
    assert list(_index.entries(offsets, slot)) == [loc(slot, off) for off in offsets]


def test_entries_of_an_offset_past_40_bits_equal_the_plain_or() -> None:
    """No valid hint has one, but a forged one gets what ``|`` gives it (the
    read of such an entry then finds no record of its key)."""
    for high in (1 << 40, 1 << 48, 1 << 63):  # a bit in each of the top three bytes
        offsets = array("Q", [64, high | 64])
        expected = [(6 << SLOT_SHIFT) | off for off in offsets]
        assert list(_index.entries(offsets, 6)) == expected, hex(high)
    assert list(_index.entries(array("Q"), 5)) == []


# --------------------------------------------------------------------------
# snapshot


def test_snapshot_lists_only_the_slot_asked_for_with_plain_offsets() -> None:
    """Keys of other slots are left out; offsets come back without the slot bits."""
    index = {
        "s0": loc(0, 64),
        "s1-small": loc(1, 64),
        "s1-large": loc(1, OFFSET_MASK),
        "s2": loc(2, 1000),
        "s1-mid": loc(1, 12345),
    }
    keys, offsets = snapshot(index, 1)
    assert isinstance(offsets, array) and offsets.typecode == "Q"
    assert dict(zip(keys, offsets, strict=True)) == {
        "s1-small": 64,
        "s1-large": OFFSET_MASK,
        "s1-mid": 12345,
    }
    assert snapshot(index, 7) == ([], array("Q"))


def test_snapshot_of_a_scanned_segment_round_trips_through_a_hint(segment: Segment) -> None:
    """Scan -> snapshot -> hint -> apply_hint rebuilds the same index entries."""
    append_batch(segment, 1, [put("a"), put("b"), put("c")])
    append_batch(segment, 2, [delete("b"), put("a", b"again")])
    index: dict[str, int] = {}
    deletes: set[str] = set()
    apply_scan(scan_segment(segment), 4, index, deletes)
    keys, offsets = snapshot(index, 4)
    hint = segment.make_hint(segment.size(), 2, keys, offsets, sorted(deletes))
    rebuilt: dict[str, int] = {"b": loc(0, 64)}
    rebuilt_deletes: set[str] = set()
    apply_hint(hint, 4, rebuilt, rebuilt_deletes)
    assert rebuilt == index
    assert rebuilt_deletes == deletes == {"b"}
