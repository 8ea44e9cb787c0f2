"""How the parts of a large batch are handed to ``write(2)``.

A batch is packed into one ``bytes`` and written with one call while it is
small; once its large values add up to more than ``_format.JOIN_LIMIT``, it
is packed as a list of parts instead
(``_buffer_format.pack_parts``: each record's header and key, then its
value, never copied), and :func:`pieces` groups those parts into writes.
Joining a 64 MiB transaction of 1 MiB values copied every byte once more
and cost more than writing it (on the 2-core VM: 115 ms against 78 ms in
parts, 50 ms for the raw baseline; ``benchmarks/bench_peers.py --workloads
large``).

Atomicity does not depend on how many calls write a batch: only its last
record carries the commit flag, a reader or an open stops before a batch
whose commit record is missing or torn, and a failed append is cut back
(``Writer.undo``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._format import LARGE_VALUE

__all__ = ["pieces"]

#: Parts at least this large are written on their own, without a copy.
_DIRECT = LARGE_VALUE
#: Smaller parts are joined into writes of up to about this size.
_GROUP = 1 << 20


def pieces(parts: Iterable[Any]) -> Iterator[Any]:
    """``parts`` (bytes-like objects) regrouped for writing, in order: large
    parts as they are, runs of small ones joined, so that neither many tiny
    calls nor one huge copy happen."""
    group: list[Any] = []
    size = 0
    for part in parts:
        length = memoryview(part).nbytes
        if length >= _DIRECT:
            if group:
                yield b"".join(group)
                group, size = [], 0
            yield part
            continue
        group.append(part)
        size += length
        if size >= _GROUP:
            yield b"".join(group)
            group, size = [], 0
    if group:
        yield b"".join(group)
