"""The INDEX file's bytes (docs/format.md §5.1): round trip, and every damaged,
truncated or forged variant ignored or refused, never misread."""

from __future__ import annotations

import struct
import zlib

import pytest

from logshelf import _format as fmt
from logshelf._table_format import (
    BLOCK,
    HEADER_SIZE,
    TABLE_HEADER,
    DamagedTable,
    Table,
    TableInfo,
    encode_table,
)

INFO = TableInfo(
    salt=7,
    generation=3,
    segment_id=2,
    covered=4096,
    txid=11,
    max_txid=12,
    entries=0,
    check_offset=64,
    check_hcrc=99,
    manifest_crc=1234,
    sealed_checks=((64, 5), (0, 0), (4000, 1 << 31)),
)


def sample(count: int) -> tuple[list[bytes], list[int]]:
    keys = [f"key-{i}".encode() for i in range(count)]
    return keys, [(i % 3) << 40 | (64 + 40 * i) for i in range(count)]


def probe(table: Table, keys: list[bytes]) -> list[list[int]]:
    return [list(table.candidates(key)) for key in keys]


def test_format_reexports_the_table_layout() -> None:
    assert fmt.TABLE_NAME == "INDEX"
    assert fmt.encode_table is encode_table


@pytest.mark.parametrize("count", [0, 1, 2, 170, 171, 1000, 5000])
def test_round_trip_finds_every_key_at_its_location(count: int) -> None:
    keys, locs = sample(count)
    data = encode_table(INFO._replace(entries=count), keys, locs)
    table = Table.decode(data)
    assert table is not None
    assert table.info == INFO._replace(entries=count)
    assert table.slots % BLOCK == 0 and table.slots > count
    for key, loc in zip(keys, locs, strict=True):
        assert loc in list(table.candidates(key))
    # Every stored hash is a crc32 of the key: absent keys find only collisions.
    absent = [f"absent-{i}".encode() for i in range(200)]
    hashes = {zlib.crc32(k) for k in keys}
    for key in absent:
        if zlib.crc32(key) not in hashes:
            assert list(table.candidates(key)) == []


def test_colliding_keys_are_both_candidates() -> None:
    # Distinct keys with one crc32 (found once by brute force): the table
    # keeps both, and the caller tells them apart by the record's key.
    a, b = b"plumless", b"buckeroo"
    assert zlib.crc32(a) == zlib.crc32(b)
    table = Table.decode(encode_table(INFO, [a, b], [1 << 40 | 64, 1 << 40 | 128]))
    assert table is not None
    assert sorted(table.candidates(a)) == [1 << 40 | 64, 1 << 40 | 128]


def test_every_truncation_is_ignored() -> None:
    keys, locs = sample(50)
    data = encode_table(INFO, keys, locs)
    for size in range(len(data)):
        assert Table.decode(data[:size]) is None, size
    assert Table.decode(data + b"\0") is None


def test_every_flipped_byte_is_ignored_or_fails_its_block() -> None:
    """A damaged byte in the header or the block list makes the table
    unusable; in the slots, the probe that reads that block raises. No flip
    makes a probe answer differently without raising."""
    keys, locs = sample(40)
    data = encode_table(INFO, keys, locs)
    good = Table.decode(data)
    assert good is not None
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x41
        table = Table.decode(bytes(damaged))
        if at < HEADER_SIZE or at >= HEADER_SIZE + 12 * good.slots:
            assert table is None, at
            continue
        assert table is not None
        with pytest.raises(DamagedTable):
            # Only one block here (256 slots): every probe reads it.
            probe(table, keys)


def test_other_versions_and_magics_are_ignored() -> None:
    data = bytearray(encode_table(INFO, *sample(3)))
    for field_at, value in ((0, b"LSHFIDY\0"), (8, struct.pack("<H", 2))):
        forged = bytearray(data)
        forged[field_at : field_at + len(value)] = value
        # Even with a valid header checksum.
        forged[TABLE_HEADER.size : HEADER_SIZE] = struct.pack(
            "<I", zlib.crc32(forged[: TABLE_HEADER.size])
        )
        assert Table.decode(bytes(forged)) is None


def forge_header(data: bytes, **changes: int) -> bytes:
    """``data`` with header fields replaced and its header checksum fixed."""
    names = [
        "magic",
        "version",
        "reserved",
        "salt",
        "generation",
        "segment_id",
        "covered",
        "txid",
        "max_txid",
        "entries",
        "slots",
        "homes",
        "check_offset",
        "check_hcrc",
        "manifest_crc",
        "blocks_crc",
        "sealed",
        "checks_crc",
    ]
    fields = dict(zip(names, TABLE_HEADER.unpack_from(data), strict=True))
    fields.update(changes)
    head = TABLE_HEADER.pack(*fields.values())
    return head + struct.pack("<I", zlib.crc32(head)) + data[HEADER_SIZE:]


@pytest.mark.parametrize(
    "changes",
    [
        {"slots": 1 << 50},  # far more than the file holds: refused before any allocation
        {"slots": 0},
        {"slots": 255},
        {"homes": 0},
        {"homes": 256},  # no overflow slot left: probes could run off
        {"entries": 256},
        {"blocks_crc": 5},
        {"sealed": 2},
        {"sealed": 1 << 31},
        {"checks_crc": 5},
    ],
)
def test_forged_headers_with_valid_checksums_are_refused(changes: dict[str, int]) -> None:
    data = encode_table(INFO, *sample(10))
    assert Table.decode(forge_header(data, **changes)) is None


def test_a_forged_full_table_ends_its_probe_with_an_error() -> None:
    """Slots all in use (never written so): a probe stops at the end of the
    table and says the table is damaged, instead of looping."""
    slots = BLOCK
    hashes = struct.pack(f"<{slots}I", *([zlib.crc32(b"x")] * slots))
    locs = struct.pack(f"<{slots}Q", *([1 << 40 | 64] * slots))
    block = struct.pack("<I", zlib.crc32(locs, zlib.crc32(hashes)))
    data = encode_table(INFO, [], [])
    data = data[:HEADER_SIZE] + hashes + locs + block
    data = forge_header(data, homes=1, blocks_crc=zlib.crc32(block), sealed=0, checks_crc=0)
    table = Table.decode(data)
    assert table is not None
    with pytest.raises(DamagedTable):
        list(table.candidates(b"x"))
