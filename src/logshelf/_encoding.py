"""How a value becomes the stored bytes of a record: serialized (pickle,
or another serializer's envelope), then compressed when that pays. Runs
before any lock is taken, so a value that cannot be encoded fails with
nothing written.

Large arrays are not copied into the pickle stream but written after it,
from their own memory (the object-layer half of ``_buffer_format``;
``docs/objects.md`` explains when it applies).

Pickle protocol 5 hands every buffer an object exposes (numpy arrays, the
column blocks of pandas objects, ``pickle.PickleBuffer``) to a callback. A
store pickles every value with :func:`probe` as that callback: it keeps
small buffers in the stream and stops at the first large one, which is
free for values without one (about 30 ns a write, measured). Only then is
the value pickled again by :func:`dumps`, collecting its large buffers.
"""

from __future__ import annotations

import pickle
from typing import Any

from . import _codecs
from ._buffer_format import BUFFERS, OutOfBand
from ._buffer_format import encode as encode_out_of_band
from ._crc import crc32
from ._serializers import Serializer, enveloped

__all__ = ["OUT_OF_BAND_MIN", "LargeBuffer", "compressed", "dumps", "encode", "probe"]

#: Buffers of at least this many bytes go out of band; smaller ones cost
#: less inside the stream than a table entry, an alignment pad and a read each.
OUT_OF_BAND_MIN = 64 << 10


class LargeBuffer(Exception):
    """Raised by :func:`probe` through ``pickle.dumps``: the value holds a
    buffer worth writing out of band."""


def probe(buffer: pickle.PickleBuffer) -> bool:
    """``buffer_callback`` of every pickling: keep a small buffer in band
    (True), stop at a large one."""
    if memoryview(buffer).nbytes < OUT_OF_BAND_MIN:
        return True
    raise LargeBuffer


def dumps(value: Any, protocol: int, codec: int, compress_min: int) -> tuple[int, OutOfBand, int]:
    """``(codec field, stored value, rawlen)`` of ``value`` with its large
    buffers out of band: the stream and each buffer are compressed with
    ``codec`` separately, each only when that pays (``_codecs.compress``).
    The codec field carries ``BUFFERS``; ``rawlen`` is the stream's."""
    found: list[memoryview] = []

    def collect(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        found.append(raw)
        return False

    stream = pickle.dumps(value, protocol, buffer_callback=collect)
    buffers: list[tuple[Any, int, int, int]] = []
    for raw in found:
        used, stored = _codecs.compress(_codecs.Codec(codec), raw, compress_min)  # type: ignore[arg-type]
        buffers.append((stored, len(raw) if used else 0, crc32(stored), int(used)))
    used, stored_stream = _codecs.compress(_codecs.Codec(codec), stream, compress_min)
    return (
        int(used) | BUFFERS,
        encode_out_of_band(stored_stream, buffers),
        len(stream) if used else 0,
    )


def compressed(data: bytes, codec: _codecs.Codec, compress_min: int) -> tuple[int, bytes, int]:
    """``(codec used, stored bytes, rawlen)`` of serialized ``data``."""
    if codec and len(data) >= compress_min:
        used, stored = _codecs.compress(codec, data, compress_min)
        if used:
            return used, stored, len(data)
    return 0, data, 0


def encode(
    value: Any,
    serializer: Serializer | None,
    protocol: int,
    codec: _codecs.Codec,
    compress_min: int,
    out_of_band: bool = True,
) -> tuple[int, bytes, int]:
    """``(codec field, stored bytes, rawlen)`` of a value: pickled with
    ``protocol`` (``serializer`` None) or enveloped by ``serializer``, then
    compressed; with out-of-band buffers when pickle protocol 5 finds large
    ones and the store keeps them (``out_of_band``)."""
    if serializer is not None:
        return compressed(enveloped(serializer, value), codec, compress_min)
    if protocol < 5 or not out_of_band:
        return compressed(pickle.dumps(value, protocol), codec, compress_min)
    try:
        return compressed(pickle.dumps(value, protocol, buffer_callback=probe), codec, compress_min)
    except LargeBuffer:
        return dumps(value, protocol, codec, compress_min)
