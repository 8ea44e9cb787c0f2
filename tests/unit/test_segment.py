"""Segment files in isolation: header, record reads and their checks, scans, hints."""

from __future__ import annotations

import os
import re
import struct
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from _log_records import EngineRecord, append_batch, delete, put, seal

from logshelf import _format as fmt
from logshelf._fs import FileSystem
from logshelf._segment import ScannedRecord, Segment, SegmentScan
from logshelf.errors import CorruptionError, FormatError

# --------------------------------------------------------------------------
# Factories: the only places that call the constructors, so a change of their
# signatures is fixed here alone.


def create_segment(directory: Path, segment_id: int = 1, base_txid: int = 0) -> Segment:
    """A new, empty, writable segment file in ``directory``."""
    return Segment.create(FileSystem(), str(directory), segment_id, base_txid)


def open_segment(directory: Path, segment_id: int = 1, writable: bool = False) -> Segment:
    """An existing segment file of ``directory``, header checked."""
    return Segment.open(FileSystem(), str(directory), segment_id, writable)


# --------------------------------------------------------------------------
# Record builders live in _log_records.py (shared with test_index.py).

# Larger than the segment's remap step (256 KiB), so that exposing it makes
# the next read map the file.
FILLER = 300 << 10
HEADER = fmt.SEGMENT_HEADER.size


def append_record(segment: Segment, txid: int, record: EngineRecord, commit: bool = True) -> int:
    """Append one record with :func:`fmt.pack_record` (COMMIT as asked); return its offset."""
    kind, _, key, codec, value, vcrc, rawlen = record
    offset = segment.size()
    segment.append(
        fmt.pack_record(segment.salt, txid, kind, commit, codec, key, value, vcrc, rawlen)
    )
    return offset


def with_flags(record: bytes, salt: int, flags: int) -> bytes:
    """``record`` with another flags byte and a header checksum that matches it."""
    data = bytearray(record)
    data[31] = flags
    klen = struct.unpack_from("<H", data, 28)[0]
    struct.pack_into("<I", data, 0, fmt.record_hcrc(bytes(data), bytes(data[32 : 32 + klen]), salt))
    return bytes(data)


def flip_bit(path: str, offset: int) -> None:
    """Invert the lowest bit of the byte at ``offset`` of the file at ``path``."""
    fd = os.open(path, os.O_RDWR)
    try:
        (byte,) = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte ^ 1]), offset)
    finally:
        os.close(fd)


def scan_all(
    segment: Segment, start: int = HEADER, limit: int | None = None, last_txid: int = 0
) -> tuple[SegmentScan, list[list[ScannedRecord]]]:
    """Run a scan to its end; return it (for its attributes) and its batches."""
    scan = segment.scan(start, segment.size() if limit is None else limit, last_txid)
    return scan, list(scan)


# --------------------------------------------------------------------------
# The two read paths: pread of uncommitted bytes, and the memory map of
# committed ones.


@pytest.fixture(params=["pread", "mmap"])
def read_path(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Segment]:
    seg = create_segment(tmp_path, 1, 0)
    try:
        yield seg
    finally:
        seg.close()


def expose(segment: Segment, read_path: str) -> None:
    """Arrange for the next reads of ``segment`` to take ``read_path``.

    For "mmap", pad the file past the remap step and declare everything
    committed, so the next read maps the file. For "pread", leave nothing
    committed beyond the header: every record read is a pread.
    """
    if read_path == "mmap":
        append_batch(segment, 1_000_000, [put("filler", b"\0" * FILLER)])
        segment.readable_end = segment.size()


def assert_read_path(segment: Segment, read_path: str) -> None:
    """The reads so far went through the path the test meant to exercise."""
    assert (segment.mapping is not None) == (read_path == "mmap")


# --------------------------------------------------------------------------
# Header


def test_create_then_open_round_trips_the_header(tmp_path: Path) -> None:
    """A created segment is a durable 64-byte header that open reads back."""
    created = create_segment(tmp_path, 7, 42)
    try:
        assert created.size() == HEADER
        assert (created.id, created.base_txid) == (7, 42)
        assert os.path.basename(created.path) == fmt.segment_name(7)
        reopened = open_segment(tmp_path, 7)
        try:
            assert (reopened.id, reopened.salt, reopened.base_txid) == (7, created.salt, 42)
            assert reopened.writable is False
        finally:
            reopened.close()
    finally:
        created.close()


def _open_fds() -> int:
    return len(os.listdir("/dev/fd"))


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd to count descriptors")
def test_open_with_the_wrong_id_is_corruption_and_leaks_no_descriptor(tmp_path: Path) -> None:
    """A file whose header names another id is refused, and its descriptor closed."""
    create_segment(tmp_path, 5).close()
    os.rename(tmp_path / fmt.segment_name(5), tmp_path / fmt.segment_name(6))
    before = _open_fds()
    with pytest.raises(CorruptionError, match=r"names segment 5, expected 6"):
        open_segment(tmp_path, 6)
    assert _open_fds() == before


def test_open_of_a_missing_segment_raises_file_not_found(tmp_path: Path) -> None:
    """A segment the directory does not hold is FileNotFoundError, not a store error."""
    with pytest.raises(FileNotFoundError):
        open_segment(tmp_path, 3)


def test_open_of_garbage_is_a_format_error(tmp_path: Path) -> None:
    """A file that is not a segment at all is a FormatError naming what it starts with."""
    (tmp_path / fmt.segment_name(1)).write_bytes(b"not a segment, clearly" * 4)
    with pytest.raises(FormatError, match=re.escape(repr(b"not a se"))):
        open_segment(tmp_path, 1)


def test_open_of_a_damaged_header_is_corruption(tmp_path: Path) -> None:
    """A flipped bit in the header (magic intact) fails its checksum."""
    create_segment(tmp_path, 1).close()
    flip_bit(str(tmp_path / fmt.segment_name(1)), 16)
    with pytest.raises(CorruptionError, match="header checksum"):
        open_segment(tmp_path, 1)


def test_open_of_a_truncated_header_is_a_format_error(tmp_path: Path) -> None:
    """A header cut short cannot be read as one."""
    path = tmp_path / fmt.segment_name(1)
    path.write_bytes(fmt.encode_segment_header(1, 0)[:40])
    with pytest.raises(FormatError):
        open_segment(tmp_path, 1)


# --------------------------------------------------------------------------
# Reading records


def test_reads_return_what_was_appended(segment: Segment, read_path: str) -> None:
    """Every read method returns the packed record's fields, through either path."""
    big = bytes(range(256)) * 8  # past the 512-byte speculative read
    records = [put("a", b"alpha"), put("\u00e9t\u00e9", big), delete("gone"), put("empty", b"")]
    positions = append_batch(segment, 3, records)
    zipped = fmt.pack_record(
        segment.salt, 4, fmt.KIND_PUT, True, 2, b"z", b"zz", zlib.crc32(b"zz"), 77
    )
    zoffset = segment.size()
    segment.append(zipped)
    expose(segment, read_path)

    for offset, (kind, _, key, _, value, vcrc, _) in zip(positions, records, strict=True):
        header, got_key, got_value = segment.read_record(offset)
        assert (header.kind, header.txid, header.vcrc, got_key, got_value) == (
            kind,
            3,
            vcrc,
            key,
            value,
        )
        assert segment.read_raw(offset) == (kind, 3, header.flags, 0, vcrc, key, value)
        assert segment.read_key(offset) == key
        assert segment.record_size(offset) == 32 + len(key) + len(value)
        if kind == fmt.KIND_PUT:
            assert segment.read_value(offset, key) == (0, value, 0)
    # Only the last record of the batch carries COMMIT.
    assert [segment.read_record(p)[0].flags & fmt.FLAG_COMMIT for p in positions] == [0, 0, 0, 1]
    # A compressed record reports its codec and raw length.
    assert segment.read_value(zoffset, b"z") == (2, b"zz", 77)
    assert segment.read_raw(zoffset)[3] == 77
    assert_read_path(segment, read_path)


def test_mapped_and_pread_reads_agree(tmp_path: Path) -> None:
    """The same records read through the map and through pread give identical results."""
    writer = create_segment(tmp_path, 1)
    try:
        records = [put(f"key{i}", os.urandom(i * 97)) for i in range(40)]
        positions = append_batch(writer, 1, records)
        append_batch(writer, 2, [put("filler", b"\0" * FILLER)])
        mapped = open_segment(tmp_path, 1)
        plain = open_segment(tmp_path, 1)
        try:
            mapped.readable_end = mapped.size()
            # Records appended after the map was made are read by pread from it.
            late = append_batch(writer, 3, [put("late", b"after the mapping")])
            for offset in positions + late:
                key = mapped.read_key(offset)
                assert mapped.read_record(offset) == plain.read_record(offset)
                assert mapped.read_raw(offset) == plain.read_raw(offset)
                assert mapped.read_value(offset, key) == plain.read_value(offset, key)
                assert mapped.read_key(offset) == plain.read_key(offset)
                assert mapped.record_size(offset) == plain.record_size(offset)
            assert mapped.mapping is not None and plain.mapping is None
            assert mapped.mapped_end <= late[0]  # the late record lies beyond the map
        finally:
            mapped.close()
            plain.close()
    finally:
        writer.close()


def test_growing_readable_end_remaps(segment: Segment) -> None:
    """Once a remap step of committed bytes lies beyond the map, reads map them too."""
    first = append_batch(segment, 1, [put("a", b"x" * FILLER)])[0]
    segment.readable_end = segment.size()
    segment.read_raw(first)
    assert segment.mapped_end == segment.readable_end
    second = append_batch(segment, 2, [put("b", b"y" * FILLER)])[0]
    segment.readable_end = segment.size()
    assert segment.read_value(second, b"b") == (0, b"y" * FILLER, 0)
    assert segment.mapped_end == segment.readable_end


@pytest.mark.parametrize("method", ["read_record", "read_raw", "read_key", "record_size"])
def test_every_read_maps_committed_bytes_once_a_remap_step_is_unmapped(
    segment: Segment, method: str
) -> None:
    """The first read after readable_end grew by a remap step maps the file,
    whichever read method it is, and answers from the map."""
    offset = append_batch(segment, 1, [put("a", b"x" * FILLER)])[0]
    segment.readable_end = segment.size()
    if method == "read_record":
        assert segment.read_record(offset)[1:] == (b"a", b"x" * FILLER)
    elif method == "read_raw":
        assert segment.read_raw(offset)[5:] == (b"a", b"x" * FILLER)
    elif method == "read_key":
        assert segment.read_key(offset) == b"a"
    else:
        assert segment.record_size(offset) == 32 + 1 + FILLER
    assert segment.mapping is not None
    assert segment.mapped_end == segment.readable_end


def test_read_raw_maps_even_for_a_small_record_at_the_end(segment: Segment) -> None:
    """read_raw (compaction's copy loop) remaps itself: a record too close to the
    end for a speculative read through the map is still served from it."""
    append_batch(segment, 1, [put("filler", b"\0" * FILLER)])
    offset = append_batch(segment, 2, [put("a", b"small")])[0]
    segment.readable_end = segment.size()
    assert segment.read_raw(offset)[5:] == (b"a", b"small")
    assert segment.mapping is not None
    assert segment.mapped_end == segment.readable_end


@pytest.mark.parametrize(
    ("part", "read_key_fails"), [("header", True), ("key", True), ("value", False)]
)
def test_flipped_bit_is_corruption_naming_path_and_offset(
    segment: Segment, read_path: str, part: str, read_key_fails: bool
) -> None:
    """A flipped bit in a record's header, key or value fails every verified read."""
    append_batch(segment, 1, [put("before", b"fine")])
    offset = append_batch(segment, 2, [put("victim", b"precious value")])[0]
    append_batch(segment, 3, [put("after", b"fine")])
    where = {"header": offset + 8, "key": offset + 32, "value": offset + 32 + len(b"victim")}
    flip_bit(segment.path, where[part])
    expose(segment, read_path)

    message = rf"{re.escape(segment.path)}: .*offset {offset}\b"
    with pytest.raises(CorruptionError, match=message):
        segment.read_record(offset)
    with pytest.raises(CorruptionError, match=message):
        segment.read_raw(offset)
    with pytest.raises(CorruptionError, match=message):
        segment.read_value(offset, b"victim")
    if read_key_fails:
        with pytest.raises(CorruptionError, match=message):
            segment.read_key(offset)
    else:
        assert segment.read_key(offset) == b"victim"
    assert_read_path(segment, read_path)


def test_read_value_refuses_another_keys_record(segment: Segment, read_path: str) -> None:
    """An offset holding another key, or a delete, never answers with a value."""
    put_at = append_batch(segment, 1, [put("mine", b"v")])[0]
    delete_at = append_batch(segment, 2, [delete("mine")])[0]
    expose(segment, read_path)
    with pytest.raises(CorruptionError, match=rf"offset {put_at} does not hold .*b'yours'"):
        segment.read_value(put_at, b"yours")
    with pytest.raises(CorruptionError, match=rf"offset {delete_at} does not hold"):
        segment.read_value(delete_at, b"mine")
    assert_read_path(segment, read_path)


def test_length_past_end_of_file_is_corruption_not_memory_error(
    segment: Segment, read_path: str
) -> None:
    """A checksum-valid header whose value length exceeds the file is refused before
    anything that size is read."""
    offset = segment.size()
    header = struct.pack("<IQQIHBB", 0, 1, 1 << 62, 0, 3, fmt.KIND_PUT, fmt.FLAG_COMMIT)
    record = b"\0" * 4 + header + b"key"
    segment.append(struct.pack("<I", fmt.record_hcrc(record, b"key", segment.salt)) + record[4:])
    expose(segment, read_path)
    for read in (segment.read_record, segment.read_raw):
        with pytest.raises(CorruptionError, match=rf"offset {offset} claims .* past the end"):
            read(offset)
    with pytest.raises(CorruptionError, match="past the end"):
        segment.read_value(offset, b"key")
    assert_read_path(segment, read_path)


def test_record_cut_short_at_end_of_file_is_corruption(segment: Segment) -> None:
    """A record header that the file ends inside of cannot be read."""
    append_batch(segment, 1, [put("a", b"v")])
    segment.append(b"\x01" * 10)
    with pytest.raises(CorruptionError, match="cut short"):
        segment.read_record(segment.size() - 10)
    with pytest.raises(CorruptionError, match="cut short"):
        segment.read_key(segment.size() - 10)


def test_truncate_refuses_to_cut_committed_bytes(segment: Segment) -> None:
    """Bytes below readable_end are never truncated; a torn tail above it is."""
    append_batch(segment, 1, [put("a", b"v")])
    committed = segment.size()
    segment.readable_end = committed
    segment.append(b"torn tail")
    with pytest.raises(AssertionError, match="below committed end"):
        segment.truncate(committed - 1)
    assert segment.size() == committed + len(b"torn tail")
    segment.truncate(committed)
    assert segment.size() == committed


# --------------------------------------------------------------------------
# SegmentScan


def _summary(batches: list[list[ScannedRecord]]) -> list[list[tuple[int, bytes, int]]]:
    return [[(r.kind, r.key, r.txid) for r in batch] for batch in batches]


def test_scan_of_a_clean_range_yields_every_batch(segment: Segment) -> None:
    """A range of committed batches is yielded whole, in order, with its offsets."""
    first = append_batch(segment, 1, [put("a", b"1"), put("b", b"22")])
    second = append_batch(segment, 2, [delete("a")])
    third = append_batch(segment, 5, [seal(9)])
    scan, batches = scan_all(segment)
    assert _summary(batches) == [
        [(fmt.KIND_PUT, b"a", 1), (fmt.KIND_PUT, b"b", 1)],
        [(fmt.KIND_DELETE, b"a", 2)],
        [(fmt.KIND_SEAL, b"", 5)],
    ]
    assert [r.offset for batch in batches for r in batch] == first + second + third
    assert [r.length for r in batches[0]] == [34, 34 + 1]
    assert batches[2][0].seal_next == 9
    assert (scan.end, scan.stop, scan.problem) == (segment.size(), segment.size(), None)
    assert (scan.max_txid, scan.last_committed, scan.damaged) == (5, 5, [])


def test_scan_of_a_sub_range_starts_and_stops_where_asked(segment: Segment) -> None:
    """A scan from a batch boundary to another sees only the batches between."""
    append_batch(segment, 1, [put("a", b"1")])
    start = segment.size()
    append_batch(segment, 2, [put("b", b"2")])
    limit = segment.size()
    append_batch(segment, 3, [put("c", b"3")])
    scan, batches = scan_all(segment, start, limit, last_txid=1)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"b", 2)]]
    assert (scan.end, scan.stop, scan.problem) == (limit, limit, None)


@pytest.mark.parametrize(
    ("tail_bytes", "problem"),
    [(20, "incomplete record header"), (40, "record extends past the end of the data")],
)
def test_scan_stops_at_a_torn_tail(segment: Segment, tail_bytes: int, problem: str) -> None:
    """A record cut short ends the scan after the last committed batch."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    torn, _ = fmt.pack_batch(segment.salt, 2, [put("b", b"value cut short")], good_end)
    segment.append(torn[:tail_bytes])
    scan, batches = scan_all(segment)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.end, scan.stop, scan.problem) == (good_end, good_end, problem)
    assert (scan.max_txid, scan.last_committed) == (1, 1)


def test_scan_ignores_an_uncommitted_batch_at_the_end(segment: Segment) -> None:
    """Valid records without their COMMIT are not yielded but counted in max_txid."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    append_record(segment, 2, put("b", b"2"), commit=False)
    append_record(segment, 2, put("c", b"3"), commit=False)
    scan, batches = scan_all(segment)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.end, scan.stop, scan.problem) == (good_end, segment.size(), None)
    assert (scan.max_txid, scan.last_committed) == (2, 1)


def test_scan_stops_at_a_batch_interrupted_by_another_txid(segment: Segment) -> None:
    """A batch whose next record has another txid is cut there, and never yielded."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    append_record(segment, 2, put("b", b"2"), commit=False)
    intruder = append_record(segment, 3, put("c", b"3"), commit=True)
    scan, batches = scan_all(segment)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.end, scan.stop) == (good_end, intruder)
    assert scan.problem == "batch interrupted by another transaction id"
    assert (scan.max_txid, scan.last_committed) == (2, 1)


@pytest.mark.parametrize("txid", [1, 0, 1 + (1 << 32) + 1], ids=["repeated", "older", "too-far"])
def test_scan_stops_at_an_implausible_txid(segment: Segment, txid: int) -> None:
    """A batch whose txid does not follow the previous one within the window ends the scan."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    append_batch(segment, txid, [put("b", b"2")])
    scan, batches = scan_all(segment)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.end, scan.stop) == (good_end, good_end)
    assert scan.problem == f"implausible transaction id {txid}"


def test_scan_floor_is_the_segment_base_txid(tmp_path: Path) -> None:
    """The first batch must exceed the base txid even when the caller passes less."""
    seg = create_segment(tmp_path, 2, base_txid=10)
    try:
        append_batch(seg, 10, [put("a", b"1")])
        scan, batches = scan_all(seg, last_txid=0)
        assert batches == []
        assert scan.problem == "implausible transaction id 10"
    finally:
        seg.close()


def test_scan_accepts_a_txid_at_the_edge_of_the_window(segment: Segment) -> None:
    """previous + 2**32 is still plausible (burnt txids leave gaps)."""
    append_batch(segment, 1, [put("a", b"1")])
    append_batch(segment, 1 + (1 << 32), [put("b", b"2")])
    scan, batches = scan_all(segment)
    assert len(batches) == 2 and scan.problem is None


def test_bit_rot_in_a_value_followed_by_valid_records_is_damage_not_a_stop(
    segment: Segment,
) -> None:
    """A bad value with a valid record right after it is reported in ``damaged``
    and the scan goes on; reading that record raises."""
    append_batch(segment, 1, [put("a", b"1")])
    rotten = append_batch(segment, 2, [put("b", b"a value that rots")])[0]
    append_batch(segment, 3, [put("c", b"3")])
    flip_bit(segment.path, rotten + 32 + 1 + 3)
    scan, batches = scan_all(segment)
    assert _summary(batches) == [
        [(fmt.KIND_PUT, b"a", 1)],
        [(fmt.KIND_PUT, b"b", 2)],
        [(fmt.KIND_PUT, b"c", 3)],
    ]
    assert scan.damaged == [rotten]
    assert (scan.end, scan.stop, scan.problem) == (segment.size(), segment.size(), None)
    with pytest.raises(CorruptionError, match=f"offset {rotten}"):
        segment.read_value(rotten, b"b")


def test_bad_value_in_the_last_record_is_a_torn_tail(segment: Segment) -> None:
    """With nothing valid after it, a bad value ends the scan before its batch."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    last = append_batch(segment, 2, [put("b", b"a value that rots")])[0]
    flip_bit(segment.path, last + 32 + 1)
    scan, batches = scan_all(segment)
    assert _summary(batches) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.end, scan.stop, scan.problem) == (good_end, last, "value checksum mismatch")
    assert scan.damaged == []


def test_scan_without_value_checks_does_not_read_values(segment: Segment) -> None:
    """verify_values=False yields a batch whose value is damaged, reporting nothing."""
    offset = append_batch(segment, 1, [put("a", b"value")])[0]
    flip_bit(segment.path, offset + 33)
    scan = segment.scan(HEADER, segment.size(), 0, verify_values=False)
    assert _summary(list(scan)) == [[(fmt.KIND_PUT, b"a", 1)]]
    assert (scan.problem, scan.damaged) == (None, [])


def test_reserved_flag_bits_are_a_format_error(segment: Segment) -> None:
    """A checksum-valid record using undefined flag bits was written by a newer version."""
    append_batch(segment, 1, [put("a", b"1")])
    record = fmt.pack_record(
        segment.salt, 2, fmt.KIND_PUT, True, 0, b"b", b"2", zlib.crc32(b"2"), 0
    )
    offset = segment.size()
    segment.append(with_flags(record, segment.salt, fmt.FLAG_COMMIT | 0x20))
    with pytest.raises(FormatError, match=rf"offset {offset} .*newer logshelf format"):
        scan_all(segment)


def test_reserved_flag_bit_from_bit_rot_is_damage_not_a_newer_format(segment: Segment) -> None:
    """A reserved bit set without a matching checksum is a bad record, not a FormatError."""
    append_batch(segment, 1, [put("a", b"1")])
    good_end = segment.size()
    append_batch(segment, 2, [put("b", b"2")])
    fd = os.open(segment.path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([fmt.FLAG_COMMIT | 0x20]), good_end + 31)
    finally:
        os.close(fd)
    scan, _ = scan_all(segment)
    assert (scan.end, scan.problem) == (good_end, "record header checksum mismatch")


# --------------------------------------------------------------------------
# find_valid_record


def test_find_valid_record_skips_garbage_to_the_next_record(segment: Segment) -> None:
    """Garbage (including bytes that look like a kind and flags) is skipped; the
    first record with a valid header is found, and none past the last one."""
    first = append_batch(segment, 1, [put("a", b"1")])[0]
    segment.append(b"\xa1\x00" * 40 + os.urandom(100) + b"\xa4\x01" * 20)
    second = append_batch(segment, 2, [put("b", b"2")])[0]
    end = segment.size()
    assert segment.find_valid_record(HEADER, end) == first
    assert segment.find_valid_record(first + 1, end) == second
    assert segment.find_valid_record(second, end) == second
    assert segment.find_valid_record(second + 1, end) is None
    # A record that does not fit below the limit is not valid.
    assert segment.find_valid_record(first + 1, end - 1) is None


@pytest.mark.parametrize(
    "delta", [-1, 0, 1], ids=["kind-last-in-chunk", "kind-first", "flags-first"]
)
def test_find_valid_record_finds_a_record_across_a_chunk_boundary(
    segment: Segment, delta: int
) -> None:
    """Candidates are looked for chunk by chunk (1 MiB): a record whose kind and
    flags bytes straddle a chunk boundary is still found."""
    chunk = 1 << 20
    # The record's kind byte (at +30) lands ``delta`` bytes from the first
    # chunk's end; zeros never look like a kind byte.
    segment.append(b"\0" * (chunk + delta - 30))
    offset = append_batch(segment, 1, [put("k", b"v")])[0]
    assert offset + 30 == HEADER + chunk + delta
    segment.append(b"\0" * 100)
    assert segment.find_valid_record(HEADER, segment.size()) == offset


def test_find_valid_record_ignores_records_of_another_salt(tmp_path: Path) -> None:
    """Bytes copied from another segment (another salt) are not valid records here."""
    other = create_segment(tmp_path, 2)
    seg = create_segment(tmp_path, 3)
    try:
        append_batch(other, 1, [put("a", b"1")])
        seg.append(other.fs.pread(other.fd, other.size() - HEADER, HEADER))
        assert seg.find_valid_record(HEADER, seg.size()) is None
    finally:
        other.close()
        seg.close()


# --------------------------------------------------------------------------
# Hints

SALT = 0x5EED


def write_segment_file(directory: Path, segment_id: int, keys: list[str]) -> list[int]:
    """Write a segment file with a fixed salt, one single-record batch per key
    (txids 1, 2, ...); return the record offsets."""
    parts = [fmt.encode_segment_header(segment_id, 0, salt=SALT)]
    offsets = []
    position = HEADER
    for txid, key in enumerate(keys, start=1):
        data, positions = fmt.pack_batch(SALT, txid, [put(key, b"value-" + key.encode())], position)
        parts.append(data)
        offsets += positions
        position += len(data)
    (directory / fmt.segment_name(segment_id)).write_bytes(b"".join(parts))
    return offsets


def test_hint_of_an_intact_segment_matches(tmp_path: Path) -> None:
    """make_hint records the largest put offset and its checksum; it matches its
    segment, also after an encode/decode round trip."""
    offsets = write_segment_file(tmp_path, 1, ["k0", "k1", "k2"])
    seg = open_segment(tmp_path, 1)
    try:
        # Keys in another order than the file: the check record is the largest offset.
        shuffled = array("Q", offsets[1:] + offsets[:1])
        hint = seg.make_hint(seg.size(), 3, ["k1", "k2", "k0"], shuffled, ["x"], 4)
        assert (hint.segment_id, hint.salt, hint.covered, hint.max_txid) == (1, SALT, seg.size(), 3)
        assert (hint.deleted_keys, hint.seal_next) == (["x"], 4)
        assert hint.check_offset == offsets[2]
        assert hint.check_hcrc == seg.read_record(offsets[2])[0].hcrc
        assert seg.hint_matches(hint)
        decoded = fmt.decode_hint(fmt.encode_hint(hint))
        assert decoded is not None and seg.hint_matches(decoded)
        empty = seg.make_hint(seg.size(), 3, [], array("Q"), ["k0"])
        assert (empty.check_offset, empty.check_hcrc) == (0, 0)
        assert seg.hint_matches(empty)
    finally:
        seg.close()


@pytest.mark.parametrize(
    "moved",
    [["kx", "k0", "k1", "k2"], ["k1", "k2"]],
    ids=["range-duplicated", "range-removed"],
)
def test_hint_does_not_match_when_records_moved(tmp_path: Path, moved: list[str]) -> None:
    """Records shifted under an intact hint (same id, same salt) are noticed:
    the check offset now holds another record, or none."""
    offsets = write_segment_file(tmp_path, 1, ["k0", "k1", "k2"])
    seg = open_segment(tmp_path, 1)
    try:
        hint = seg.make_hint(seg.size(), 3, ["k0", "k1", "k2"], array("Q", offsets), [])
    finally:
        seg.close()
    # Equal-length keys: in the duplicated case a valid record sits at the check offset.
    write_segment_file(tmp_path, 1, moved)
    seg = open_segment(tmp_path, 1)
    try:
        assert not seg.hint_matches(hint)
    finally:
        seg.close()


def test_hint_with_a_check_offset_outside_its_range_does_not_match(tmp_path: Path) -> None:
    """A check offset in the header or past the covered range is refused unread."""
    offsets = write_segment_file(tmp_path, 1, ["k0", "k1"])
    seg = open_segment(tmp_path, 1)
    try:
        hint = seg.make_hint(seg.size(), 2, ["k0", "k1"], array("Q", offsets), [])
        assert seg.hint_matches(hint)
        assert not seg.hint_matches(hint._replace(covered=offsets[1] + 31))
        assert not seg.hint_matches(hint._replace(check_offset=0))
    finally:
        seg.close()


def test_newest_records_read_often_get_mapped(tmp_path: Path) -> None:
    """Fewer than _REMAP_STEP bytes past the map are read by pread, until they
    have been read often enough that a remap is the cheaper way."""
    from logshelf import _segment

    writer = create_segment(tmp_path, 1)
    try:
        append_batch(writer, 1, [put("old", b"x" * 100)])
        reader = open_segment(tmp_path, 1)
        try:
            late = append_batch(writer, 2, [put("late", b"y" * 100)])
            reader.readable_end = reader.size()
            end = reader.mapped_end
            assert end <= late[0]  # far less than _REMAP_STEP committed: no map yet
            for _ in range(_segment._REMAP_AFTER_PREADS - 1):
                assert reader.read_raw(late[0])[5] == b"late"
            assert reader.mapped_end == end  # still pread
            assert reader.read_raw(late[0])[5] == b"late"
            assert reader.mapped_end == reader.readable_end > end
        finally:
            reader.close()
    finally:
        writer.close()
