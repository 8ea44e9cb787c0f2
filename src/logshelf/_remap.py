"""Following a compaction's switch without reloading the index.

A compaction replaces a prefix of the MANIFEST (its inputs) with its output
segments. Index entries name segments by *slot*, a number that stays fixed
for as long as the handle holds the segment (``View.slots``), so the switch
changes only the entries of keys whose records moved, those that point into
an input, and none of the segments after the inputs. A handle adopts a
switch in two steps:

1. :func:`switch_shape` recognises the new MANIFEST as exactly one switch
   (plus the rollover that commits it) of the one the handle holds; the view
   then opens the outputs under new slots and retires the inputs' slots: a
   few file opens, cheap enough under the writer lock.
2. :func:`remap`, outside the writer lock where the caller can (``Writer``
   runs it once the lock is released), moves every entry that still points
   into a retired slot to where the output's hint says the key was copied.
   An entry pointing elsewhere was written after the compaction's plan (or
   by the view after the switch) and keeps its newer location; an entry left
   in a retired slot belongs to a key the compaction left out (the cache's
   eviction) and goes.

No entry of a retired slot is ever read: every operation completes the
remap before it returns, and the only work done between the two steps is
a write appending under the writer lock (entries of the active slot).
This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._hint_format import Hint
from ._index import SLOT_SHIFT

__all__ = ["remap", "switch_shape"]

Entries = tuple[tuple[int, int], ...]


def switch_shape(
    old: Entries, new: Entries, active: tuple[int, int], seal_next: int
) -> tuple[int, int] | None:
    """``(inputs, outputs)``: how many segments at the front of ``old`` the
    MANIFEST ``new`` replaced by how many new ones, if ``new`` is exactly one
    compaction switch of ``old`` whose rollover sealed the active segment at
    ``active`` = ``(id, end)`` and started ``seal_next``; None for anything
    else (a reset, several changes at once), which the caller reloads."""
    if len(new) < 2 or new[-1][0] != seal_next or new[-2] != active:
        return None
    new_ids = {segment_id for segment_id, _ in new}
    old_ids = {segment_id for segment_id, _ in old}
    inputs = 0
    while inputs < len(old) - 1 and old[inputs][0] not in new_ids:
        inputs += 1
    outputs = 0
    while outputs < len(new) - 2 and new[outputs][0] not in old_ids:
        outputs += 1
    if inputs == 0 or new[outputs:-2] != old[inputs:-1] or old[-1][0] != active[0]:
        return None
    return inputs, outputs


def remap(
    index: dict[str, int], retired: set[int], hints: Sequence[tuple[int, Hint]]
) -> tuple[int, int]:
    """Move the entries of ``index`` that point into a ``retired`` slot to
    the location the output hints give (``(slot, hint)`` pairs; an output's
    hint lists every record it holds, puts only), and drop those the outputs
    do not hold. Return ``(moved, dropped)``.

    ``index`` may be a dict subclass: only ``items``, ``get``, item
    assignment and deletion are used.
    """
    moved: dict[str, int] = {}
    for slot, hint in hints:
        base = slot << SLOT_SHIFT
        moved.update(
            zip(hint.put_keys, [base | offset for offset in hint.put_offsets], strict=True)
        )
    # One pass collects the stale keys (the dict cannot change while it is
    # walked); a key overwritten or deleted since the compaction's plan
    # points elsewhere, or nowhere, and is not among them.
    stale = [key for key, loc in index.items() if loc >> SLOT_SHIFT in retired]
    dropped = 0
    for key in stale:
        loc = moved.get(key)
        if loc is None:
            del index[key]
            dropped += 1
        else:
            index[key] = loc
    return len(stale) - dropped, dropped
