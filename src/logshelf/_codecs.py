"""Per-record compression: the codec ids stored on disk and how to apply them.

A codec id lives in two bits of every record's flags (see ``_format.py``), so a
store may mix codecs freely and reads never depend on the ``compression=`` a
handle was opened with.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Callable
from enum import IntEnum

from . import _format as fmt
from .errors import CodecUnavailableError, CorruptionError

try:
    import lz4.block as _lz4_block  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - lz4 is a declared dependency
    _lz4_block = None

__all__ = [
    "COMPRESS_MIN",
    "Codec",
    "codec_from_name",
    "compress",
    "decompress",
]

# Below this many bytes compression rarely pays: on pickled record-like dicts
# lz4 saved 0.7 % at 141 bytes, 4 % at 231 and 11 % at 323 (measured while
# choosing this default; docs/format.md §4 states the rule).
COMPRESS_MIN = 256

# Values at least this large are judged on a sample first, so that
# incompressible payloads (numpy noise, media) do not pay for a full pass.
_SAMPLE_FROM = 1 << 20
_SAMPLE_SIZE = 64 << 10

# An lz4 block never expands more than ~255-fold (a match token adds at most
# 255 bytes of length per input byte). lz4 allocates the declared length up
# front, so a larger claim is rejected before it can become a huge allocation.
_LZ4_MAX_RATIO = 255


class Codec(IntEnum):
    """Codec ids as stored in bits 1-2 of a record's flags byte."""

    NONE = 0
    LZ4 = 1
    ZLIB = 2
    BZ2 = 3


_NAMES = {"lz4": Codec.LZ4, "zlib": Codec.ZLIB, "bz2": Codec.BZ2}


def codec_from_name(name: str | None) -> Codec:
    """Return the codec for a ``compression=`` argument.

    Raises:
        ValueError: ``name`` is not None, "lz4", "zlib" or "bz2".
        CodecUnavailableError: the codec's module is not importable.
    """
    if name is None or name == "none":
        return Codec.NONE
    if not isinstance(name, str) or name not in _NAMES:
        raise ValueError(f"compression must be None, 'lz4', 'zlib' or 'bz2', not {name!r}")
    codec = _NAMES[name]
    if codec is Codec.LZ4 and _lz4_block is None:
        raise CodecUnavailableError("compression='lz4' needs the lz4 package: pip install lz4")
    return codec


def _lz4_compress(data: bytes) -> bytes:
    assert _lz4_block is not None
    # store_size=False: the uncompressed length lives in the record header.
    return bytes(_lz4_block.compress(data, store_size=False))


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def _bz2_compress(data: bytes) -> bytes:
    return bz2.compress(data, 9)


_COMPRESSORS: dict[Codec, Callable[[bytes], bytes]] = {
    Codec.LZ4: _lz4_compress,
    Codec.ZLIB: _zlib_compress,
    Codec.BZ2: _bz2_compress,
}


def compress(codec: Codec, data: bytes, minimum: int = COMPRESS_MIN) -> tuple[Codec, bytes]:
    """Compress ``data`` if that is worth it; return the codec actually used.

    The result is kept only when it saves at least an eighth of the input
    (LevelDB's rule), so reads of values that do not shrink never pay for a
    decompression.
    """
    size = len(data)
    if codec is Codec.NONE or size < minimum or size > fmt.MAX_RAWLEN:
        return Codec.NONE, data
    compressor = _COMPRESSORS[codec]
    if size >= _SAMPLE_FROM:
        sample = data[:_SAMPLE_SIZE]
        if len(compressor(sample)) > len(sample) - len(sample) // 10:
            return Codec.NONE, data
    packed = compressor(data)
    if len(packed) > size - size // 8:
        return Codec.NONE, data
    return codec, packed


def decompress(codec: int, data: bytes, rawlen: int) -> bytes:
    """Undo :func:`compress`; never produce more than ``rawlen`` bytes.

    Bounding the output by the length recorded in the (checksummed) header
    means a damaged record cannot become a decompression bomb; the recorded
    length itself is checked against what the codec can produce before lz4
    (which allocates it up front) sees it. zlib and bz2 grow their output in
    steps, so a false length costs no more than the real output.

    Raises:
        CorruptionError: the data does not decompress to exactly ``rawlen`` bytes.
        CodecUnavailableError: the record needs lz4 and it is not installed.
    """
    try:
        if codec == Codec.LZ4:
            if _lz4_block is None:  # pragma: no cover - lz4 is a declared dependency
                raise CodecUnavailableError(
                    "this record is lz4-compressed; install lz4: pip install lz4"
                )
            if rawlen > len(data) * _LZ4_MAX_RATIO + 64:
                raise CorruptionError(
                    f"lz4 value of {len(data)} bytes claims {rawlen} bytes uncompressed"
                )
            out = _lz4_block.decompress(data, uncompressed_size=rawlen)
        elif codec == Codec.ZLIB:
            inflater = zlib.decompressobj()
            out = inflater.decompress(data, rawlen)
            if not inflater.eof or inflater.unconsumed_tail:
                raise CorruptionError("zlib stream is longer or shorter than recorded")
        elif codec == Codec.BZ2:
            unpacker = bz2.BZ2Decompressor()
            out = unpacker.decompress(data, max_length=rawlen)
            if not unpacker.eof:
                raise CorruptionError("bz2 stream is longer or shorter than recorded")
        else:
            raise CorruptionError(f"unknown codec id {codec}")
    except (CorruptionError, CodecUnavailableError):
        raise
    except Exception as exc:  # each codec raises its own error type on bad input
        raise CorruptionError(f"value does not decompress: {exc}") from exc
    if len(out) != rawlen:
        raise CorruptionError(f"value decompressed to {len(out)} bytes, header says {rawlen}")
    return bytes(out)
