"""Every byte logshelf writes to disk, in one place (hint files in
``_hint_format``, the INDEX file in ``_table_format``, and record values with
out-of-band buffers in ``_buffer_format``, re-exported or referenced from here).

``docs/format.md`` is the normative description of these layouts and must be
kept in step with this module. Nothing here does I/O: functions take and return
``bytes`` so the layouts can be tested and inspected without a store.

A store is a directory::

    LOCK                     the writer lock (empty; never deleted)
    CHANGES                  change counter, 16 bytes (docs/format.md §6.1)
    LEASE                    writers waiting for a lease holder's lock (§6.3)
    SYNCED                   how far the active segment is known durable (§6.2)
    COMPACT.LOCK             held while a compaction runs (empty; no data)
    MANIFEST                 the live segments in replay order, last = active
    seg-<id:016x>.log        a segment: SEGMENT_HEADER then packed records
    seg-<id:016x>.hint       optional index snapshot of one segment
    INDEX                    optional hash table of the whole index (_table_format)
    quarantine/              bytes cut from torn tails, kept for inspection
    SIGNED                   a signed store's identity and key check (_signing)

All integers are little-endian. All checksums are ``zlib.crc32``.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from ._hint_format import HINT_HEADER, HINT_MAGIC, HINT_VERSION, Hint, decode_hint, encode_hint
from ._table_format import TABLE_NAME, Table, TableInfo, encode_table
from .errors import CorruptionError, FormatError

__all__ = [
    "ACTIVE",
    "CHANGES",
    "CHANGES_NAME",
    "FLAG_BUFFERS",
    "FLAG_COMMIT",
    "FLAG_SIGNED",
    "FORMAT_VERSION",
    "HINT_HEADER",
    "HINT_MAGIC",
    "HINT_VERSION",
    "JOIN_LIMIT",
    "KIND_DELETE",
    "KIND_PUT",
    "KIND_SEAL",
    "LARGE_VALUE",
    "LEASE",
    "LEASE_NAME",
    "MANIFEST_NAME",
    "MAX_KEY_BYTES",
    "RECORD_HEADER",
    "SEGMENT_HEADER",
    "TABLE_NAME",
    "HasBuffers",
    "Hint",
    "Manifest",
    "RecordHeader",
    "SegmentHeader",
    "Table",
    "TableInfo",
    "check_record_header",
    "codec_of",
    "decode_hint",
    "decode_manifest",
    "decode_segment_header",
    "encode_changes",
    "encode_hint",
    "encode_manifest",
    "encode_segment_header",
    "encode_table",
    "hint_name",
    "pack_batch",
    "pack_header",
    "pack_record",
    "record_hcrc",
    "segment_name",
]

FORMAT_VERSION = 1
CHECKSUM_CRC32 = 1

SEGMENT_MAGIC = b"LSHFSEG\x00"
MANIFEST_MAGIC = b"LSHFMAN\x00"
CHANGES_MAGIC = b"LSHFCHG\x00"
LEASE_MAGIC = b"LSHFLSE\x00"

MANIFEST_NAME = "MANIFEST"
LOCK_NAME = "LOCK"
COMPACT_LOCK_NAME = "COMPACT.LOCK"
CHANGES_NAME = "CHANGES"
LEASE_NAME = "LEASE"
SYNCED_NAME = "SYNCED"
QUARANTINE_DIR = "quarantine"


def segment_name(segment_id: int) -> str:
    """File name of a segment; ids are never reused within a store."""
    return f"seg-{segment_id:016x}.log"


def hint_name(segment_id: int) -> str:
    """File name of a segment's hint."""
    return f"seg-{segment_id:016x}.hint"


# --------------------------------------------------------------------------
# CHANGES: the change counter, 16 bytes, shared through memory maps.
#
#   off size field
#     0    8 magic b"LSHFCHG\0"
#     8    8 counter: odd while a writer holds the writer lock, even otherwise;
#            every hold of the lock raises it. Compared as raw bytes (the
#            lowest bit is bit 0 of byte 8).
#
# It carries no data, only "something may have changed": a handle that saw an
# even value and sees it again skips the size check of the active segment.
CHANGES = struct.Struct("<8sQ")
CHANGES_COUNTER = slice(8, 16)
assert CHANGES.size == 16


def encode_changes(counter: int) -> bytes:
    """A new CHANGES file holding ``counter``."""
    return CHANGES.pack(CHANGES_MAGIC, counter)


# --------------------------------------------------------------------------
# LEASE: the waiters of the writer lock, 272 bytes, shared through memory maps.
#
#   off size field
#     0    8 magic b"LSHFLSE\0"
#     8    8 reserved, 0
#    16  256 64 waiter slots, u32 each: the pid of a process waiting for the
#            writer lock, 0 for a free slot
#
# A writer that keeps the OS lock between its writes (a lease) releases it at
# the end of its next write, or at once if idle, when any slot is non-zero.
# Created with the store; a store made by an older version gets it from its
# first writer here (O_CREAT, then the bytes written by pwrite: two creators
# write the same bytes). Never truncated or replaced, so a map of it stays
# valid. Anything but the right size and magic means "no waiter
# list": writers then fall back to waiting out the holder's idle release.
LEASE = struct.Struct("<8sQ")
LEASE_SLOTS = 64
LEASE_WAITERS = slice(LEASE.size, LEASE.size + 4 * LEASE_SLOTS)
LEASE_SIZE = LEASE.size + 4 * LEASE_SLOTS
assert LEASE_SIZE == 272


def encode_lease() -> bytes:
    """A new LEASE file: no waiters."""
    return LEASE.pack(LEASE_MAGIC, 0) + bytes(4 * LEASE_SLOTS)


# --------------------------------------------------------------------------
# SYNCED: the synced mark, 32 bytes, rewritten in place (pwrite at offset 0):
#   magic b"LSHFSYN\0" (8), segment id (8), end (8), salt (4), crc32 of bytes
#   0..27 (4). Written only after an fdatasync of that segment returned: every
#   intact copy that reaches the disk says "durable in [0, end)", a lower bound.
SYNCED = struct.Struct("<8sQQII")
SYNCED_MAGIC = b"LSHFSYN\x00"


def encode_synced(segment_id: int, salt: int, end: int) -> bytes:
    body = SYNCED.pack(SYNCED_MAGIC, segment_id, end, salt, 0)[:28]
    return body + _U32.pack(zlib.crc32(body))


def decode_synced(data: bytes) -> tuple[int, int, int] | None:
    """``(segment id, salt, end)``, or None for anything but an intact mark."""
    if len(data) != SYNCED.size or zlib.crc32(data[:28]) != _U32.unpack_from(data, 28)[0]:
        return None
    magic, segment_id, end, salt, _ = SYNCED.unpack(data)
    return (segment_id, salt, end) if magic == SYNCED_MAGIC else None


# --------------------------------------------------------------------------
# Segment header: 64 bytes at offset 0 of every segment file.
#
#   off size field
#     0    8 magic b"LSHFSEG\0"
#     8    2 format version (1)
#    10    1 checksum algorithm (1 = zlib.crc32)
#    11    1 flags (reserved, 0)
#    12    4 salt: random u32 that seeds every record's hcrc in this file, so
#            records copied from another segment (or left over from an earlier
#            file at the same path) never validate here
#    16    8 segment id
#    24    8 base txid: every record in this segment has txid > base
#    32    8 creation time, ns since the epoch (informational)
#    40   20 reserved, zero
#    60    4 crc32 of bytes 0..59
SEGMENT_HEADER = struct.Struct("<8sHBBIQQQ20sI")
assert SEGMENT_HEADER.size == 64


class SegmentHeader(NamedTuple):
    """The decoded fixed header of a segment file."""

    segment_id: int
    salt: int
    base_txid: int
    created_ns: int


def encode_segment_header(segment_id: int, base_txid: int, salt: int | None = None) -> bytes:
    """Build the 64-byte header of a new segment (a fresh random salt by default)."""
    if salt is None:
        salt = int.from_bytes(os.urandom(4), "little")
    body = SEGMENT_HEADER.pack(
        SEGMENT_MAGIC,
        FORMAT_VERSION,
        CHECKSUM_CRC32,
        0,
        salt,
        segment_id,
        base_txid,
        time.time_ns(),
        bytes(20),
        0,
    )
    return body[:60] + struct.pack("<I", zlib.crc32(body[:60]))


def decode_segment_header(data: bytes, path: str) -> SegmentHeader:
    """Parse and check a segment header read from ``path``.

    Raises:
        FormatError: not a logshelf segment, or a newer format version.
        CorruptionError: the header's checksum does not match.
    """
    if len(data) < SEGMENT_HEADER.size or not data.startswith(SEGMENT_MAGIC):
        raise FormatError(
            f"{path} is not a logshelf segment: it starts with {bytes(data[:8])!r}, "
            f"expected {SEGMENT_MAGIC!r}"
        )
    (_, version, checksum, _flags, salt, segment_id, base_txid, created, _, crc) = (
        SEGMENT_HEADER.unpack_from(data)
    )
    if zlib.crc32(data[:60]) != crc:
        raise CorruptionError(f"{path}: segment header checksum mismatch at offset 0")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{path} uses logshelf format version {version}; this version reads "
            f"format {FORMAT_VERSION} only (upgrade logshelf)"
        )
    if checksum != CHECKSUM_CRC32:
        raise FormatError(f"{path} uses unknown checksum algorithm {checksum}")
    return SegmentHeader(segment_id, salt, base_txid, created)


# --------------------------------------------------------------------------
# Record: a 32-byte header, then the UTF-8 key, then the stored value.
#
#   off size field
#     0    4 hcrc    crc32(bytes 4..31 of this header + key, seeded with the salt)
#     4    4 vcrc    crc32(stored value); 0 for an empty value
#     8    8 txid    all records of one batch share it; batches have strictly
#                    increasing txids in log order; a txid is never reused
#    16    8 vlen    stored value length in bytes (after compression)
#    24    4 rawlen  uncompressed length when a codec is set, else 0
#    28    2 klen    key length in bytes (UTF-8), 0..65535
#    30    1 kind    0xA1 PUT, 0xA2 DELETE (vlen 0), 0xA4 SEAL (value: u64 id
#                    of the segment that continues the log)
#    31    1 flags   bit 0 COMMIT: last record of its batch
#                    bits 1-2 codec: 0 none, 1 lz4 block, 2 zlib, 3 bz2
#                    bit 3 BUFFERS (PUT only): the value carries out-of-band
#                    buffers, laid out as _buffer_format says
#                    bit 4 SIGNED: the value ends with a MAC tag (_signing)
#                    bits 5-7 reserved, 0
RECORD_HEADER = struct.Struct("<IIQQIHBB")
assert RECORD_HEADER.size == 32
_HEADER_TAIL = struct.Struct("<IQQIHBB")
_U32 = struct.Struct("<I")

KIND_PUT = 0xA1
KIND_DELETE = 0xA2
KIND_SEAL = 0xA4
KINDS = frozenset((KIND_PUT, KIND_DELETE, KIND_SEAL))

FLAG_COMMIT = 0x01
_CODEC_SHIFT = 1
CODEC_MASK = 0x06
FLAG_BUFFERS = 0x08
FLAG_SIGNED = 0x10
_BUFFERS_FIELD = FLAG_BUFFERS >> _CODEC_SHIFT
_RESERVED_FLAGS = 0xE0

MAX_KEY_BYTES = 0xFFFF
# rawlen is a u32: larger values are stored uncompressed (see _codecs.compress).
MAX_RAWLEN = 0xFFFF_FFFF
# A batch's txid may exceed the previous batch's by at most this much. Real
# writers step by one (plus txids burnt by failed writes); the bound rejects
# garbage whose checksum happens to validate.
TXID_WINDOW = 1 << 32


class RecordHeader(NamedTuple):
    """The decoded fixed header of one record."""

    hcrc: int
    vcrc: int
    txid: int
    vlen: int
    rawlen: int
    klen: int
    kind: int
    flags: int


def codec_of(flags: int) -> int:
    """The codec field of a record's flags: the codec id (0-3), plus 4 when
    the value carries out-of-band buffers (``_buffer_format.BUFFERS``), plus
    8 when it is signed (``_signing.SIGNED``)."""
    return (flags & (CODEC_MASK | FLAG_BUFFERS | FLAG_SIGNED)) >> _CODEC_SHIFT


def pack_record(
    salt: int,
    txid: int,
    kind: int,
    commit: bool,
    codec: int,
    key: bytes,
    value: bytes,
    vcrc: int,
    rawlen: int,
) -> bytes:
    """Encode one record. ``vcrc`` is ``zlib.crc32(value)``, computed by the caller
    (outside the writer lock) so that only this cheap step happens under it."""
    flags = (FLAG_COMMIT if commit else 0) | (codec << _CODEC_SHIFT)
    tail = _HEADER_TAIL.pack(vcrc, txid, len(value), rawlen, len(key), kind, flags)
    hcrc = zlib.crc32(key, zlib.crc32(tail, salt))
    return b"".join((_U32.pack(hcrc), tail, key, value))


def pack_header(
    salt: int,
    txid: int,
    kind: int,
    commit: bool,
    codec: int,
    key: bytes,
    vlen: int,
    vcrc: int,
    rawlen: int,
) -> bytes:
    """A record's header and key, for a value written separately (one with
    out-of-band buffers, whose parts are never joined). :func:`pack_record`
    packs the same header inline rather than calling this: it runs once per
    single-key write, where a call is a measurable share."""
    flags = (FLAG_COMMIT if commit else 0) | (codec << _CODEC_SHIFT)
    tail = _HEADER_TAIL.pack(vcrc, txid, vlen, rawlen, len(key), kind, flags)
    return _U32.pack(zlib.crc32(key, zlib.crc32(tail, salt))) + tail + key


#: A batch whose values of at least LARGE_VALUE bytes add up to more than
#: JOIN_LIMIT is not joined into one ``bytes`` (see ``_pieces``). Batches of
#: small records are joined whatever their size: per byte, that is cheaper
#: than packing record by record.
JOIN_LIMIT = 4 << 20
LARGE_VALUE = 256 << 10


class HasBuffers(Exception):
    """:func:`pack_batch` met a value with out-of-band buffers, or the batch
    grew past :data:`JOIN_LIMIT`: it is packed by
    ``_buffer_format.pack_parts`` instead (one comparison per record here,
    rather than a pass over every batch to choose)."""


def pack_batch(
    salt: int,
    txid: int,
    records: Collection[tuple[int, object, bytes, int, bytes, int, int]],
    start: int,
) -> tuple[bytes, list[int]]:
    """Encode a batch of records; all share ``txid`` and the last one
    carries COMMIT. Return the bytes and the position of each record, counting
    from ``start`` (the batch's own offset, or anything the caller adds it to).

    ``records`` are ``(kind, anything, key, codec, value, vcrc, rawlen)``: the
    engine's own record tuples, whose second item (the ``str`` key) is not
    written. Equivalent to joining :func:`pack_record` results, but one loop
    that also yields the positions: it runs once per key of every bulk write,
    transaction and compaction, and the fused loop costs less than half of a
    pack followed by a second pass for the offsets.
    """
    parts: list[bytes] = []
    positions: list[int] = []
    add_position = positions.append
    pack_tail = _HEADER_TAIL.pack
    pack_u32 = _U32.pack
    crc32 = zlib.crc32
    offset = start
    large = 0
    for kind, _, key, codec, value, vcrc, rawlen in records:
        if codec & _BUFFERS_FIELD:
            raise HasBuffers
        tail = pack_tail(vcrc, txid, len(value), rawlen, len(key), kind, codec << _CODEC_SHIFT)
        parts += (pack_u32(crc32(key, crc32(tail, salt))), tail, key, value)
        add_position(offset)
        offset += 32 + len(key) + len(value)
        if len(value) >= LARGE_VALUE:
            large += len(value)
            if large > JOIN_LIMIT:
                raise HasBuffers
    if parts:
        # The last record carries COMMIT: set the flag and checksum again (one
        # repack, rather than a comparison per record).
        last_tail = bytearray(parts[-3])
        last_tail[-1] |= FLAG_COMMIT
        parts[-3] = committed = bytes(last_tail)
        parts[-4] = pack_u32(crc32(parts[-2], crc32(committed, salt)))
    return b"".join(parts), positions


def record_hcrc(header: bytes, key: bytes, salt: int) -> int:
    """The hcrc a record with these header bytes and key must carry."""
    return zlib.crc32(key, zlib.crc32(header[4:32], salt))


def check_record_header(header: RecordHeader, offset: int, limit: int) -> str | None:
    """Structural checks that need neither the key nor the value.

    Returns None when the header is plausible, else a short reason. Lengths are
    checked against ``limit`` (the end of readable data) before anything is
    allocated, so a damaged length field can never ask for more memory than
    the file holds.
    """
    if header.kind not in KINDS:
        return f"unknown record kind 0x{header.kind:02x}"
    if offset + RECORD_HEADER.size + header.klen + header.vlen > limit:
        return "record extends past the end of the data"
    if header.kind == KIND_DELETE and header.vlen != 0:
        return "delete record carries a value"
    if header.kind == KIND_SEAL and (header.vlen != 8 or header.klen != 0):
        return "malformed seal record"
    if not header.flags & CODEC_MASK and header.rawlen != 0:
        return "uncompressed record with a raw length"
    if header.flags & FLAG_BUFFERS and header.kind != KIND_PUT:
        return "buffers on a record that is not a put"
    return None


def has_reserved_flags(flags: int) -> bool:
    """True when a record uses flag bits this format version does not define."""
    return bool(flags & _RESERVED_FLAGS)


SEAL_VALUE = struct.Struct("<Q")


# --------------------------------------------------------------------------
# MANIFEST: the single commit point for changes to the set of segments.
# Replaced only as a whole (temporary file, fsync, os.replace, directory fsync).
#
#   off size field
#     0    8 magic b"LSHFMAN\0"
#     8    2 format version (1)
#    10    2 reserved, 0
#    12    4 number of segments n (>= 1)
#    16    8 generation: +1 on every replacement
#    24    8 next segment id to allocate
#    32 16*n segments in replay order: (u64 id, u64 sealed length); the last
#            one is the active segment and has sealed length 2**64-1
#  32+16n  4 crc32 of everything before it
_MANIFEST_HEAD = struct.Struct("<8sHHIQQ")
_MANIFEST_ENTRY = struct.Struct("<QQ")
ACTIVE = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Manifest:
    """The decoded MANIFEST.

    ``segments`` lists ``(segment_id, sealed_length)`` in replay order; the
    last entry is the active segment, whose length is ``ACTIVE``.
    """

    generation: int
    next_segment_id: int
    segments: tuple[tuple[int, int], ...] = field(default=())

    @property
    def active_id(self) -> int:
        """Id of the segment new records are appended to."""
        return self.segments[-1][0]


def encode_manifest(manifest: Manifest) -> bytes:
    """Serialize a manifest, checksum included."""
    parts = [
        _MANIFEST_HEAD.pack(
            MANIFEST_MAGIC,
            FORMAT_VERSION,
            0,
            len(manifest.segments),
            manifest.generation,
            manifest.next_segment_id,
        )
    ]
    parts.extend(_MANIFEST_ENTRY.pack(sid, length) for sid, length in manifest.segments)
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def decode_manifest(data: bytes, path: str) -> Manifest:
    """Parse a MANIFEST read from ``path``.

    Raises:
        FormatError: not a logshelf manifest, or a newer format version.
        CorruptionError: damaged (checksum, length or content).
    """
    if not data.startswith(MANIFEST_MAGIC):
        raise FormatError(
            f"{path} is not a logshelf MANIFEST: it starts with {data[:8]!r}, "
            f"expected {MANIFEST_MAGIC!r}"
        )
    if len(data) < _MANIFEST_HEAD.size + 4:
        raise CorruptionError(f"{path}: MANIFEST truncated to {len(data)} bytes")
    # The checksum is always the last 4 bytes, whatever the version: check it
    # first so that a flipped bit is reported as damage, not as a new version.
    (crc,) = _U32.unpack_from(data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise CorruptionError(f"{path}: MANIFEST checksum mismatch")
    _, version, _, count, generation, next_id = _MANIFEST_HEAD.unpack_from(data)
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{path} uses logshelf format version {version}; this version reads "
            f"format {FORMAT_VERSION} only (upgrade logshelf)"
        )
    expected = _MANIFEST_HEAD.size + count * _MANIFEST_ENTRY.size + 4
    if len(data) != expected:
        raise CorruptionError(
            f"{path}: MANIFEST is {len(data)} bytes, its header implies {expected}"
        )
    segments = tuple(
        _MANIFEST_ENTRY.unpack_from(data, _MANIFEST_HEAD.size + i * _MANIFEST_ENTRY.size)
        for i in range(count)
    )
    if count == 0 or segments[-1][1] != ACTIVE:
        raise CorruptionError(f"{path}: MANIFEST names no active segment")
    ids = [sid for sid, _ in segments]
    if any(length == ACTIVE for _, length in segments[:-1]) or len(set(ids)) != count:
        raise CorruptionError(f"{path}: MANIFEST lists an impossible segment set")
    if max(ids) >= next_id:
        raise CorruptionError(f"{path}: MANIFEST next segment id {next_id} is already used")
    return Manifest(generation, next_id, segments)
