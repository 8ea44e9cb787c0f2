"""From a located record to the value a read returns: its checksums
verified (``Segment.read_value``), its signature checked on a signed store
(``_signing``) before anything else, then decompressed, or its out-of-band
buffers copied or mapped (``_buffer_io``). Every error names the key."""

from __future__ import annotations

import functools
from typing import Any

from . import _codecs
from ._buffer_format import BUFFERS, Buffered
from ._buffer_io import read_buffered
from ._fs import FileSystem
from ._segment import Segment
from ._signing import SIGNED, Signer
from .errors import CorruptionError, TamperedError

__all__ = ["load"]


def load(
    fs: FileSystem, seg: Segment, offset: int, key: str, signer: Signer | None, copy: bool
) -> bytes | Buffered:
    """The value of ``key``'s PUT record at ``offset`` of ``seg``.

    Raises:
        TamperedError: ``signer`` is given and the record is unsigned or its
            signature fails (nothing of it was decompressed).
        CorruptionError: a checksum fails or the record is impossible.
    """
    kb = key.encode()
    try:
        codec, data, rawlen = seg.read_value(offset, kb)
    except CorruptionError as exc:  # the message names file and offset
        raise CorruptionError(f"key {key!r}: {exc}") from None
    signed = signer is not None or codec & SIGNED
    if not codec and not signed:
        return data
    check = functools.partial(_check, signer, seg, offset, kb, codec, rawlen)
    try:
        if codec & BUFFERS:
            head_check = check if signed else None
            return read_buffered(fs, seg.fd, offset, codec & 3, data, rawlen, copy, head_check)
        if signed:
            data = check(data, ())
        codec &= 3
        return _codecs.decompress(codec, data, rawlen) if codec else data
    except TamperedError:
        raise
    except CorruptionError as exc:
        raise CorruptionError(
            f"key {key!r}: {seg.path}: the value at offset {offset}: {exc}"
        ) from None


def _check(
    signer: Signer | None,
    seg: Segment,
    offset: int,
    kb: bytes,
    codec: int,
    rawlen: int,
    value: bytes,
    buffers: Any,
) -> bytes:
    """``value`` without its tag once its signature checks."""
    if signer is None:
        raise CorruptionError("a signed record in a store opened without a key")
    return signer.verify(kb, codec, value, rawlen, (seg.path, offset), buffers)
