"""What the engine carries for one record to write, and how keys become bytes.

A :class:`Record` is built once per written key, outside every lock, with its
value already serialized, compressed and checksummed: under the writer lock
only packing (``_format.pack_record`` / ``pack_batch``) and one ``write``
remain.
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

from . import _format as fmt

__all__ = ["Record", "delete_record", "encode_key", "new_record", "put_record"]

_PUT = fmt.KIND_PUT
_DELETE = fmt.KIND_DELETE


class Record(NamedTuple):
    """One record to write. The field order is the one ``_format.pack_batch``
    unpacks (it ignores ``key``, which is for the index)."""

    kind: int
    #: The key as the user gave it (index and transaction buffer use it).
    key: str
    #: Its UTF-8 bytes, checked by :func:`encode_key` (these are written).
    key_bytes: bytes
    codec: int
    #: The stored value: serialized and, if ``codec``, compressed.
    data: bytes
    #: ``zlib.crc32(data)``.
    vcrc: int
    #: Length before compression; 0 when ``codec`` is 0.
    rawlen: int


#: ``new_record((kind, key, ...))``: a :class:`Record` from a tuple of its fields.
#: Record(...) runs a Python-level __new__; this is the C-level tuple
#: constructor (same object, half the cost), for the paths that build one
#: record per written key.
new_record = functools.partial(tuple.__new__, Record)


def encode_key(key: str) -> bytes:
    """UTF-8 bytes of a key, checked against the format's limits.

    Raises:
        ValueError: the key holds lone surrogates or is longer than 65535 bytes.
    """
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"key {key!r} cannot be encoded as UTF-8: {exc.reason}") from None
    if len(data) > fmt.MAX_KEY_BYTES:
        raise ValueError(
            f"key of {len(data)} bytes is too long (at most {fmt.MAX_KEY_BYTES} bytes "
            f"in UTF-8): {key[:40]!r}..."
        )
    return data


def put_record(key: str, codec: int, data: bytes, rawlen: int) -> Record:
    """A PUT of ``key`` with a stored value (see :class:`Record`)."""
    return new_record((_PUT, key, encode_key(key), codec, data, zlib.crc32(data), rawlen))


def delete_record(key: str) -> Record:
    """A DELETE of ``key`` (a tombstone: no value)."""
    return new_record((_DELETE, key, encode_key(key), 0, b"", 0, 0))
