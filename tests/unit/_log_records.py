"""Record builders shared by the unit tests of _segment and _index: the
engine's record tuples (the layout of ``logshelf._records.Record``), packed
by ``_format`` into real segments. A bytes key builds a record whose key is
not UTF-8, which ``_records`` would refuse."""

from __future__ import annotations

import zlib

from logshelf import _format as fmt
from logshelf._segment import Segment

EngineRecord = tuple[int, object, bytes, int, bytes, int, int]


def put(key: str | bytes, value: bytes = b"v") -> EngineRecord:
    raw = key.encode() if isinstance(key, str) else key
    return (fmt.KIND_PUT, key, raw, 0, value, zlib.crc32(value), 0)


def delete(key: str) -> EngineRecord:
    return (fmt.KIND_DELETE, key, key.encode(), 0, b"", 0, 0)


def seal(next_id: int) -> EngineRecord:
    value = fmt.SEAL_VALUE.pack(next_id)
    return (fmt.KIND_SEAL, "", b"", 0, value, zlib.crc32(value), 0)


def append_batch(segment: Segment, txid: int, records: list[EngineRecord]) -> list[int]:
    """Append one committed batch; return the offset of each record."""
    data, positions = fmt.pack_batch(segment.salt, txid, records, segment.size())
    segment.append(data)
    return positions
