"""Hint files: the byte layout of one segment's index snapshot.

Part of the on-disk format that ``_format`` defines (and re-exports from
here); ``docs/format.md`` §5 is the normative description.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from typing import NamedTuple

__all__ = [
    "HINT_HEADER",
    "HINT_MAGIC",
    "HINT_VERSION",
    "Hint",
    "HintKeysError",
    "KeysInOrder",
    "decode_hint",
    "deleted_count",
    "encode_hint",
]

HINT_MAGIC = b"LSHFHNT\x00"

# --------------------------------------------------------------------------
# Hint: an index snapshot of one segment, so a reopen need not read values.
# A hint is only ever an optimisation: one that is missing, damaged, or does
# not match its segment (id, salt, length) is ignored and the segment scanned.
#
#   off size field
#     0    8 magic b"LSHFHNT\0"
#     8    2 hint version (HINT_VERSION, 2; other versions are ignored)
#    10    2 reserved, 0
#    12    4 salt of the segment it describes
#    16    8 segment id
#    24    8 covered length: the hint describes records in [64, covered)
#    32    8 largest txid in that range
#    40    8 payload length
#    48    4 payload crc32
#    52    4 crc32 of bytes 0..51
#    56    payload (all integers little-endian):
#            0  8 n: number of put keys
#            8  8 d: number of deleted keys
#           16  8 seal_next: target of a SEAL inside the range, 0 if none (a
#                 reader must learn of a SEAL even from a hint)
#           24  8 check offset: the largest put offset (0 when n == 0)
#           32  4 the header checksum stored in the record at the check offset
#           36  4 reserved, 0
#           40 8n put offsets, one per put key
#           ..    the n put keys then the d deleted keys, UTF-8, each followed
#                 by a 0xFF byte (which UTF-8 never contains)
#          The lists hold each key's final state within the range. Every count
#          is checked against the payload length before anything is allocated,
#          and no pickle is involved: a damaged or forged hint can at worst be
#          ignored. The check record lets a reader notice records that moved
#          under an intact hint (a range duplicated or removed in the segment).
HINT_HEADER = struct.Struct("<8sHHIQQQQI")
_HINT_CRC = struct.Struct("<I")
HINT_VERSION = 2
_HINT_PAYLOAD_HEAD = struct.Struct("<QQQQII")
_HINT_OFFSETS = "Q"
# Encoded as U+DCFF with the surrogateescape handler, decoded back from 0xFF;
# keys cannot contain it (they are encoded strictly), so it separates them.
_KEY_END = "\udcff"
_KEY_END_BYTE = b"\xff"


class Hint(NamedTuple):
    """A decoded hint file."""

    segment_id: int
    salt: int
    covered: int
    max_txid: int
    put_keys: list[str]
    put_offsets: array[int]
    deleted_keys: list[str]
    seal_next: int = 0
    #: Offset of the record whose header checksum is ``check_hcrc``: the
    #: largest of ``put_offsets`` (0 when there are none).
    check_offset: int = 0
    check_hcrc: int = 0


def encode_hint(hint: Hint) -> bytes:
    """Serialize a hint, checksums included."""
    offsets = hint.put_offsets
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
        offsets = array(_HINT_OFFSETS, offsets)
        offsets.byteswap()
    keys = _KEY_END.join(hint.put_keys + hint.deleted_keys)
    if hint.put_keys or hint.deleted_keys:
        keys += _KEY_END
    payload = b"".join(
        (
            _HINT_PAYLOAD_HEAD.pack(
                len(hint.put_keys),
                len(hint.deleted_keys),
                hint.seal_next,
                hint.check_offset,
                hint.check_hcrc,
                0,
            ),
            offsets.tobytes(),
            keys.encode("utf-8", "surrogateescape"),
        )
    )
    head = HINT_HEADER.pack(
        HINT_MAGIC,
        HINT_VERSION,
        0,
        hint.salt,
        hint.segment_id,
        hint.covered,
        hint.max_txid,
        len(payload),
        zlib.crc32(payload),
    )
    return head + _HINT_CRC.pack(zlib.crc32(head)) + payload


class HintKeysError(ValueError):
    """A hint's keys do not match its counts (found while taking them)."""


class KeysInOrder:
    """The put keys of a hint, decoded a piece at a time as they are taken
    in order: decoding all of a 16 MiB segment's keys at once takes 4-11 ms,
    and ``_remap`` follows a compaction a few milliseconds at a time. Has a
    ``len`` and slices, each starting where the previous one stopped."""

    def __init__(self, data: bytes, count: int) -> None:
        self._rest = data  # the keys not taken yet, each with its separator
        self._count = count
        self._taken = 0

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: slice) -> list[str]:
        start, stop, _ = index.indices(self._count)
        if start != self._taken:
            raise IndexError(f"keys are taken in order: {start} asked, {self._taken} next")
        if stop <= start:
            return []
        parts = self._rest.split(_KEY_END_BYTE, stop - start)
        self._rest = parts.pop()
        if len(parts) != stop - start or (stop == self._count and self._rest):
            raise HintKeysError("a hint holds another number of keys than it says")
        self._taken = stop
        return _KEY_END_BYTE.join(parts).decode("utf-8", "surrogateescape").split(_KEY_END)


def _split_keys(region: bytes, nputs: int, ndels: int) -> tuple[bytes, list[str]] | None:
    """The put keys' bytes (for :class:`KeysInOrder`) and the deleted keys of
    a hint's key region; None when it cannot hold those counts."""
    if not nputs + ndels:
        return (b"", []) if not region else None
    if not region.endswith(_KEY_END_BYTE):
        return None
    if not ndels:
        return region, []
    if nputs:
        parts = region[:-1].rsplit(_KEY_END_BYTE, ndels)
        puts, deleted = parts[0] + _KEY_END_BYTE, parts[1:]
    else:
        puts, deleted = b"", region[:-1].split(_KEY_END_BYTE)
    if len(deleted) != ndels:
        return None
    return puts, [key.decode("utf-8", "surrogateescape") for key in deleted]


def decode_hint(data: bytes, keys_in_order: bool = False) -> Hint | None:
    """Parse a hint; None when it is not a valid hint of this version. With
    ``keys_in_order``, its ``put_keys`` are a :class:`KeysInOrder`.

    Every count is bounded by the bytes actually present before anything is
    allocated, so even a hint with forged checksums cannot make this allocate
    more than a small multiple of its own size.
    """
    size = HINT_HEADER.size + _HINT_CRC.size
    if len(data) < size or not data.startswith(HINT_MAGIC):
        return None
    (_, version, _, salt, segment_id, covered, max_txid, plen, pcrc) = HINT_HEADER.unpack_from(data)
    (hcrc,) = _HINT_CRC.unpack_from(data, HINT_HEADER.size)
    if version != HINT_VERSION or zlib.crc32(data[: HINT_HEADER.size]) != hcrc:
        return None
    payload = memoryview(data)[size:]
    if len(payload) != plen or zlib.crc32(payload) != pcrc or plen < _HINT_PAYLOAD_HEAD.size:
        return None
    nputs, ndels, seal_next, check_offset, check_hcrc, _ = _HINT_PAYLOAD_HEAD.unpack_from(payload)
    keys_at = _HINT_PAYLOAD_HEAD.size + 8 * nputs
    # Each key takes at least its terminator byte.
    if keys_at > plen or nputs + ndels > plen - keys_at:
        return None
    offsets = array(_HINT_OFFSETS)
    offsets.frombytes(payload[_HINT_PAYLOAD_HEAD.size : keys_at])
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
        offsets.byteswap()
    put_keys: list[str] | KeysInOrder
    if keys_in_order:
        split = _split_keys(bytes(payload[keys_at:]), nputs, ndels)
        if split is None:
            return None
        put_keys, deleted_keys = KeysInOrder(split[0], nputs), split[1]
    else:
        keys = bytes(payload[keys_at:]).decode("utf-8", "surrogateescape").split(_KEY_END)
        if len(keys) != nputs + ndels + 1 or keys[-1]:
            return None
        keys.pop()
        put_keys, deleted_keys = keys[:nputs], keys[nputs:]
    return Hint(
        segment_id,
        salt,
        covered,
        max_txid,
        put_keys,  # type: ignore[arg-type]  # a KeysInOrder only where asked for
        offsets,
        deleted_keys,
        seal_next,
        check_offset,
        check_hcrc,
    )


def deleted_count(data: bytes) -> int | None:
    """How many deleted keys a hint lists (its checksums verified), without
    decoding any key; None when it is not a valid hint of this version."""
    size = HINT_HEADER.size + _HINT_CRC.size
    if len(data) < size + _HINT_PAYLOAD_HEAD.size or not data.startswith(HINT_MAGIC):
        return None
    (_, version, _, _, _, _, _, plen, pcrc) = HINT_HEADER.unpack_from(data)
    (hcrc,) = _HINT_CRC.unpack_from(data, HINT_HEADER.size)
    if version != HINT_VERSION or zlib.crc32(data[: HINT_HEADER.size]) != hcrc:
        return None
    payload = memoryview(data)[size:]
    if len(payload) != plen or zlib.crc32(payload) != pcrc:
        return None
    ndels: int = _HINT_PAYLOAD_HEAD.unpack_from(payload)[1]
    return ndels
