"""The bytes of a record whose value carries out-of-band buffers.

Part of the on-disk format (``docs/format.md`` §4.2; ``_format`` defines the
record around it). A PUT with flag bit 3 (BUFFERS) stores a pickle protocol 5
stream whose large buffers (numpy arrays, the blocks of a pandas frame) sit
after it, each on a 64-byte boundary *of the segment file*, so that a reader
can hand out array views on the file's memory map::

    value = head | pad | buffer 0 | gap | buffer 1 | ...

    head   off size field
             0    4 head_len: bytes of the head, this field included
             4    4 count: number of buffers, at least 1
             8  32n one entry per buffer, in order:
                      0 8 rel: where the buffer starts, counted from the
                           first buffer's start (a multiple of 64; 0 first)
                      8 8 stored length
                     16 8 raw length when compressed, else 0
                     24 4 crc32 of the stored bytes
                     28 1 codec of the buffer (ids of _codecs; 0 none)
                     29 3 reserved, 0
          8+32n     . the pickle stream (compressed when the record's codec
                      bits say so; the record's rawlen is then its raw length)
    pad    zeros up to the next multiple of 64 of the file offset
    gaps   zeros between buffers, up to the next ``rel``

The record's ``vcrc`` covers the head only (the entries carry each buffer's
own checksum); ``vlen`` covers everything, so the record's length is known
from its header as for any record. The pad depends on where the record lands,
so it is chosen when the record is packed, under the writer lock; every other
byte is computed before.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from . import _format as fmt
from .errors import CorruptionError

__all__ = [
    "ALIGN",
    "BUFFERS",
    "Buffered",
    "Entry",
    "OutOfBand",
    "decode_head",
    "encode",
    "first_buffer",
    "head_length",
    "pack_parts",
    "table_of",
    "value_parts",
]

#: Alignment of every buffer in the segment file (a cache line, and what
#: numpy's SIMD loops like).
ALIGN = 64
#: The bit of a record's codec field (flags bit 3) that marks a value with buffers.
BUFFERS = fmt.FLAG_BUFFERS >> 1
_HEAD = struct.Struct("<II")
_HEAD_LEN = struct.Struct("<I")
_ENTRY = struct.Struct("<QQQIB3x")
_MAX_COUNT = 1 << 20
_ZEROS = bytes(ALIGN)


class Entry(NamedTuple):
    """One buffer's entry in the head."""

    rel: int
    stored: int
    raw: int
    crc: int
    codec: int


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class OutOfBand(bytes):
    """What the object layer hands the engine for such a record: the bytes
    of the head (so ``zlib.crc32(value)`` is the record's ``vcrc``), plus
    the stored buffers that follow it."""

    buffers: list[Any]
    #: Bytes from the first buffer's start to the last one's end.
    span: int

    def snapshot(self) -> OutOfBand:
        """The same value with every buffer copied (for a transaction, which
        writes later: the caller may change its arrays meanwhile)."""
        copy = OutOfBand(self)
        copy.buffers = [bytes(b) for b in self.buffers]
        copy.span = self.span
        return copy


class Buffered:
    """A value with buffers, read back: the (decompressed) pickle stream and
    the buffers to unpickle it with (``pickle.loads(stream, buffers=...)``).

    Deliberately not bytes-like: ``pickle.loads`` refuses it at once with a
    ``TypeError``, before running anything, so the object layer's hot read
    path needs no check for it."""

    __slots__ = ("buffers", "stream")

    def __init__(self, stream: bytes, buffers: list[Any]) -> None:
        self.stream = stream
        self.buffers = buffers


def encode(stream: bytes, buffers: list[tuple[Any, int, int, int]]) -> OutOfBand:
    """The value of a record with buffers: ``stream`` is the stored pickle
    stream; each buffer is ``(stored bytes, raw length or 0, crc32, codec)``."""
    table = []
    rel = 0
    for data, raw, crc, codec in buffers:
        table.append(_ENTRY.pack(rel, len(data), raw, crc, codec))
        rel = _aligned(rel + len(data))
    last = buffers[-1][0]
    head_len = _HEAD.size + _ENTRY.size * len(buffers) + len(stream)
    value = OutOfBand(b"".join((_HEAD.pack(head_len, len(buffers)), *table, stream)))
    value.buffers = [data for data, _, _, _ in buffers]
    value.span = rel - _aligned(len(last)) + len(last)
    return value


def first_buffer(value_at: int, head_len: int) -> int:
    """File offset of the first buffer of a value that starts at ``value_at``."""
    return _aligned(value_at + head_len)


def table_of(head: bytes) -> tuple[list[Entry], bytes]:
    """``(entries, stored stream)`` of a head, its lengths checked against
    the head alone (see :func:`decode_head` for the full check).

    Raises:
        CorruptionError: the head's lengths are impossible.
    """
    if len(head) < _HEAD.size:
        raise CorruptionError("the buffer table is cut short")
    head_len, count = _HEAD.unpack_from(head)
    table_end = _HEAD.size + _ENTRY.size * count
    if not 0 < count <= _MAX_COUNT or head_len != len(head) or table_end > head_len:
        raise CorruptionError("the buffer table's lengths are impossible")
    entries = [
        Entry._make(_ENTRY.unpack_from(head, _HEAD.size + _ENTRY.size * i)) for i in range(count)
    ]
    return entries, head[table_end:]


def decode_head(head: bytes, value_at: int, vlen: int) -> tuple[list[Entry], bytes, int]:
    """``(entries, stored stream, file offset of the first buffer)`` of the
    head of a value at file offset ``value_at`` with ``vlen`` bytes; every
    length is checked against ``vlen`` before it is used.

    Raises:
        CorruptionError: the head does not describe a valid layout.
    """
    entries, stream = table_of(head)
    first = first_buffer(value_at, len(head))
    expected = 0
    for entry in entries:
        if entry.rel != expected:
            raise CorruptionError("the buffer table's offsets are not in order")
        expected = _aligned(entry.rel + entry.stored)
    last = entries[-1]
    if first + last.rel + last.stored != value_at + vlen:
        raise CorruptionError("the buffer table does not match the record's length")
    return entries, stream, first


def head_length(data: bytes) -> int:
    """The ``head_len`` field at the start of ``data`` (4 bytes at least)."""
    return int(_HEAD_LEN.unpack_from(data)[0])


def value_parts(value: OutOfBand, value_at: int) -> tuple[list[Any], int]:
    """``(parts, vlen)``: the bytes to write, in order, for ``value`` placed
    at file offset ``value_at`` (the head, its pad, the buffers and their
    gaps; buffers are written from the caller's memory, never joined)."""
    first = first_buffer(value_at, len(value))
    parts: list[Any] = [bytes(value) + _ZEROS[: first - value_at - len(value)]]
    at = first
    for data in value.buffers:
        if at & (ALIGN - 1):
            gap = ALIGN - (at & (ALIGN - 1))
            parts.append(_ZEROS[:gap])
            at += gap
        parts.append(data)
        at += len(data)
    return parts, at - value_at


def pack_parts(
    salt: int,
    txid: int,
    records: Any,
    start: int,
) -> tuple[list[Any], list[int], int]:
    """:func:`_format.pack_batch` for a batch that holds values with
    buffers: ``(parts to write in order, position of each record, bytes in
    all)``. The last record carries COMMIT. ``start`` may be an index
    location (segment slot in the high bits, ``_index``): the slot bits
    start far above bit 6, so alignment is unchanged by them."""
    parts: list[Any] = []
    positions: list[int] = []
    offset = start
    last = len(records) - 1
    for i, (kind, _, key, codec, value, vcrc, rawlen) in enumerate(records):
        positions.append(offset)
        value_at = offset + fmt.RECORD_HEADER.size + len(key)
        if codec & BUFFERS:
            value_bytes, vlen = value_parts(value, value_at)
        else:
            value_bytes, vlen = [value], len(value)
        head = fmt.pack_header(salt, txid, kind, i == last, codec, key, vlen, vcrc, rawlen)
        parts.append(head)
        parts += value_bytes
        offset = value_at + vlen
    return parts, positions, offset - start
