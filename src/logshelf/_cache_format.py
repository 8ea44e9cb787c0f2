"""Every byte the cache layer adds to a store, in one place.

A cache is an ordinary store (``_format.py``) whose values are *entries*: a
small header, then the pickled (and maybe compressed) value. The cache also
keeps two files of its own in the store directory. ``docs/format.md`` §8 is
the normative description and must be kept in step with this module. Nothing
here does I/O.

The store's own format module does not know about entries: the cache is a
layer above the bytes engine, and the engine never looks inside a value.

All integers and floats are little-endian.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from typing import NamedTuple

from ._buffer_format import Buffered
from .errors import CorruptionError

__all__ = [
    "ACCESS_HEADER",
    "ACCESS_NAME",
    "ACCESS_SLOTS",
    "ENTRY_HEADER",
    "FLIGHTS_NAME",
    "Entry",
    "Head",
    "access_slot",
    "decode_entry",
    "decode_oob",
    "encode_access_header",
    "encode_entry",
    "encode_oob",
    "flight_offset",
    "is_dead",
    "is_expired",
    "peek_entry",
]

# --------------------------------------------------------------------------
# Entry: the value of every record of a cache.
#
#   off size field
#     0    4 magic b"LSC\x01" (the last byte is the entry format version)
#     4    1 codec of the payload (ids of _codecs: 0 = stored as is)
#     5    1 serializer of the payload: 0 = a pickle; 1 = a pickle whose
#            large buffers (numpy arrays) are out of band, see PAYLOAD_OOB
#     6    2 header length H: the payload starts at offset H
#     8    8 stored_at: float64, seconds since the epoch
#    16    8 expires_at: float64, 0 = never. Past it the entry is invisible.
#    24    8 keep_until: float64, 0 = never; >= expires_at. Until then a
#            memoized function may serve it stale while one caller refreshes.
#    32    4 cost: float32, seconds the value took to compute (0 when set)
#    36    4 rawlen: payload length before compression (0 when codec 0)
#    40    2 number of tags T
#    42    2 length F of the function name
#    44  ... T tags, each a u16 length and UTF-8 bytes; then F bytes of name
#     H  ... payload
#
# The record's own checksums (the engine's) cover all of it; the header is
# not compressed, so expiry and tags are read without decompressing.
#
# Payload of serializer 1 (after decompression):
#     0    4 number of buffers B
#     4  8*B length of each buffer
#   ...    8 length S of the pickle stream
#   ...    S the pickle stream (protocol 5), then the B buffers back to back
# Loading passes the buffers as read-only views of the entry's bytes, so an
# array comes back without a copy, read-only, on an immutable base.
ENTRY_MAGIC = b"LSC\x01"
SERIALIZER_PICKLE = 0
SERIALIZER_PICKLE_OOB = 1
_SERIALIZERS = (SERIALIZER_PICKLE, SERIALIZER_PICKLE_OOB)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
ENTRY_HEADER = struct.Struct("<4sBBHdddfIHH")
_U16 = struct.Struct("<H")
assert ENTRY_HEADER.size == 44


class Entry(NamedTuple):
    """A decoded entry header and its (still encoded) payload."""

    codec: int
    serializer: int
    stored_at: float
    expires_at: float
    keep_until: float
    cost: float
    rawlen: int
    tags: tuple[str, ...]
    func: str
    payload: memoryview


def encode_entry(
    payload: bytes,
    *,
    codec: int = 0,
    serializer: int = SERIALIZER_PICKLE,
    rawlen: int = 0,
    stored_at: float,
    expires_at: float = 0.0,
    keep_until: float = 0.0,
    cost: float = 0.0,
    tags: tuple[str, ...] = (),
    func: str = "",
) -> bytes:
    """The bytes of one entry. ``tags`` and ``func`` are at most 65,535
    UTF-8 bytes each, and at most 65,535 tags (ValueError beyond)."""
    parts = []
    for tag in tags:
        raw = tag.encode("utf-8")
        parts.append(_U16.pack(_check_len(len(raw), "a tag")) + raw)
    name = func.encode("utf-8")
    tail = b"".join(parts) + name
    head_len = _check_len(ENTRY_HEADER.size + len(tail), "the tags and function name")
    head = ENTRY_HEADER.pack(
        ENTRY_MAGIC,
        codec,
        serializer,
        head_len,
        stored_at,
        expires_at,
        keep_until,
        cost,
        rawlen,
        _check_len(len(tags), "the number of tags"),
        _check_len(len(name), "the function name"),
    )
    return head + tail + payload


def _check_len(n: int, what: str) -> int:
    if n > 0xFFFF:
        raise ValueError(f"{what} must fit in 65,535 bytes, not {n}")
    return n


class Head(NamedTuple):
    """The fixed part of an entry header: what a read needs."""

    codec: int
    serializer: int
    head_len: int
    stored_at: float
    expires_at: float
    keep_until: float
    cost: float
    rawlen: int


_unpack_head = ENTRY_HEADER.unpack_from
# The C-level tuple constructor: a NamedTuple's own __new__ is Python code,
# a third of the header's decoding time on the hit path.
_new_head = functools.partial(tuple.__new__, Head)


def peek_entry(data: bytes) -> Head | None:
    """The fixed header of an entry, or None when ``data`` is not one of this
    version (then :func:`decode_entry` says why). The read path's decoder:
    no tags, no name, no copies."""
    try:
        magic, codec, serializer, head_len, stored, expires, keep, cost, rawlen, _, _ = (
            _unpack_head(data)
        )
    except (struct.error, TypeError):  # TypeError: a value with buffers, never an entry
        return None
    if magic != ENTRY_MAGIC or serializer not in _SERIALIZERS or head_len > len(data):
        return None
    return _new_head((codec, serializer, head_len, stored, expires, keep, cost, rawlen))


def decode_entry(data: bytes | Buffered, key: str) -> Entry:
    """Decode an entry; the engine has already checked its checksums.

    Raises:
        CorruptionError: ``data`` is not a cache entry (a value written by
            :func:`logshelf.open` into a cache directory, or a newer format).
    """
    try:
        magic, codec, serializer, head_len, stored, expires, keep, cost, rawlen, ntags, nlen = (
            ENTRY_HEADER.unpack_from(data)  # type: ignore[arg-type]
        )
    except (struct.error, TypeError):  # TypeError: a value with buffers
        magic = b""
    if (
        isinstance(data, Buffered)
        or magic != ENTRY_MAGIC
        or serializer not in _SERIALIZERS
        or head_len > len(data)
    ):
        raise CorruptionError(
            f"the value of key {key!r} is not a cache entry of this version "
            "(written by logshelf.open rather than logshelf.Cache, or by a newer logshelf)"
        )
    view = memoryview(data)
    tags = []
    at = ENTRY_HEADER.size
    for _ in range(ntags):
        (n,) = _U16.unpack_from(data, at)
        tags.append(bytes(view[at + 2 : at + 2 + n]).decode("utf-8"))
        at += 2 + n
    func = bytes(view[at : at + nlen]).decode("utf-8")
    if at + nlen != head_len:
        raise CorruptionError(f"the header of the cache entry of key {key!r} is inconsistent")
    return Entry(
        codec, serializer, stored, expires, keep, cost, rawlen, tuple(tags), func, view[head_len:]
    )


def is_expired(entry: Entry | Head, now: float) -> bool:
    """Past its expiry: invisible (a memoized function may still serve it
    stale until ``keep_until``)."""
    return bool(entry.expires_at) and now >= entry.expires_at


def is_dead(entry: Entry | Head, now: float) -> bool:
    """Past its expiry and any stale window: of no use to anyone."""
    return bool(entry.expires_at) and now >= max(entry.expires_at, entry.keep_until)


def encode_oob(stream: bytes, buffers: list[memoryview]) -> bytes:
    """The payload of serializer 1: the buffer table, the stream, the buffers."""
    table = _U32.pack(len(buffers)) + b"".join(_U64.pack(b.nbytes) for b in buffers)
    return b"".join([table, _U64.pack(len(stream)), stream, *buffers])


def decode_oob(payload: bytes | memoryview) -> tuple[memoryview, list[memoryview]]:
    """The pickle stream and the buffers of a serializer-1 payload, as views
    of ``payload`` (read-only when ``payload`` is ``bytes``).

    Raises:
        CorruptionError: the table does not add up to the payload's length.
    """
    view = memoryview(payload)
    try:
        (count,) = _U32.unpack_from(view, 0)
        at = 4 + 8 * count
        lengths = [_U64.unpack_from(view, 4 + 8 * i)[0] for i in range(count)]
        (stream_len,) = _U64.unpack_from(view, at)
    except struct.error:
        raise CorruptionError("a cache entry's buffer table is truncated") from None
    at += 8
    if at + stream_len + sum(lengths) != len(view):
        raise CorruptionError("a cache entry's buffer table does not match its length")
    stream = view[at : at + stream_len]
    at += stream_len
    buffers = []
    for n in lengths:
        buffers.append(view[at : at + n])
        at += n
    return stream, buffers


# --------------------------------------------------------------------------
# CACHE.ACCESS: when each entry was last read, shared through memory maps.
#
#   off size field
#     0    8 magic b"LSHFACC\0"
#     8    4 number of slots N (a power of two)
#    12   52 reserved, zero
#    64  4*N slots: u32 seconds since the epoch of the last read of any key
#            whose slot this is (0 = never)
#
# A key's slot is crc32 of its UTF-8 bytes, modulo N. Keys that share a slot
# share a time: a collision can only make a key look more recently read.
ACCESS_NAME = "CACHE.ACCESS"
ACCESS_MAGIC = b"LSHFACC\x00"
ACCESS_HEADER = struct.Struct("<8sI52x")
ACCESS_SLOTS = 1 << 20
assert ACCESS_HEADER.size == 64


def encode_access_header(slots: int = ACCESS_SLOTS) -> bytes:
    return ACCESS_HEADER.pack(ACCESS_MAGIC, slots)


def access_slot(key: str, slots: int) -> int:
    """The slot of ``key`` in a map of ``slots`` slots (a power of two)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (slots - 1)


# --------------------------------------------------------------------------
# CACHE.FLIGHTS: an empty file; only byte-range locks are taken on it, never
# data written. A computation of key K holds an exclusive lock on the byte at
# flight_offset(K), so other processes wait for it, and the kernel releases
# it if the process dies.
FLIGHTS_NAME = "CACHE.FLIGHTS"


def flight_offset(key: str) -> int:
    """A 48-bit offset for ``key``'s flight lock: two keys share one with
    probability 2**-48 (they would then compute one after the other)."""
    raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).digest()
    return int.from_bytes(raw, "little")
