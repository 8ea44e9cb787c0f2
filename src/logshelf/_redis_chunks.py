"""Values on Redis, read and written: inline records and chunked ones
(``docs/format.md`` §9.3).

A value of more than ``chunk_size`` stored bytes is written as chunks under
a new version, each expiring in an hour unless the write script that swaps
in their pointer claims them; no single command carries more than one
chunk, so a large value never blocks the server for long.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any

from . import _codecs
from . import _redis_format as rfmt
from ._records import Record
from ._signing import SIGNED, Signer
from .errors import CorruptionError

__all__ = ["PENDING_CHUNK_TTL_MS", "read_value", "write_chunks"]

#: Milliseconds new chunks live unless a committed pointer claims them.
PENDING_CHUNK_TTL_MS = 3600_000
#: Chunks per MGET when reading, per pipeline round when writing.
_CHUNK_BATCH = 8


def read_value(
    client: Any,
    keys: rfmt.Keys,
    key: str,
    record: bytes,
    where: str,
    signer: Signer | None = None,
) -> bytes | None:
    """The value in ``record`` (chunks joined and checked, its signature
    checked when ``signer`` is given, decompressed), or None when a chunk is
    gone (the caller reads the pointer again).

    Raises:
        TamperedError: ``signer`` is given and the record is unsigned or its
            signature fails (nothing of it was decompressed).
        CorruptionError: a checksum, a length or the compressed data is
            wrong; the message names the key and ``where``.
    """
    found = rfmt.unpack(record, key, key.encode("utf-8", "surrogatepass"), where)
    if isinstance(found, rfmt.Pointer):
        names = [keys.chunk(found.version, i) for i in range(found.chunks)]
        parts: list[bytes] = []
        for start in range(0, len(names), _CHUNK_BATCH):
            got = client.mget(names[start : start + _CHUNK_BATCH])
            if any(part is None for part in got):
                return None
            parts.extend(got)
        data = rfmt.check_joined(found, b"".join(parts), key, where)
        codec, rawlen = found.codec, found.rawlen
    else:
        codec, rawlen, data = found
    if signer is not None:
        data = signer.verify(
            key.encode("utf-8", "surrogatepass"), codec, data, rawlen, (where, None)
        )
        codec &= ~SIGNED
    elif codec & SIGNED:
        raise CorruptionError(f"record of key {key!r} at {where} is signed: open with key=")
    if not codec:
        return data
    try:
        return _codecs.decompress(codec, data, rawlen)
    except CorruptionError as exc:
        raise CorruptionError(f"value of key {key!r} at {where}: {exc}") from exc


def write_chunks(
    client: Any, keys: rfmt.Keys, record: Record, size: int
) -> tuple[bytes, list[bytes]]:
    """Write ``record``'s stored value as expiring chunks of ``size`` bytes;
    return its pointer record and the chunk keys (for the commit to claim)."""
    data = record.data
    version = uuid.uuid4().hex.encode()
    names = []
    pipe = client.pipeline(transaction=False)
    view = memoryview(data)
    for index, start in enumerate(range(0, len(data), size)):
        name = keys.chunk(version, index)
        names.append(name)
        pipe.set(name, view[start : start + size], px=PENDING_CHUNK_TTL_MS)
        if len(pipe) >= _CHUNK_BATCH:
            pipe.execute()
    pipe.execute()
    crc = zlib.crc32(data)
    pointer = rfmt.Pointer(version, len(names), record.codec, record.rawlen, len(data), crc)
    return rfmt.pack_pointer(record.key_bytes, pointer), names
