"""Following a compaction's switch without reloading the index.

A compaction replaces a prefix of the MANIFEST (its inputs) with its output
segments. Index entries name segments by *slot*, a number that stays fixed
for as long as the handle holds the segment (``View.slots``), so the switch
concerns only the entries of keys whose records moved (those that point into
an input) and none of the segments after the inputs. A handle adopts a
switch in steps:

1. :func:`switch_shape` recognises the new MANIFEST as exactly one switch
   (plus the rollover that commits it) of the one the handle holds; the view
   opens the outputs under new slots and *retires* the inputs' slots, but
   keeps the inputs open: a few file opens, cheap under the writer lock.
   Every entry is still right: an entry in a retired slot points at the very
   record the compaction copied, in a file that stays readable through its
   descriptor after the compaction deleted it.
2. The first :meth:`Remap.step`, before the operation that adopted the
   switch returns (a writer runs it once it released the writer lock),
   removes the keys the compaction left out (the cache's eviction lists them
   in its last output's hint): they must vanish at once, like any delete.
3. Further steps, one per operation of the handle, each of at most
   :data:`CHUNK` keys, move the entries that still point into a retired slot
   to where the output's hint says the key was copied. An entry pointing
   elsewhere was written after the compaction's plan (or after the switch)
   and keeps its newer location. A last sweep drops whatever still points
   into a retired slot (a key left out by a compactor that did not list it),
   and the view then closes the inputs.

A handle opened from the INDEX file whose table names only inputs follows
a switch the same way, without probing its table or loading its index
(``LazyIndex.can_follow``); other lazy handles reload. Last, the inputs are
closed, about one 16 MiB file per step: the last close of a deleted file
is when the file system frees its blocks.

So no operation walks the whole index for a switch: at 100,000 keys a full
pass costs tens of milliseconds (see ``docs/compaction.md``). The only I/O
here is reading the outputs' hints.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

from . import _format as fmt
from ._hint_format import Hint, HintKeysError, deleted_count
from ._index import SLOT_SHIFT
from ._lazy_index import LazyIndex
from ._segment import Segment

__all__ = ["CHUNK", "NoHint", "Remap", "switch_shape"]

#: Keys one step looks at: about a millisecond.
CHUNK = 4096
#: An output of more bytes has its hint read and checked in a step of its own.
_LARGE_OUTPUT = 1 << 20
#: Inputs of about this many bytes are closed per step.
_CLOSE_BYTES = 16 << 20

Entries = tuple[tuple[int, int], ...]


class NoHint(Exception):
    """An output has no valid hint (a hint is only ever an optimisation): reload."""


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


class Remap:
    """An adopted switch whose index work is not done yet.

    Args:
        index: the view's index: a dict, or a ``LazyIndex`` whose table
            slots are all retired (``LazyIndex.can_follow``), which is then
            never probed and settles into a dict when the remap is done.
        retired: the slots of the inputs; ``inputs`` their segments, open.
        outputs: ``(slot, segment, length)`` of each output.
        read_hint: the valid hint of an output, or None.
        read_file: the bytes of a file (``FileSystem.read_file``).
    """

    def __init__(
        self,
        index: dict[str, int],
        retired: set[int],
        inputs: list[Segment],
        outputs: list[tuple[int, Segment, int]],
        read_hint: Callable[[Segment, int], Hint | None],
        read_file: Callable[[str], bytes],
    ) -> None:
        self._read_file = read_file
        self.index = index
        self.retired = retired
        self.inputs = inputs
        self.started = False
        #: The index work is done; only closing the inputs is left.
        self.indexed = False
        self._steps = self._run(outputs, read_hint)

    def _left_out(self, seg: Segment) -> int:
        """The number of keys an output's hint lists as deleted."""
        try:
            path = os.path.join(os.path.dirname(seg.path), fmt.hint_name(seg.id))
            count = deleted_count(self._read_file(path))
        except OSError:
            count = None
        if count is None:
            raise NoHint(seg.path)
        return count

    def step(self) -> bool:
        """Do the next piece of work; True when all is done.

        Raises:
            NoHint: an output's hint is missing or invalid.
        """
        self.started = True
        try:
            return next(self._steps, True)
        except HintKeysError as exc:  # met while taking its keys a piece at a time
            raise NoHint(str(exc)) from None

    def _run(
        self,
        outputs: list[tuple[int, Segment, int]],
        read_hint: Callable[[Segment, int], Hint | None],
    ) -> Iterator[bool]:
        index, retired = self.index, self.retired
        get: Callable[[str], int | None] = index.get
        keys_of: Callable[[], list[str]] = lambda: list(index)  # noqa: E731
        if isinstance(index, LazyIndex):
            # Opened from the INDEX file, with every table slot retired
            # (LazyIndex.can_follow): no probes, the table's keys are moved.
            spare = min(retired) << SLOT_SHIFT
            get = functools.partial(index.entry_before_switch, retired_entry=spare)
            keys_of = index.own_keys
        hints: dict[int, Hint] = {}

        def hint_of(slot: int, seg: Segment, length: int) -> Hint:
            if slot not in hints:
                hint = read_hint(seg, length)
                if hint is None or hint.seal_next:
                    raise NoHint(seg.path)
                hints[slot] = hint
            return hints[slot]

        # The keys left out go in the first step (a compaction lists them
        # in the hint of its last output; no later write names them, or
        # their entries would point elsewhere). Usually there are none, and
        # the hint's count says so without decoding its keys (10-20 ms for
        # a 16 MiB segment of small records).
        work = 1  # reading the count
        if outputs and self._left_out(outputs[-1][1]):
            for key in hint_of(*outputs[-1]).deleted_keys:
                loc = get(key)
                if loc is not None and loc >> SLOT_SHIFT in retired:
                    index.pop(key, None)
                    work += 1
        for slot, seg, length in outputs:
            if work and length > _LARGE_OUTPUT:
                # Reading and checking its hint is a step of its own (1-2 ms
                # for 16 MiB of small records); its keys are decoded a chunk
                # at a time as they are taken (KeysInOrder), since decoding
                # them all at once took 4-11 ms.
                yield False
                work = 0
            hint = hint_of(slot, seg, length)
            work += len(hint.put_keys) // 16  # reading and checking, in keys moved
            base = slot << SLOT_SHIFT
            keys, offsets = hint.put_keys, hint.put_offsets
            start = 0
            while start < len(keys):
                if work >= CHUNK:
                    yield False
                    work = 0
                end = min(start + CHUNK - work, len(keys))
                for key, offset in zip(keys[start:end], offsets[start:end], strict=True):
                    loc = get(key)
                    if loc is not None and loc >> SLOT_SHIFT in retired:
                        index[key] = base | offset
                work += end - start
                start = end
            del hints[slot]
        # The sweep: normally finds nothing, but no entry may outlive its
        # slot. (Without outputs, every key left is one left out: all at once.)
        # A lazy index copies the survivors into its full index as it goes.
        lazy = index if isinstance(index, LazyIndex) else None
        keys = keys_of()
        if lazy is not None:
            lazy.start_settling()
        start = 0
        while start < len(keys):
            if work >= CHUNK and outputs:
                yield False
                work = 0
            end = min(start + CHUNK - work, len(keys)) if outputs else len(keys)
            for key in keys[start:end]:
                loc = get(key)
                if loc is not None and loc >> SLOT_SHIFT in retired:
                    index.pop(key, None)
            if lazy is not None:
                lazy.settle_keys(keys[start:end])
            work += end - start
            start = end
        if lazy is not None:
            lazy.settle()
        self.indexed = True
        # The last close of a file the compaction deleted is when the file
        # system frees its blocks (4-10 ms for 16 MiB here, whatever was
        # cached): files of at most _CLOSE_BYTES per step, the first in a
        # step of its own.
        freed = _CLOSE_BYTES
        for seg in self.inputs:
            if freed + seg.readable_end > _CLOSE_BYTES:
                yield False
                freed = 0
            freed += seg.readable_end
            seg.close()
