"""crc32 of large buffers on several cores.

``zlib.crc32`` runs at about 4 GiB/s on one core and releases the GIL, so
the crc32 of a large array (the checksum of an out-of-band buffer,
``_buffer_format``) is computed in pieces on threads and the pieces'
checksums combined: the result is exactly ``zlib.crc32`` of the whole.
Combining is zlib's ``crc32_combine`` (not exposed by Python's ``zlib``),
done here over GF(2): a few milliseconds, so only buffers of
:data:`PARALLEL_FROM` bytes or more are split.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from . import _forking

__all__ = ["PARALLEL_FROM", "crc32", "crc32_combine", "parallel_map"]

#: Buffers at least this large are checksummed in parallel.
PARALLEL_FROM = 16 << 20
_POLY = 0xEDB88320
_T = TypeVar("_T")
_WORKERS = max(1, min(4, os.cpu_count() or 1))


class _Pool:
    """The worker threads, started on first use; a forked child starts its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="logshelf-crc")
            return self.executor

    def forget_after_fork(self) -> None:
        # The child inherits the executor object but none of its threads.
        self.lock = threading.Lock()
        self.executor = None


_pool = _Pool()
_forking.register(_pool)


def _times(matrix: list[int], vector: int) -> int:
    total = 0
    row = 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The crc32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``:
    ``crc1`` advanced over ``len2`` zero bytes (a linear map, applied by
    repeated squaring of the one-zero-bit operator), xored with ``crc2``."""
    if len2 <= 0:
        return crc1
    odd = [_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four zero bits
    while True:
        even = _square(odd)  # the operator for the next bit of len2 (in bytes)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32(data: Any) -> int:
    """``zlib.crc32(data)``, on several threads when ``data`` is large."""
    view = memoryview(data).cast("B")
    size = len(view)
    if size < PARALLEL_FROM or _WORKERS == 1:
        return zlib.crc32(view)
    step = -(-size // _WORKERS)
    pieces = [view[at : at + step] for at in range(0, size, step)]
    crcs = parallel_map(zlib.crc32, pieces)
    total = crcs[0]
    for piece, crc in zip(pieces[1:], crcs[1:], strict=True):
        total = crc32_combine(total, crc, len(piece))
    return total


def parallel_map(fn: Callable[[Any], _T], pieces: list[Any]) -> list[_T]:
    """``[fn(p) for p in pieces]`` on the worker threads (for functions that
    release the GIL on large buffers: crc32 here, SHA-256 for signing)."""
    return list(_pool.get().map(fn, pieces))
