"""The INDEX file: the byte layout of a whole store's on-disk hash table.

Part of the on-disk format that ``_format`` defines (and re-exports from
here); ``docs/format.md`` §5.1 is the normative description. The table maps
``crc32(key)`` to index entries (``_index``: slot << 40 | offset) so that a
handle can open a store without building its in-memory index: it maps this
file and probes it per key (``_lazy_index``). Like a hint it is only ever an
optimisation: one that is missing, damaged, or does not match the MANIFEST
and the active segment is ignored, and the store is loaded as before.

No key bytes are stored: a probe yields candidate locations, and the caller
compares the key of the record there (collisions of crc32 are expected).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple

__all__ = [
    "TABLE_HEADER",
    "TABLE_MAGIC",
    "TABLE_NAME",
    "TABLE_VERSION",
    "DamagedTable",
    "Table",
    "TableInfo",
    "encode_table",
]

TABLE_NAME = "INDEX"
TABLE_MAGIC = b"LSHFIDX\x00"
TABLE_VERSION = 1

#   off size field
#     0    8 magic b"LSHFIDX\0"
#     8    2 version (TABLE_VERSION, 1; other versions are ignored)
#    10    2 reserved, 0
#    12    4 salt of the active segment
#    16    8 MANIFEST generation the table belongs to
#    24    8 id of the active segment
#    32    8 covered length c: the table holds the index as of [64, c) of
#             the active segment (and every sealed segment)
#    40    8 last committed txid in that state
#    48    8 largest txid seen in that state (burnt ones included)
#    56    8 n: number of entries (live keys)
#    64    8 s: number of slots, a multiple of 256
#    72    8 h: number of home slots (1 <= h < s)
#    80    8 check offset: the largest offset of an entry in the active
#             segment's slot (0 if none)
#    88    4 header checksum of the record at the check offset
#    92    4 crc32 of the MANIFEST file's bytes
#    96    4 crc32 of the block checksum list
#   100    4 m: number of sealed segments
#   104    4 crc32 of the sealed checks
#   108    4 crc32 of bytes 0..107
#   112   4s hash of each slot: crc32 of the key's UTF-8 bytes
#  112+4s 8s location of each slot (0: empty; records never start at 0)
#  112+12s 4*(s/256) crc32 of each block of 256 slots: crc32(locations,
#             crc32(hashes)) over the block's two runs
#    ..  16m sealed checks, one per sealed segment in MANIFEST order: the
#             largest offset of an entry in that segment (8, 0 if none), the
#             header checksum of the record there (4), reserved 0 (4)
# A key lives in the first slot at or after its home slot, (hash * h) >> 32,
# whose location is 0 or whose hash and record key match; the slots after
# the home slots (s - h of them) take the overflow, and at least the last
# slot is empty, so every probe ends. A probe checks each block it reads
# once, so opening checks only the header, the block checksum list and the
# sealed checks. The check records (one per segment) let a reader notice
# records that moved, as a hint's check record does.
TABLE_HEADER = struct.Struct("<8sHHIQQQQQQQQQIIIII")
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = TABLE_HEADER.size + _HEADER_CRC.size
BLOCK = 256
_HASH = struct.Struct("<I")
_LOC = struct.Struct("<Q")
_CHECK = struct.Struct("<QII")


class DamagedTable(Exception):
    """A block of the table failed its checksum: the caller stops using it."""


class TableInfo(NamedTuple):
    """What the table's header says about the state it describes."""

    salt: int
    generation: int
    segment_id: int
    covered: int
    txid: int
    max_txid: int
    entries: int
    check_offset: int
    check_hcrc: int
    manifest_crc: int
    #: (check offset, header checksum) of each sealed segment, MANIFEST order.
    sealed_checks: tuple[tuple[int, int], ...] = ()


def encode_table(info: TableInfo, keys: Sequence[bytes], locations: Sequence[int]) -> bytes:
    """Serialize a table of ``keys`` (UTF-8) at ``locations`` (nonzero)."""
    count = len(keys)
    homes = max(1, count + count // 2)  # a load of at most 2/3 keeps probes short
    # Placing keys in order of their home slot is linear probing without any
    # probing: each goes to its home or just after the previous key.
    order = sorted(
        ((h * homes) >> 32 << 96) | (h << 64) | loc
        for h, loc in zip(map(zlib.crc32, keys), locations, strict=True)
    )
    places = array("q", bytes(8 * count))
    pos = -1
    for i, packed in enumerate(order):
        home = packed >> 96
        pos = places[i] = home if home > pos else pos + 1
    slots = (max(homes, pos + 1) // BLOCK + 1) * BLOCK  # past both, so never full
    hashes = array("I", bytes(4 * slots))
    locs = array("Q", bytes(8 * slots))
    mask32, mask64 = (1 << 32) - 1, (1 << 64) - 1
    for place, packed in zip(places, order, strict=True):
        hashes[place] = (packed >> 64) & mask32
        locs[place] = packed & mask64
    if hashes.itemsize != 4 or locs.itemsize != 8:  # pragma: no cover - exotic platforms
        raise OSError("no 4- and 8-byte array types")
    if array("I", [1]).tobytes()[0] != 1:  # pragma: no cover - no big-endian CI machine
        hashes.byteswap()
        locs.byteswap()
    hash_bytes, loc_bytes = hashes.tobytes(), locs.tobytes()
    blocks = array("I", [0] * (slots // BLOCK))
    for b in range(len(blocks)):
        start = b * BLOCK
        blocks[b] = zlib.crc32(
            loc_bytes[8 * start : 8 * (start + BLOCK)],
            zlib.crc32(hash_bytes[4 * start : 4 * (start + BLOCK)]),
        )
    if blocks.itemsize == 4 and array("I", [1]).tobytes()[0] != 1:  # pragma: no cover
        blocks.byteswap()
    block_bytes = blocks.tobytes()
    checks = b"".join(_CHECK.pack(offset, hcrc, 0) for offset, hcrc in info.sealed_checks)
    head = TABLE_HEADER.pack(
        TABLE_MAGIC,
        TABLE_VERSION,
        0,
        info.salt,
        info.generation,
        info.segment_id,
        info.covered,
        info.txid,
        info.max_txid,
        count,
        slots,
        homes,
        info.check_offset,
        info.check_hcrc,
        info.manifest_crc,
        zlib.crc32(block_bytes),
        len(info.sealed_checks),
        zlib.crc32(checks),
    )
    return b"".join(
        (head, _HEADER_CRC.pack(zlib.crc32(head)), hash_bytes, loc_bytes, block_bytes, checks)
    )


class Table:
    """A decoded table over ``data`` (usually a read-only map of the file).

    Checks every block it reads; see :meth:`candidates`.
    """

    def __init__(self, data: bytes | mmap.mmap, info: TableInfo, slots: int, homes: int) -> None:
        self.data = data
        self.info = info
        self.slots = slots
        self.homes = homes
        self._locs_at = HEADER_SIZE + 4 * slots
        self._blocks_at = HEADER_SIZE + 12 * slots
        #: 1 for each block whose checksum was verified.
        self._checked = bytearray(slots // BLOCK)

    @classmethod
    def decode(cls, data: bytes | mmap.mmap) -> Table | None:
        """The table in ``data``, or None when it is not a valid table of this
        version. Reads the header and the block checksum list only: nothing
        is allocated in proportion to what the header claims."""
        if len(data) < HEADER_SIZE or bytes(data[:8]) != TABLE_MAGIC:
            return None
        fields = TABLE_HEADER.unpack_from(data)
        (_, version, _, salt, generation, segment_id, covered, txid, max_txid, count) = fields[:10]
        slots, homes, check_offset, check_hcrc, manifest_crc, blocks_crc, sealed, checks_crc = (
            fields[10:]
        )
        (hcrc,) = _HEADER_CRC.unpack_from(data, TABLE_HEADER.size)
        if version != TABLE_VERSION or zlib.crc32(data[: TABLE_HEADER.size]) != hcrc:
            return None
        checks_at = HEADER_SIZE + 12 * slots + 4 * (slots // BLOCK)
        if (
            slots % BLOCK
            or not 1 <= homes < slots
            or count >= slots
            or len(data) != checks_at + _CHECK.size * sealed
            or zlib.crc32(data[HEADER_SIZE + 12 * slots : checks_at]) != blocks_crc
            or zlib.crc32(data[checks_at:]) != checks_crc
        ):
            return None
        sealed_checks = tuple(
            _CHECK.unpack_from(data, checks_at + _CHECK.size * i)[:2] for i in range(sealed)
        )
        info = TableInfo(
            salt,
            generation,
            segment_id,
            covered,
            txid,
            max_txid,
            count,
            check_offset,
            check_hcrc,
            manifest_crc,
            sealed_checks,
        )
        return cls(data, info, slots, homes)

    def _check_block(self, block: int) -> None:
        start = block * BLOCK
        data = self.data
        hashes = data[HEADER_SIZE + 4 * start : HEADER_SIZE + 4 * (start + BLOCK)]
        locs = data[self._locs_at + 8 * start : self._locs_at + 8 * (start + BLOCK)]
        (stored,) = _HASH.unpack_from(data, self._blocks_at + 4 * block)
        if zlib.crc32(locs, zlib.crc32(hashes)) != stored:
            raise DamagedTable(f"block {block} of the INDEX file fails its checksum")
        self._checked[block] = 1

    def candidates(self, key: bytes) -> Iterator[int]:
        """The locations stored under ``key``'s hash, in probe order, ending at
        the first empty slot. The caller stops at the one whose record holds
        ``key``.

        Raises:
            DamagedTable: a block read fails its checksum, or the probe runs
                off the table (only a damaged table lets it).
        """
        h = zlib.crc32(key)
        pos = (h * self.homes) >> 32
        data, checked, locs_at = self.data, self._checked, self._locs_at
        while pos < self.slots:
            if not checked[pos // BLOCK]:
                self._check_block(pos // BLOCK)
            (loc,) = _LOC.unpack_from(data, locs_at + 8 * pos)
            if not loc:
                return
            if _HASH.unpack_from(data, HEADER_SIZE + 4 * pos)[0] == h:
                yield loc
            pos += 1
        raise DamagedTable("a probe ran off the end of the INDEX file")
