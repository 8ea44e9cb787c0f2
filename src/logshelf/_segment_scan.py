"""Scanning a byte range of a segment: the committed batches in it, every
record checked (header checksum, structure, transaction ids, and the value's
checksum unless told not to), and where and why the committed data ends.

Split from ``_segment`` (which opens, reads and appends to one segment file)
because a scan is its own job, and the one the engine runs most after reads
and writes: a writer parses every record other processes append, and an open
without hints parses every record of the store.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from . import _format as fmt
from ._buffer_io import check_value
from ._fs import FileSystem
from .errors import FormatError

__all__ = ["SCAN_CHUNK", "ScannedRecord", "SegmentScan"]

_RECORD = fmt.RECORD_HEADER
_unpack_from = _RECORD.unpack_from
_crc32 = zlib.crc32
_HEADER_SIZE = _RECORD.size
_BUFFERS = fmt.FLAG_BUFFERS
# SegmentScan._common: what it takes, and what sends a record elsewhere.
_PUT = fmt.KIND_PUT
_DELETE = fmt.KIND_DELETE
_COMMIT = fmt.FLAG_COMMIT
_CODEC_MASK = fmt.CODEC_MASK
_UNCOMMON_FLAGS = fmt.FLAG_BUFFERS | 0xE0  # buffers, and the reserved bits
_TXID_WINDOW = fmt.TXID_WINDOW
#: Scans read the file in chunks of this size.
SCAN_CHUNK = 1 << 20
# Values larger than this are checksummed in pieces instead of read whole.
_STREAM_VALUE = 8 << 20


class ScannedFile(Protocol):
    """What a scan needs of a segment (``_segment.Segment``)."""

    fs: FileSystem
    fd: int
    path: str
    salt: int
    base_txid: int


class ScannedRecord(NamedTuple):
    """A valid record found by a scan (values are not kept)."""

    offset: int
    kind: int
    key: bytes
    txid: int
    length: int
    seal_next: int


_Scanned = functools.partial(tuple.__new__, ScannedRecord)


class SegmentScan:
    """Iterate the committed batches in a byte range of a segment.

    Iterating yields one list of :class:`ScannedRecord` per committed batch and
    stops at the first record that is incomplete or invalid: everything after
    it is left alone ("stop at the first invalid record"). Afterwards:

    * ``end``: end of the last committed batch (where appends continue);
    * ``stop``: first byte not part of a valid record (``== limit`` when the
      range ended cleanly; between ``end`` and ``stop`` lie valid records of a
      batch that has no commit record yet);
    * ``problem``: why the scan stopped before ``limit``, or None;
    * ``max_txid``: the largest txid of any valid record, committed or not;
    * ``damaged``: offsets of records whose header is valid but whose value
      fails its checksum while valid records follow (bit rot, not a torn
      write); they stay indexed and reading them raises CorruptionError.
      Not at or after ``floor()`` (the synced mark, see ``_synced``), where
      a power loss may have kept a header's page and lost its value's: the
      scan stops there instead, as at any other unsynced damage.

    Raises FormatError for a checksum-valid record that uses flag bits this
    version does not know (written by a newer logshelf).
    """

    def __init__(
        self,
        segment: ScannedFile,
        start: int,
        limit: int,
        last_txid: int,
        verify_values: bool,
        floor: Callable[[], int | None] | None = None,
    ) -> None:
        self.segment = segment
        self._floor = floor
        self.start = start
        self.limit = limit
        self.verify_values = verify_values
        self.last_txid = max(last_txid, segment.base_txid)
        self.end = start
        self.stop = start
        self.problem: str | None = None
        self.max_txid = self.last_txid
        # txid of the last committed batch seen (the plausibility floor).
        self.last_committed = self.last_txid
        self.damaged: list[int] = []
        self._buf = b""
        self._buf_start = start

    def _get(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)``, through a read-ahead buffer."""
        rel = offset - self._buf_start
        if rel < 0 or rel + length > len(self._buf):
            want = max(length, min(SCAN_CHUNK, self.limit - offset))
            self._buf = self.segment.fs.pread(self.segment.fd, want, offset)
            self._buf_start = offset
            rel = 0
        return self._buf[rel : rel + length]

    def _value_crc(self, offset: int, length: int) -> int:
        if length <= _STREAM_VALUE:
            return zlib.crc32(self._get(offset, length))
        crc = 0
        done = 0
        while done < length:
            piece = self.segment.fs.pread(
                self.segment.fd, min(_STREAM_VALUE, length - done), offset + done
            )
            if not piece:
                return -1
            crc = zlib.crc32(piece, crc)
            done += len(piece)
        return crc

    def _value_ok(self, value_at: int, header: fmt.RecordHeader) -> bool:
        if header.flags & _BUFFERS:
            return check_value(self._get, self._value_crc, value_at, header.vlen, header.vcrc)
        return self._value_crc(value_at, header.vlen) == header.vcrc

    def _check(self, pos: int) -> tuple[fmt.RecordHeader, bytes] | str:
        """Header and key of a structurally valid record at ``pos``, or a reason."""
        if pos + _HEADER_SIZE > self.limit:
            return "incomplete record header"
        head = self._get(pos, _HEADER_SIZE)
        if len(head) < _HEADER_SIZE:
            return "incomplete record header"
        header = fmt.RecordHeader._make(_RECORD.unpack_from(head))
        reason = fmt.check_record_header(header, pos, self.limit)
        if reason is not None:
            return reason
        key = self._get(pos + _HEADER_SIZE, header.klen)
        if len(key) != header.klen or fmt.record_hcrc(head, key, self.segment.salt) != header.hcrc:
            return "record header checksum mismatch"
        if fmt.has_reserved_flags(header.flags):
            raise FormatError(
                f"{self.segment.path}: the record at offset {pos} uses features of a "
                "newer logshelf format (reserved flag bits set); upgrade logshelf"
            )
        return header, key

    def _unsynced(self, pos: int) -> bool:
        """Is ``pos`` at or after the synced mark? (Asked only on damage.)"""
        floor = self._floor() if self._floor is not None else None
        return floor is not None and pos >= floor

    def __iter__(self) -> Iterator[list[ScannedRecord]]:
        pos = self.start
        pending: list[ScannedRecord] = []
        last_txid = self.last_txid
        while pos < self.limit:
            # The txid the record must carry: the batch's, or one just past
            # the last committed batch's (None).
            batch_txid = pending[0].txid if pending else None
            found = self._common(pos, batch_txid, last_txid) or self._record(
                pos, batch_txid, last_txid
            )
            if found is None:
                break
            record, flags = found
            if record.txid > self.max_txid:
                self.max_txid = record.txid
            pending.append(record)
            pos += record.length
            if flags & _COMMIT:
                batch, pending = pending, []
                last_txid = record.txid
                self.last_committed = last_txid
                self.end = pos
                yield batch
        self.stop = pos

    def _common(
        self, pos: int, batch_txid: int | None, last_txid: int
    ) -> tuple[ScannedRecord, int] | None:
        """The common record at ``pos``, checked in a few calls instead of a
        dozen: a put or delete without buffers or reserved flags, wholly in
        the read-ahead buffer, every check of :meth:`_record` passing (a
        writer parses every record other processes append, and an open
        without hints every record). None for anything else and for every
        failure: :meth:`_record` then says what is wrong."""
        buf = self._buf
        rel = pos - self._buf_start
        if rel < 0 or rel + _HEADER_SIZE > len(buf):
            return None
        hcrc, vcrc, txid, vlen, rawlen, klen, kind, flags = _unpack_from(buf, rel)
        key_at = rel + _HEADER_SIZE
        value_at = key_at + klen
        total = _HEADER_SIZE + klen + vlen
        if not (
            (kind == _PUT or (kind == _DELETE and not vlen))
            and not flags & _UNCOMMON_FLAGS
            and (rawlen == 0 or flags & _CODEC_MASK)
            and rel + total <= len(buf)
            and pos + total <= self.limit
            and (
                txid == batch_txid
                if batch_txid is not None
                else last_txid < txid <= last_txid + _TXID_WINDOW
            )
        ):
            return None
        view = memoryview(buf)
        if _crc32(view[key_at:value_at], _crc32(view[rel + 4 : key_at], self.segment.salt)) != hcrc:
            return None
        if self.verify_values and _crc32(view[value_at : rel + total]) != vcrc:
            return None
        return _Scanned((pos, kind, buf[key_at:value_at], txid, total, 0)), flags

    def _record(
        self, pos: int, batch_txid: int | None, last_txid: int
    ) -> tuple[ScannedRecord, int] | None:
        """The record at ``pos`` with its flags, every check made; None (with
        ``problem`` set) where the committed data ends."""
        checked = self._check(pos)
        if isinstance(checked, str):
            self.problem = checked
            return None
        header, key = checked
        if batch_txid is not None:
            if header.txid != batch_txid:
                self.problem = "batch interrupted by another transaction id"
                return None
        elif not last_txid < header.txid <= last_txid + fmt.TXID_WINDOW:
            self.problem = f"implausible transaction id {header.txid}"
            return None
        total = _HEADER_SIZE + header.klen + header.vlen
        value_at = pos + _HEADER_SIZE + header.klen
        seal_next = 0
        if header.kind == fmt.KIND_SEAL:
            (seal_next,) = fmt.SEAL_VALUE.unpack(self._get(value_at, 8))
        if self.verify_values and not self._value_ok(value_at, header):
            # A torn write ends the data; bit rot is followed by valid records.
            nxt = pos + total
            if (
                nxt < self.limit
                and not isinstance(self._check(nxt), str)
                and not self._unsynced(pos)
            ):
                self.damaged.append(pos)
            else:
                self.problem = "value checksum mismatch"
                return None
        record = ScannedRecord(pos, header.kind, bytes(key), header.txid, total, seal_next)
        return record, header.flags
