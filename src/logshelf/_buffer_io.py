"""Reading and checking the out-of-band buffers of a record (layout in
``_buffer_format``) in its segment file.

Reads with ``copy=True`` (shelve's default) fill a fresh, writable
``bytearray`` per buffer with one copy of the bytes, and check its checksum.
Reads with ``copy=False`` hand out read-only views on a memory map of the
buffer's own bytes: no copy and no checksum pass, so their cost does not grow
with the array; the map lives exactly as long as the last view made from it,
and since committed bytes of a segment are never changed or truncated, a
view stays valid and unchanged after ``close()``, a compaction (which
deletes the file: the map keeps it) or any other process's writes.
Compressed buffers are always copied (decompressed) and checked.
"""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Callable
from typing import Any

from . import _codecs
from . import _format as fmt
from ._buffer_format import Buffered, Entry, OutOfBand, decode_head, head_length, table_of
from ._crc import crc32
from ._fs import FileSystem
from .errors import CorruptionError

__all__ = ["check_value", "out_of_band", "pending_value", "read_buffered"]

_HEADER_SIZE = fmt.RECORD_HEADER.size
#: Buffers of this size or more are read into an anonymous map (see _fresh).
_ANONYMOUS_FROM = 1 << 20
_ANONYMOUS_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


def check_value(
    read: Callable[[int, int], bytes],
    crc_of: Callable[[int, int], int],
    value_at: int,
    vlen: int,
    vcrc: int,
) -> bool:
    """Do the head and every buffer of the value at file offset ``value_at``
    match their checksums, with zeros in the pad and gaps between them?
    ``read(offset, n)`` returns bytes of the file and ``crc_of(offset, n)``
    the crc32 of a range (a scan streams large ones)."""
    start = read(value_at, 4)
    if len(start) < 4:
        return False
    head_len = head_length(start)
    if not 8 <= head_len <= vlen:
        return False
    head = read(value_at, head_len)
    if len(head) != head_len or zlib.crc32(head) != vcrc:
        return False
    try:
        entries, _, first = decode_head(head, value_at, vlen)
    except CorruptionError:
        return False
    if any(read(at, n) != bytes(n) for at, n in _gaps(entries, value_at + head_len, first)):
        return False
    return all(crc_of(first + e.rel, e.stored) == e.crc for e in entries)


def _gaps(entries: list[Entry], head_end: int, first: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the pad after the head and of each gap
    between buffers: zero bytes by the format, covered by no checksum, so
    checked for zeros (damage there changes no value, but is damage)."""
    ranges = []
    at = head_end
    for entry in entries:
        start = first + entry.rel
        if start > at:
            ranges.append((at, start - at))
        at = start + entry.stored
    return ranges


def _layout(fs: FileSystem, fd: int, offset: int, head: bytes) -> tuple[list[Entry], bytes, int]:
    """Decode the head of the record at ``offset`` against its header, and
    check its pad and gaps (see :func:`_gaps`).

    Raises:
        CorruptionError: an impossible layout, or padding that is not zeros.
    """
    _, _, _, vlen, _, klen, _, _ = fmt.RECORD_HEADER.unpack(fs.pread(fd, _HEADER_SIZE, offset))
    value_at = offset + _HEADER_SIZE + klen
    entries, stream, first = decode_head(head, value_at, vlen)
    for at, n in _gaps(entries, value_at + len(head), first):
        if fs.pread(fd, n, at) != bytes(n):
            raise CorruptionError(f"the padding at offset {at} is not zeros")
    return entries, stream, first


def _mapped(fs: FileSystem, fd: int, at: int, length: int) -> memoryview:
    try:
        return fs.map_range(fd, at, length)
    except ValueError:  # mmap checks the file's size: never a SIGBUS later
        raise CorruptionError(f"a buffer at offset {at} extends past the end of the file") from None


def _fresh(size: int) -> Any:
    """Writable memory for a buffer: a bytearray, or for a large one an
    anonymous map with its pages made at once (``bytearray(n)`` writes n
    zeros, and touching a lazily mapped page one at a time costs more still;
    both take longer than the read that fills them). The memory is freed
    when the last array made from it dies, as a bytearray's would be."""
    if size < _ANONYMOUS_FROM:
        return bytearray(size)
    return mmap.mmap(-1, size, flags=_ANONYMOUS_FLAGS)


def _stored(fs: FileSystem, fd: int, entry: Entry, at: int, copy: bool) -> Any:
    """One buffer's stored bytes: read into fresh memory and checked, or
    (``copy=False``, uncompressed) mapped without a pass over them."""
    if entry.codec:
        stored = fs.pread(fd, entry.stored, at)
        if len(stored) != entry.stored or crc32(stored) != entry.crc:
            raise CorruptionError(f"buffer checksum mismatch at offset {at}")
        return stored
    if not copy:
        return _mapped(fs, fd, at, entry.stored)
    buffer = _fresh(entry.stored)
    view = memoryview(buffer)
    if fs.read_into(fd, view, at) != entry.stored or crc32(view) != entry.crc:
        raise CorruptionError(f"buffer checksum mismatch at offset {at}")
    return buffer


def read_buffered(
    fs: FileSystem,
    fd: int,
    offset: int,
    codec: int,
    head: bytes,
    rawlen: int,
    copy: bool,
    check: Callable[[bytes, list[Any]], bytes] | None = None,
) -> Buffered:
    """The value with buffers of the record at ``offset``, whose verified
    head is ``head``: its stream decompressed with ``codec`` (the record's
    codec id, 0-3), its buffers copied and checked, or (``copy=False``)
    read-only views of uncompressed buffers on the file's memory.

    ``check(head, stored buffers)`` (a signed store's) runs before anything
    is decompressed and returns the head without its tag.

    Raises:
        CorruptionError: the head or a buffer does not check (the message
            names the file offset; callers add the key and file).
    """
    entries, stream, first = _layout(fs, fd, offset, head)
    stored = [_stored(fs, fd, entry, first + entry.rel, copy) for entry in entries]
    if check is not None:
        stream = stream[: len(stream) - (len(head) - len(check(head, stored)))]
    if codec:
        stream = _codecs.decompress(codec, stream, rawlen)
    buffers = [
        bytearray(_codecs.decompress(entry.codec, data, entry.raw)) if entry.codec else data
        for entry, data in zip(entries, stored, strict=True)
    ]
    return Buffered(bytes(stream), buffers)


def out_of_band(fs: FileSystem, fd: int, offset: int, head: bytes) -> OutOfBand:
    """The stored value of the record at ``offset`` (verified head ``head``)
    as it was given to the engine, to be written again (compaction,
    salvage): its buffers checked, as views on maps of their own, so they
    are copied on without being read into memory first.

    Raises:
        CorruptionError: a buffer does not match its checksum.
    """
    entries, _, first = _layout(fs, fd, offset, head)
    views = []
    for entry in entries:
        at = first + entry.rel
        view = _mapped(fs, fd, at, entry.stored)
        if crc32(view) != entry.crc:
            raise CorruptionError(f"buffer checksum mismatch at offset {at}")
        views.append(view)
    value = OutOfBand(head)
    value.buffers = views
    last = entries[-1]
    value.span = last.rel + last.stored
    return value


def pending_value(value: OutOfBand, codec: int, rawlen: int, tag: int = 0) -> Buffered:
    """A value with buffers not written yet (a transaction's), as a read
    returns it: the stream (less a signature's ``tag`` bytes) decompressed,
    each buffer a fresh copy."""
    entries, stream = table_of(value)
    stream = stream[: len(stream) - tag]
    if codec:
        stream = _codecs.decompress(codec, stream, rawlen)
    buffers: list[Any] = []
    for entry, data in zip(entries, value.buffers, strict=True):
        raw = _codecs.decompress(entry.codec, data, entry.raw) if entry.codec else data
        buffers.append(bytearray(raw))
    return Buffered(bytes(stream), buffers)
