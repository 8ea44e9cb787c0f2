"""Inspecting what a view holds: verify every record, estimate dead bytes.

Reads only; the engine calls these under its mutex.
"""

from __future__ import annotations

from collections.abc import Callable

from ._index import OFFSET_MASK as _OFFSET_MASK
from ._index import SLOT_SHIFT as _SLOT_SHIFT
from ._records import encode_key
from ._view import HEADER_END, View
from .errors import CorruptionError, TamperedError

__all__ = ["dead_bytes", "verify"]


def verify(view: View, progress: Callable[[str], None] | None) -> list[str]:
    """Scan every segment's committed bytes and read every index entry;
    return the problems found (see ``Engine.verify``)."""
    segments = view.segments
    problems: list[str] = []
    for number, seg in enumerate(segments, 1):
        if progress is not None and number > 1:
            progress(f"checked {number - 1} of {len(segments)} segments")
        limit = seg.readable_end
        scan = seg.scan(HEADER_END, limit, seg.base_txid)
        for _ in scan:
            pass
        if scan.stop < limit or scan.end < limit:
            problems.append(f"{seg.path}: invalid record at offset {scan.stop}: {scan.problem}")
        problems.extend(
            f"{seg.path}: value checksum mismatch in the record at offset {offset}"
            for offset in scan.damaged
        )
    for key, loc in view.index.items():
        try:
            if view.signer is not None:
                view.read(loc, key, copy=False)  # the signature too (buffers mapped)
            else:
                view.slots[loc >> _SLOT_SHIFT].read_value(loc & _OFFSET_MASK, encode_key(key))
        except TamperedError as exc:
            problems.append(str(exc))
        except CorruptionError as exc:
            problems.append(f"key {key!r}: {exc}")
    if progress is not None:
        progress(f"checked {len(segments)} segments and {len(view.index)} index entries")
    return problems


def dead_bytes(view: View) -> tuple[int, int]:
    """(estimated dead bytes, total record bytes) of the sealed segments.

    Live bytes are estimated from the sizes of up to ~256 live records
    spread over the sealed segments: exact enough for a threshold, and
    cheap (one pass over the index, a few hundred header reads).
    """
    count = len(view.segments) - 1
    sealed = sum(length - HEADER_END for _, length in view.manifest.segments[:count])
    if sealed <= 0:
        return 0, 0
    active = view.active_slot
    live = [loc for loc in view.index.values() if loc >> _SLOT_SHIFT != active]
    if not live:
        return sealed, sealed
    sample = live[:: max(1, len(live) // 256)]
    size = sum(view.slots[loc >> _SLOT_SHIFT].record_size(loc & _OFFSET_MASK) for loc in sample)
    live_bytes = size * len(live) // len(sample)
    return max(sealed - live_bytes, 0), sealed
