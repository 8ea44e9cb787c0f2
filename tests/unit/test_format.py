"""The byte layouts in _format.py round-trip and reject what they must."""

from __future__ import annotations

import struct
import zlib
from array import array

import pytest

from logshelf import _format as fmt
from logshelf.errors import CorruptionError, FormatError


def test_segment_header_round_trip() -> None:
    """A segment header decodes to what was encoded, and is 64 bytes."""
    data = fmt.encode_segment_header(7, 99, salt=1234)
    assert len(data) == 64
    header = fmt.decode_segment_header(data, "p")
    assert (header.segment_id, header.base_txid, header.salt) == (7, 99, 1234)


def test_segment_header_rejects_damage_and_foreign_files() -> None:
    """Wrong magic is a FormatError naming what was found; a flipped bit is corruption."""
    data = fmt.encode_segment_header(1, 0)
    with pytest.raises(FormatError, match="b'hello wo'"):
        fmt.decode_segment_header(b"hello world" * 10, "p")
    flipped = bytearray(data)
    flipped[20] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        fmt.decode_segment_header(bytes(flipped), "p")
    newer = bytearray(data[:60])
    struct.pack_into("<H", newer, 8, 2)
    newer += struct.pack("<I", zlib.crc32(bytes(newer)))
    with pytest.raises(FormatError, match="version 2"):
        fmt.decode_segment_header(bytes(newer), "p")


def test_record_layout() -> None:
    """A packed record is header + key + value with checksums that verify."""
    rec = fmt.pack_record(5, 3, fmt.KIND_PUT, True, 1, b"key", b"value", zlib.crc32(b"value"), 10)
    header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(rec))
    assert rec[32:35] == b"key" and rec[35:] == b"value"
    assert (header.txid, header.vlen, header.rawlen, header.klen, header.kind) == (
        3,
        5,
        10,
        3,
        fmt.KIND_PUT,
    )
    assert header.flags & fmt.FLAG_COMMIT and fmt.codec_of(header.flags) == 1
    assert fmt.record_hcrc(rec, b"key", 5) == header.hcrc
    assert fmt.record_hcrc(rec, b"key", 6) != header.hcrc  # the salt matters
    assert fmt.check_record_header(header, 0, len(rec)) is None
    assert fmt.check_record_header(header, 0, len(rec) - 1) is not None


def test_pack_batch_matches_pack_record_and_reports_positions() -> None:
    """A batch is its records packed one by one, COMMIT on the last only, and
    the positions it returns are where each record starts (plus ``start``)."""
    records = [
        (fmt.KIND_PUT, "a", b"a", 0, b"first", zlib.crc32(b"first"), 0),
        (fmt.KIND_DELETE, "bb", b"bb", 0, b"", 0, 0),
        (fmt.KIND_PUT, "\u00e9", "\u00e9".encode(), 1, b"xyz", zlib.crc32(b"xyz"), 9),
    ]
    data, positions = fmt.pack_batch(11, 4, records, 1000)
    parts = [
        fmt.pack_record(11, 4, kind, i == len(records) - 1, codec, kb, value, vcrc, rawlen)
        for i, (kind, _, kb, codec, value, vcrc, rawlen) in enumerate(records)
    ]
    assert data == b"".join(parts)
    assert positions == [1000, 1000 + len(parts[0]), 1000 + len(parts[0]) + len(parts[1])]


def test_manifest_round_trip_and_damage() -> None:
    """The manifest round-trips; truncation and bit flips are detected."""
    manifest = fmt.Manifest(3, 9, ((1, 500), (4, 700), (8, fmt.ACTIVE)))
    data = fmt.encode_manifest(manifest)
    assert fmt.decode_manifest(data, "m") == manifest
    assert manifest.active_id == 8
    with pytest.raises(CorruptionError):
        fmt.decode_manifest(data[:-1], "m")
    for i in range(8, len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        with pytest.raises((CorruptionError, FormatError)):
            fmt.decode_manifest(bytes(flipped), "m")
    with pytest.raises(FormatError, match="not a logshelf MANIFEST"):
        fmt.decode_manifest(b"garbage!" * 5, "m")


def test_hint_round_trip_and_damage() -> None:
    """A hint round-trips; any damage makes it invalid (None), never an exception."""
    hint = fmt.Hint(2, 77, 1000, 12, ["a", "ключ"], array("Q", [64, 200]), ["gone"])
    data = fmt.encode_hint(hint)
    assert fmt.decode_hint(data) == hint
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x04
        assert fmt.decode_hint(bytes(flipped)) is None
    assert fmt.decode_hint(data[:-3]) is None
    assert fmt.decode_hint(b"") is None


@pytest.mark.parametrize("puts,deleted", [(0, 0), (5, 0), (0, 3), (7, 2), (1, 1)])
def test_a_hint_decoded_keys_in_order_gives_the_same_keys(puts: int, deleted: int) -> None:
    """``keys_in_order``: the put keys come a slice at a time, in order, and
    are exactly those of an eager decode; the deleted keys are decoded at
    once; slices out of order are refused."""
    hint = fmt.Hint(
        2,
        77,
        1000,
        12,
        [f"k{i}é" for i in range(puts)],
        array("Q", [64 + 8 * i for i in range(puts)]),
        [f"gone{i}" for i in range(deleted)],
    )
    data = fmt.encode_hint(hint)
    lazy = fmt.decode_hint(data, keys_in_order=True)
    assert lazy is not None and len(lazy.put_keys) == puts
    assert lazy.deleted_keys == hint.deleted_keys
    taken = [*lazy.put_keys[0:2], *lazy.put_keys[2:3], *lazy.put_keys[3:puts]]
    assert taken == hint.put_keys
    if puts:
        with pytest.raises(IndexError):
            lazy.put_keys[0:1]


def test_a_hint_whose_keys_disagree_with_its_counts_fails_as_its_keys_are_taken() -> None:
    """A hint with valid checksums but one key short for its count: eager
    decoding refuses it; in order, taking the keys says so."""
    from logshelf._hint_format import HintKeysError

    keys = ["a", "b", "c", "d"]
    forged = fmt.encode_hint(fmt.Hint(2, 77, 1000, 12, keys, array("Q", [64] * 4), []))
    payload = forged[fmt.HINT_HEADER.size + 4 : -2]  # "d" and its separator cut
    fields = list(fmt.HINT_HEADER.unpack_from(forged))
    fields[-2:] = [len(payload), zlib.crc32(payload)]  # checksums made to fit
    head = fmt.HINT_HEADER.pack(*fields)
    bad = head + struct.pack("<I", zlib.crc32(head)) + payload
    assert fmt.decode_hint(bad) is None
    lazy = fmt.decode_hint(bad, keys_in_order=True)
    assert lazy is not None  # the counts fit the bytes: found while taking
    assert lazy.put_keys[0:2] == ["a", "b"]
    with pytest.raises(HintKeysError):
        lazy.put_keys[2:4]
