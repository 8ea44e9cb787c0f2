"""Every byte the Redis backend stores: key names and value records
(``docs/format.md`` §9). Pure functions, no ``redis`` import.

A namespace ``N`` owns the Redis keys ``logshelf:{N}:...``; the braces make
``N`` the hash tag, so a namespace's keys share one Cluster hash slot (and
one Lua script may touch them all). A value record carries the codec id,
the raw length and two CRC-32s, as a record on disk does: a flipped bit, a
record copied under another key or a foreign writer's bytes raise
:class:`~logshelf.CorruptionError` naming the key instead of being loaded.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

from . import _format as fmt
from .errors import CorruptionError, FormatError

__all__ = [
    "CHUNKED",
    "FORMAT",
    "HEADER",
    "INLINE",
    "Keys",
    "Pointer",
    "check_joined",
    "check_namespace",
    "glob_escape",
    "pack_inline",
    "pack_pointer",
    "unpack",
]

#: ``format`` field of the namespace's meta hash.
FORMAT = 1
#: Record kinds (byte 0).
INLINE = 0xB1
CHUNKED = 0xB2
#: kind, flags, reserved u16, rawlen u32, vlen u64, vcrc u32, hcrc u32.
HEADER = struct.Struct("<BBHIQII")
_COVERED = 20  # header bytes covered by hcrc (all but hcrc itself)
#: A chunked record's body: 32 ASCII hex digits of the version, then the
#: chunk count as 10 ASCII decimal digits (readable by the Lua scripts).
POINTER_BODY = 42
_CODEC_SHIFT = 1
_RESERVED_FLAGS = 0xFF & ~(fmt.CODEC_MASK | fmt.FLAG_SIGNED)
_CODEC_FIELD = (fmt.CODEC_MASK | fmt.FLAG_SIGNED) >> _CODEC_SHIFT
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
_GLOB = re.compile(rb"([*?\[\]\\])")


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is 1-128 characters of ``A-Z a-z 0-9 _ . : -``.

    Raises:
        ValueError: anything else (braces would break the hash tag).
    """
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(
            f"namespace must be 1 to 128 characters of A-Z a-z 0-9 _ . : -, not {namespace!r}"
        )
    return namespace


def glob_escape(text: bytes) -> bytes:
    """``text`` with SCAN MATCH's special characters escaped."""
    return _GLOB.sub(rb"\\\1", text)


class Keys:
    """The Redis key names of one namespace."""

    __slots__ = ("base", "lock", "meta", "value_prefix")

    def __init__(self, namespace: str) -> None:
        self.base = f"logshelf:{{{check_namespace(namespace)}}}:".encode()
        self.meta = self.base + b"meta"
        self.lock = self.base + b"lock"
        self.value_prefix = self.base + b"v:"

    def value(self, key_bytes: bytes) -> bytes:
        return self.value_prefix + key_bytes

    def fence(self, key_bytes: bytes) -> bytes:
        """The last fencing token that wrote ``key`` (a cache's entries)."""
        return self.base + b"f:" + key_bytes

    def flight(self, key_bytes: bytes) -> bytes:
        """The single-flight lock of ``key`` (a cache's memoized calls)."""
        return self.base + b"flight:" + key_bytes

    @property
    def fence_counter(self) -> bytes:
        """The counter fencing tokens are drawn from (INCR)."""
        return self.base + b"fences"

    def chunk(self, version: bytes, index: int) -> bytes:
        return self.base + b"c:" + version + b":" + str(index).encode()

    def all_pattern(self) -> bytes:
        """SCAN MATCH pattern of every key of the namespace."""
        return glob_escape(self.base) + b"*"

    def value_pattern(self, prefix: bytes = b"") -> bytes:
        """SCAN MATCH pattern of the value records whose key starts with ``prefix``."""
        return glob_escape(self.value_prefix + prefix) + b"*"


class Pointer(NamedTuple):
    """A chunked value: where its chunks are and what they must add up to."""

    version: bytes
    chunks: int
    codec: int
    rawlen: int
    vlen: int
    vcrc: int


def _hcrc(header: bytes, key_bytes: bytes, body: bytes = b"") -> int:
    return zlib.crc32(body, zlib.crc32(key_bytes, zlib.crc32(header)))


def _check_codec(codec: int, rawlen: int, vlen: int) -> None:
    if not 0 <= codec <= _CODEC_FIELD or codec & 4 or not 0 <= rawlen <= fmt.MAX_RAWLEN:
        raise ValueError(f"bad codec {codec} or raw length {rawlen}")
    if vlen >= 1 << 64:  # pragma: no cover - no such value fits in memory
        raise ValueError("value too long")


def pack_inline(key_bytes: bytes, codec: int, data: bytes, vcrc: int, rawlen: int) -> bytes:
    """The record of a value stored whole under its key."""
    _check_codec(codec, rawlen, len(data))
    head = HEADER.pack(INLINE, codec << _CODEC_SHIFT, 0, rawlen, len(data), vcrc, 0)
    hcrc = _hcrc(head[:_COVERED], key_bytes)
    return head[:_COVERED] + hcrc.to_bytes(4, "little") + data


def pack_pointer(key_bytes: bytes, pointer: Pointer) -> bytes:
    """The record of a chunked value: a header and the pointer body."""
    _check_codec(pointer.codec, pointer.rawlen, pointer.vlen)
    if len(pointer.version) != 32 or not 0 < pointer.chunks < 10**10:
        raise ValueError(f"bad chunk version {pointer.version!r} or count {pointer.chunks}")
    flags = pointer.codec << _CODEC_SHIFT
    head = HEADER.pack(CHUNKED, flags, 0, pointer.rawlen, pointer.vlen, pointer.vcrc, 0)
    body = pointer.version + b"%010d" % pointer.chunks
    hcrc = _hcrc(head[:_COVERED], key_bytes, body)
    return head[:_COVERED] + hcrc.to_bytes(4, "little") + body


def unpack(
    record: bytes, key: str, key_bytes: bytes, where: str
) -> tuple[int, int, bytes] | Pointer:
    """``(codec, rawlen, stored value)`` of an inline record (its value's
    checksum verified), or the :class:`Pointer` of a chunked one.

    Raises:
        CorruptionError: a checksum or a length does not match; the message
            names the key and ``where`` (the Redis key and server).
        FormatError: a valid record that sets a reserved bit (a newer logshelf).
    """
    if len(record) < HEADER.size:
        raise CorruptionError(
            f"record of key {key!r} at {where} is {len(record)} bytes, shorter than its header"
        )
    kind, flags, reserved, rawlen, vlen, vcrc, hcrc = HEADER.unpack_from(record)
    body = record[HEADER.size :]
    covered = record[:_COVERED]
    if kind == CHUNKED:
        if hcrc != _hcrc(covered, key_bytes, body) or len(body) != POINTER_BODY:
            raise CorruptionError(
                f"header checksum mismatch in the record of key {key!r} at {where}"
            )
    elif kind != INLINE or hcrc != _hcrc(covered, key_bytes):
        raise CorruptionError(
            f"header checksum mismatch in the record of key {key!r} at {where} "
            "(damaged, or written under another key or by another program)"
        )
    if flags & _RESERVED_FLAGS or reserved:
        raise FormatError(f"record of key {key!r} at {where} was written by a newer logshelf")
    codec = (flags & (fmt.CODEC_MASK | fmt.FLAG_SIGNED)) >> _CODEC_SHIFT
    if kind == CHUNKED:
        count = body[32:]
        if not count.isdigit():
            raise CorruptionError(f"bad chunk count in the record of key {key!r} at {where}")
        return Pointer(body[:32], int(count), codec, rawlen, vlen, vcrc)
    if len(body) != vlen or zlib.crc32(body) != vcrc:
        raise CorruptionError(
            f"value checksum mismatch in the record of key {key!r} at {where} "
            f"({len(body)} bytes, header says {vlen})"
        )
    return codec, rawlen, body


def check_joined(pointer: Pointer, data: bytes, key: str, where: str) -> bytes:
    """The joined chunks of ``pointer``, verified against its length and checksum."""
    if len(data) != pointer.vlen or zlib.crc32(data) != pointer.vcrc:
        raise CorruptionError(
            f"value checksum mismatch in the chunks of key {key!r} at {where} "
            f"({len(data)} bytes, pointer says {pointer.vlen})"
        )
    return data
