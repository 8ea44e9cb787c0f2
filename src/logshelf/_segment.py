"""One segment file: create, open, append, read one record, scan.

A segment is append-only. Its bytes are never modified; the file is only ever
truncated back to the end of its last committed batch (cutting a torn tail or
a failed write), so every byte a reader has seen committed stays valid. That
invariant is what makes it safe to mmap committed bytes for reading.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import zlib
from array import array
from collections.abc import Callable

from . import _format as fmt
from ._fs import FileSystem
from ._segment_scan import SCAN_CHUNK, ScannedRecord, SegmentScan
from .errors import CorruptionError

__all__ = ["ScannedRecord", "Segment", "SegmentScan", "check_tail"]

_RECORD = fmt.RECORD_HEADER
_unpack_from = _RECORD.unpack_from
_crc32 = zlib.crc32
_HEADER_SIZE = _RECORD.size
_BUFFERS = fmt.FLAG_BUFFERS
# The first field of a value with buffers: its head's length (_buffer_format).
_HEAD_LEN = struct.Struct("<I")
# A read first fetches this many bytes in the hope that the whole record fits.
_SPECULATIVE_READ = 512
# Remap once this many committed bytes lie beyond the mapping; reads of the
# newest records use pread meanwhile, so frequent small writes don't cause a
# remap (and its page faults) each.
_REMAP_STEP = 256 << 10
# ... unless the newest records are read this often: then a remap (tens of
# microseconds) costs less than the preads it saves (about 1.5 us each).
_REMAP_AFTER_PREADS = 64
# A record may start wherever its kind byte (offset 30) and flags byte (31) look
# plausible: used to look for valid records after damage.
_CANDIDATE = re.compile(rb"[\xa1\xa2\xa4][\x00-\x1f]", re.DOTALL)


class Segment:
    """An open segment file. Not thread-safe on its own; the engine serializes."""

    def __init__(
        self,
        fs: FileSystem,
        path: str,
        fd: int,
        header: fmt.SegmentHeader,
        writable: bool,
    ) -> None:
        self.fs = fs
        self.path = path
        self.fd = fd
        self.id = header.segment_id
        self.salt = header.salt
        self.base_txid = header.base_txid
        self.writable = writable
        # Bytes known to be committed (never truncated away): safe to map.
        self.readable_end = fmt.SEGMENT_HEADER.size
        #: A read-only map of the committed bytes ``[0, mapped_end)``, or None.
        #: Public for the engine's hot read path, which only reads it; this
        #: class alone replaces it (as ``readable_end`` grows) and closes it.
        self.mapping: mmap.mmap | None = None
        self.mapped_end = 0
        #: Reads since the last remap that missed the mapping.
        self._preads = 0
        #: Where the writeback the writer last started ends (start_writeback).
        self.writeback_from = 0

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def create(
        cls, fs: FileSystem, directory: str, segment_id: int, base_txid: int, mode: int = 0o666
    ) -> Segment:
        """Create (or overwrite an unreferenced leftover of) a segment file and
        make its header durable. The caller syncs the directory."""
        path = os.path.join(directory, fmt.segment_name(segment_id))
        data = fmt.encode_segment_header(segment_id, base_txid)
        fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, mode)
        try:
            fs.append(fd, data)
            fs.fsync(fd)
            header = fmt.decode_segment_header(data, path)
        except BaseException:
            fs.close(fd)
            raise
        return cls(fs, path, fd, header, writable=True)

    @classmethod
    def open(cls, fs: FileSystem, directory: str, segment_id: int, writable: bool) -> Segment:
        """Open an existing segment and check its header.

        Raises:
            FileNotFoundError: the file is missing.
            FormatError, CorruptionError: the header is not a valid segment header
                with the expected id.
        """
        path = os.path.join(directory, fmt.segment_name(segment_id))
        flags = (os.O_RDWR | os.O_APPEND) if writable else os.O_RDONLY
        fd = fs.open(path, flags)
        try:
            header = fmt.decode_segment_header(fs.pread(fd, fmt.SEGMENT_HEADER.size, 0), path)
            if header.segment_id != segment_id:
                raise CorruptionError(
                    f"{path}: header names segment {header.segment_id}, expected {segment_id}"
                )
        except BaseException:
            fs.close(fd)
            raise
        return cls(fs, path, fd, header, writable)

    def close(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
            self.mapping = None
            self.mapped_end = 0
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)

    # -- writing -----------------------------------------------------------

    def size(self) -> int:
        return self.fs.size(self.fd)

    def append(self, data: bytes) -> None:
        """Append bytes at the end of the file (the caller holds the writer lock)."""
        self.fs.append(self.fd, data)

    def start_writeback(self, end: int) -> None:
        """Start the kernel writing ``[writeback_from, end)`` to disk, without
        waiting (``FileSystem.start_writeback``): the writer does it every
        ``_writer._WRITE_BEHIND`` bytes, so that the sync of a rollover or a
        close finds little left to write (a rollover of a 128 MiB segment
        written with ``durability="none"`` took 110-150 ms here, 2-3 ms
        with it)."""
        start, self.writeback_from = self.writeback_from, end
        try:
            self.fs.start_writeback(self.fd, start, end - start)
        except OSError:
            pass  # a hint only: the sync that must follow reports any failure

    def truncate(self, length: int) -> None:
        """Cut the file back to ``length``, never below committed data."""
        if length < self.readable_end:
            raise AssertionError(
                f"refusing to truncate {self.path} to {length}, below committed "
                f"end {self.readable_end}"
            )
        self.fs.truncate(self.fd, length)

    def sync(self) -> None:
        self.fs.datasync(self.fd)

    # -- reading -----------------------------------------------------------

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if end <= self.mapped_end:
            assert self.mapping is not None
            return self.mapping[offset:end]
        if end <= self.readable_end and self.readable_end - self.mapped_end >= _REMAP_STEP:
            self._remap()
            assert self.mapping is not None
            return self.mapping[offset:end]
        return self.fs.pread(self.fd, length, offset)

    def _remap(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
            self.mapping = None
            self.mapped_end = 0
        self._preads = 0
        if self.readable_end > 0:
            self.mapping = self.fs.map(self.fd, self.readable_end)
            self.mapped_end = self.readable_end

    def read_raw(self, offset: int) -> tuple[int, int, int, int, int, bytes, bytes]:
        """``(kind, txid, flags, rawlen, vcrc, key, stored value)`` of the record
        at ``offset``, both checksums verified: what compaction copies and
        every read of a value goes through. Slices the mapping of committed
        bytes when it can, else reads with ``pread``.

        Raises:
            CorruptionError: the record fails a checksum or its lengths are
                impossible (the message names file and offset; callers add the key).
        """
        if self.readable_end - self.mapped_end >= _REMAP_STEP:
            self._remap()
        elif self.mapped_end < offset + _HEADER_SIZE <= self.readable_end:
            self._preads += 1
            if self._preads >= _REMAP_AFTER_PREADS:
                self._remap()
        m = self.mapping
        if m is not None and offset + _HEADER_SIZE <= self.mapped_end:
            record = self.verified(m, offset, self.mapped_end, offset)
            if record is not None:
                return record
        data = self.fs.pread(self.fd, _SPECULATIVE_READ, offset)
        if len(data) >= _HEADER_SIZE:
            _, _, _, vlen, _, klen, _, flags = _unpack_from(data)
            total = _HEADER_SIZE + klen + vlen
            if flags & _BUFFERS and total > len(data):
                # Only the head is read here: the buffers are read (or
                # mapped) by _buffer_io, as the caller asks.
                keyend = _HEADER_SIZE + klen
                if keyend + _HEAD_LEN.size > len(data):
                    data = self.fs.pread(self.fd, keyend + _HEAD_LEN.size, offset)
                if len(data) >= keyend + _HEAD_LEN.size:
                    total = keyend + min(vlen, _HEAD_LEN.unpack_from(data, keyend)[0])
            if total > len(data):
                # Bound a (possibly damaged) length by the file before reading.
                if offset + total > self.size():
                    raise CorruptionError(
                        f"{self.path}: record at offset {offset} claims {total} bytes, "
                        "past the end of the file"
                    )
                data = self.fs.pread(self.fd, total, offset)
            record = self.verified(data, 0, len(data), offset)
            if record is not None:
                return record
        raise CorruptionError(f"{self.path}: record at offset {offset} is cut short")

    def read_record(self, offset: int) -> tuple[fmt.RecordHeader, bytes, bytes]:
        """:meth:`read_raw` with the whole header decoded (for inspection)."""
        _, _, _, _, _, key, value = self.read_raw(offset)
        header = fmt.RecordHeader._make(_unpack_from(self._read(offset, _HEADER_SIZE)))
        return header, key, value

    def verified(
        self, buf: bytes | mmap.mmap, at: int, available: int, offset: int
    ) -> tuple[int, int, int, int, int, bytes, bytes] | None:
        """The one check of a record's checksums, for every read path: the
        record at ``at`` in ``buf`` (the map of committed bytes, or bytes read
        at file offset ``offset``) as :meth:`read_raw` returns it, or None
        when it does not end within the first ``available`` bytes of ``buf``.

        Raises:
            CorruptionError: a checksum fails (naming file and offset).
        """
        hcrc, vcrc, txid, vlen, rawlen, klen, kind, flags = _unpack_from(buf, at)
        keyend = at + _HEADER_SIZE + klen
        end = keyend + vlen
        if flags & _BUFFERS:
            if keyend + _HEAD_LEN.size > available:
                return None
            if _crc32(buf[at + 4 : keyend], self.salt) != hcrc:
                raise self._header_mismatch(offset)
            head_len = _HEAD_LEN.unpack_from(buf, keyend)[0]
            if not _HEAD_LEN.size <= head_len <= vlen:
                raise CorruptionError(
                    f"{self.path}: the record at offset {offset} has an impossible buffer table"
                )
            # The value's checksum covers its head; the buffers carry their own.
            end = keyend + head_len
        if end > available:
            return None
        if _crc32(buf[at + 4 : keyend], self.salt) != hcrc:
            raise self._header_mismatch(offset)
        value = buf[keyend:end]
        if _crc32(value) != vcrc:
            raise CorruptionError(
                f"{self.path}: value checksum mismatch in the record at offset {offset}"
            )
        # Slices of bytes and of an mmap are bytes already: no copy to make.
        return kind, txid, flags, rawlen, vcrc, buf[at + _HEADER_SIZE : keyend], value

    def _header_mismatch(self, offset: int) -> CorruptionError:
        return CorruptionError(f"{self.path}: record header checksum mismatch at offset {offset}")

    def read_value(self, offset: int, key: bytes) -> tuple[int, bytes, int]:
        """``(codec, stored value, rawlen)`` of the PUT record of ``key`` at
        ``offset``, both checksums verified.

        The record's key is compared with ``key``: an index entry that points
        at another key's record (records moved under an intact hint, or any
        bug) is reported, never answered with that record's value.

        Raises:
            CorruptionError: a checksum fails, the lengths are impossible, the
                record is not a PUT, or it holds another key.
        """
        kind, _, flags, rawlen, _, stored_key, value = self.read_raw(offset)
        if kind != fmt.KIND_PUT or stored_key != key:
            raise CorruptionError(
                f"{self.path}: offset {offset} does not hold the value of {key!r} "
                "(records moved or the index is out of date)"
            )
        return fmt.codec_of(flags), value, rawlen

    def make_hint(
        self,
        covered: int,
        max_txid: int,
        keys: list[str],
        offsets: array[int],
        deleted: list[str],
        seal_next: int = 0,
    ) -> fmt.Hint:
        """A hint of this segment, with the header checksum of the record at
        its largest offset so that a reader can tell whether records moved."""
        check_offset = max(offsets) if offsets else 0
        check_hcrc = 0
        if offsets:
            head = self._read(check_offset, 4)
            check_hcrc = int.from_bytes(head, "little") if len(head) == 4 else 0
        return fmt.Hint(
            self.id,
            self.salt,
            covered,
            max_txid,
            keys,
            offsets,
            deleted,
            seal_next,
            check_offset,
            check_hcrc,
        )

    def hint_matches(self, hint: fmt.Hint) -> bool:
        """Does the record the hint checks sit where the hint says, intact?

        Bytes duplicated into or removed from the covered range move the
        records after them; the hint's offsets would then name other records.
        The check record (a header checksum covers txid, key and salt, so no
        other record has the same one) is the last put the hint lists, so any
        such move before it is seen here.
        """
        if not hint.put_offsets:
            return True
        offset = hint.check_offset
        if offset < fmt.SEGMENT_HEADER.size or offset + _HEADER_SIZE > hint.covered:
            return False
        try:
            self.read_key(offset)  # the header checksum is valid over header and key
        except CorruptionError:
            return False
        return int.from_bytes(self._read(offset, 4), "little") == hint.check_hcrc

    def record_size(self, offset: int) -> int:
        """Header, key and value bytes of the record at ``offset``, from its
        header alone (unverified: for estimates such as dead space)."""
        head = self._read(offset, _HEADER_SIZE)
        if len(head) < _HEADER_SIZE:
            return _HEADER_SIZE
        _, _, _, vlen, _, klen, _, _ = _unpack_from(head)
        return int(_HEADER_SIZE + klen + vlen)

    def read_key(self, offset: int) -> bytes:
        """The key bytes of the (header-verified) record at ``offset``."""
        data = self._read(offset, _SPECULATIVE_READ)
        if len(data) < _HEADER_SIZE:
            raise CorruptionError(f"{self.path}: record at offset {offset} is cut short")
        header = fmt.RecordHeader._make(_RECORD.unpack_from(data))
        keyend = _HEADER_SIZE + header.klen
        if keyend > len(data):
            data = self._read(offset, keyend)
        if (
            len(data) < keyend
            or fmt.record_hcrc(data, data[_HEADER_SIZE:keyend], self.salt) != header.hcrc
        ):
            raise self._header_mismatch(offset)
        return bytes(data[_HEADER_SIZE:keyend])

    def scan(
        self,
        start: int,
        limit: int,
        last_txid: int,
        verify_values: bool = True,
        floor: Callable[[], int | None] | None = None,
    ) -> SegmentScan:
        """Scan records in ``[start, limit)``; see :class:`SegmentScan`."""
        return SegmentScan(self, start, limit, last_txid, verify_values, floor)

    def find_valid_record(self, start: int, limit: int) -> int | None:
        """Offset of the first complete record with a valid header checksum in
        ``[start, limit)``, or None. Tells damage in the middle of a segment
        (valid records follow) from a torn tail (nothing valid follows)."""
        chunk_start = start
        overlap = _HEADER_SIZE
        while chunk_start < limit:
            # Candidates are located by their kind/flags bytes at offset 30.
            data = self.fs.pread(self.fd, min(SCAN_CHUNK, limit - chunk_start), chunk_start)
            if not data:
                return None
            for match in _CANDIDATE.finditer(data):
                offset = chunk_start + match.start() - 30
                if offset >= start and self._is_valid_header(offset, limit):
                    return offset
            if chunk_start + len(data) >= limit:
                return None
            chunk_start += max(len(data) - overlap, 1)
        return None

    def _is_valid_header(self, offset: int, limit: int) -> bool:
        head = self.fs.pread(self.fd, _HEADER_SIZE, offset)
        if len(head) < _HEADER_SIZE:
            return False
        header = fmt.RecordHeader._make(_RECORD.unpack_from(head))
        if fmt.check_record_header(header, offset, limit) is not None:
            return False
        key = self.fs.pread(self.fd, header.klen, offset + _HEADER_SIZE)
        return len(key) == header.klen and fmt.record_hcrc(head, key, self.salt) == header.hcrc


def check_tail(
    seg: Segment, scan: SegmentScan, limit: int, floor: Callable[[], int | None]
) -> bool:
    """Tell a torn tail (nothing valid after the stop) from damage in the
    middle of the active segment (valid records follow). The first is normal
    after a crash; the second must never be silently cut away, unless it lies
    at or after the synced mark (``floor()``): then it is what a power loss
    leaves when the kernel wrote a later page back before an earlier one, and
    True says so (the caller ignores or cuts it like a torn tail, and reports
    it). Raises :class:`CorruptionError` for damage before the mark, or with
    no mark at all."""
    if scan.stop >= limit:
        return False
    found = seg.find_valid_record(scan.stop + 1, limit)
    if found is None:
        return False
    synced = floor()
    if synced is not None and scan.stop >= synced:
        return True
    where = "" if synced is None else f" before the synced mark ({synced})"
    raise CorruptionError(
        f"{seg.path}: damaged record at offset {scan.stop} ({scan.problem}){where} is "
        f"followed by valid records (offset {found}); the store needs "
        "logshelf.salvage(source, destination) to copy what is intact"
    )
