"""The transaction buffer and its overlay on reads.

Inside ``with db.transaction():`` writes are buffered here, one record per key,
and committed as one batch when the block ends. The thread that opened the
transaction reads through the buffer (its own writes are visible to it); other
threads wait on the handle's mutex and never see it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from . import _codecs
from . import _format as fmt
from ._buffer_format import BUFFERS, Buffered, OutOfBand
from ._buffer_io import pending_value
from ._records import Record
from ._signing import SIGNED, TAG_SIZE

__all__ = ["Transaction"]

_PUT = fmt.KIND_PUT
_DELETE = fmt.KIND_DELETE


class Transaction:
    """The writes of one open transaction, keyed by key (a later write of a key
    replaces the earlier one). ``index`` arguments are the committed index
    the buffer overlays: key -> location, deleted keys absent."""

    __slots__ = ("records", "thread")

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        #: The thread that opened it: the only one that reads through it.
        self.thread = threading.get_ident()

    def mine(self) -> bool:
        """Is the calling thread the one that opened this transaction?"""
        return self.thread == threading.get_ident()

    def value(self, key: str) -> bytes | Buffered | None:
        """What a read of buffered ``key`` returns: its decompressed value, or
        None for a buffered delete."""
        record = self.records[key]
        if record.kind == _DELETE:
            return None
        codec, data = record.codec, record.data
        tag = TAG_SIZE if codec & SIGNED else 0  # this handle's own signature
        if codec & BUFFERS:
            assert isinstance(data, OutOfBand)
            return pending_value(data, codec & 3, record.rawlen, tag)
        if tag:
            data = data[:-tag]
        if codec & 3:
            return _codecs.decompress(codec & 3, data, record.rawlen)
        return data

    def present(self, key: str, index: Mapping[str, int]) -> bool:
        """Is ``key`` live, counting the buffered writes?"""
        record = self.records.get(key)
        if record is not None:
            return record.kind == _PUT
        return key in index

    def buffer(self, record: Record, index: Mapping[str, int]) -> bool:
        """Add a write; return False for a delete of an absent key (nothing
        buffered, as a plain delete of it writes nothing)."""
        key = record.key
        if record.kind == _DELETE:
            if not self.present(key, index):
                return False
            if key not in index:
                # Only this transaction wrote the key: forget that write
                # rather than commit a put and a tombstone for nothing.
                del self.records[key]
                return True
        elif record.codec & BUFFERS:
            assert isinstance(record.data, OutOfBand)
            # Written at commit: until then the caller may change its arrays.
            record = record._replace(data=record.data.snapshot())
        self.records[key] = record
        return True

    def keys(self, index: Mapping[str, int]) -> list[str]:
        """The live keys: the index's, less buffered deletes, plus new puts."""
        records = self.records
        keys = [k for k in index if k not in records or records[k].kind == _PUT]
        keys.extend(k for k, r in records.items() if r.kind == _PUT and k not in index)
        return keys

    def count(self, index: Mapping[str, int]) -> int:
        """The number of live keys, counting the buffered writes."""
        count = len(index)
        for key, record in self.records.items():
            count += (record.kind == _PUT) - (key in index)
        return count
