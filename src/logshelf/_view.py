"""What one handle knows of the log, and how it follows other writers.

A :class:`View` holds the MANIFEST this handle works from, its open segments,
the index built from them, and how far into the active segment it has
parsed. Readers and writers both have one; it never writes a byte. Other
processes' commits reach it through :meth:`View.refresh` (new records in the
active segment, a SEAL that names a successor, a new MANIFEST after a
compaction or a reset).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import _format as fmt
from . import _index, _remap
from ._buffer_format import Buffered
from ._fs import FileSystem
from ._lazy_index import LazyIndex
from ._locking import ChangeCounter
from ._records import Record
from ._segment import Segment, SegmentScan, check_tail
from ._signing import Signer
from ._synced import read_mark
from ._values import load
from .errors import CorruptionError, StoreNotFoundError

__all__ = ["HEADER_END", "MissingSegmentError", "View"]

#: Where the first record of every segment starts.
HEADER_END = fmt.SEGMENT_HEADER.size
_SLOT_SHIFT = _index.SLOT_SHIFT
_OFFSET_MASK = _index.OFFSET_MASK
_PUT = fmt.KIND_PUT
# The counter bytes of CHANGES, and what stands in for them in a store that
# has no counter: odd, so never remembered, so every operation checks sizes.
_COUNTER = fmt.CHANGES_COUNTER
_NO_COUNTER = b"\x01" * fmt.CHANGES.size


class MissingSegmentError(CorruptionError):
    """The MANIFEST names a segment file that does not exist. Corruption, unless
    a compaction replaced that MANIFEST meanwhile (see :meth:`View.load_latest`)."""


class _Loaded(NamedTuple):
    """What applying one segment found."""

    txid: int  # last committed txid
    end: int  # end of committed data
    seal_next: int  # target of a SEAL, or 0
    hinted: int  # end of the range its hint covered, or 0


class View:
    """The log as one handle sees it. Not thread-safe: the engine's mutex guards it.

    Args:
        fs: the file-system layer.
        path: the store directory.
        writable: open the active segment for appending (a writer's view).
    """

    def __init__(self, fs: FileSystem, path: str, writable: bool) -> None:
        self.fs = fs
        self.path = path
        self.writable = writable
        #: Checks every record read, on a handle opened with ``key=`` (``_signing``).
        self.signer: Signer | None = None
        self.manifest = fmt.Manifest(0, 0)
        self.segments: list[Segment] = []
        #: Slot -> segment: what an index entry's slot names. A slot stays the
        #: same while the view holds its segment; a reload renumbers them in
        #: MANIFEST order. The slots a compaction retired keep their closed
        #: segment: no entry of theirs is ever read (``_remap``).
        self.slots: list[Segment] = []
        #: The slot of each segment of ``segments``.
        self.slot_ids: list[int] = []
        #: A compaction switch adopted, its index work not done (``_remap``).
        self.pending_remap: _remap.Remap | None = None
        #: Set by a writer that starts that work itself, after its lock.
        self.remap_later = False
        #: key -> (slot << 40) | offset of its live PUT; see ``_index.py``.
        self.index: dict[str, int] = {}
        #: Keys whose final state in the active segment is a delete (its hint lists them).
        self.active_deletes: set[str] = set()
        #: End of the committed data parsed in the active segment.
        self.end = HEADER_END
        #: Last committed transaction id.
        self.txid = 0
        #: Largest transaction id seen or used, committed or not: never reused.
        self.max_txid = 0
        #: Id of the successor named by a SEAL ending the active segment, else 0.
        self.seal_next = 0
        #: End of the active segment's range that its hint on disk covers (0: none).
        self.hinted_end = 0
        # (size, mtime) of the active segment when its tail last failed to parse.
        self._unparsed: tuple[int, int] = (-1, -1)
        self.changes: ChangeCounter | None = None
        #: The change counter's map (or an odd stand-in); see follow_writers.
        self.counter: mmap.mmap | bytes = _NO_COUNTER
        #: The last even counter value read before this view was brought up to date.
        self.seen = b""
        #: Bytes after damage past the synced mark of the active segment (what a
        #: power loss left of unsynced writes): ignored, or cut by a writer.
        self.unsynced_tail = 0

    # -- the active segment ------------------------------------------------

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def active_slot(self) -> int:
        return self.slot_ids[-1]

    def reset_active(self, end: int = HEADER_END) -> None:
        """The active segment changed (a new one, or a fresh load): forget what
        was known of the previous one's tail. The one place that resets it."""
        self.active_deletes = set()
        self.end = end
        self.segments[-1].readable_end = end
        self.seal_next = 0
        self.hinted_end = 0
        self._unparsed = (-1, -1)

    def apply_written(
        self, records: Sequence[Record], locations: list[int], all_puts: bool
    ) -> None:
        """Index a batch this handle just appended to the active segment;
        ``locations`` are the records' packed index entries; ``all_puts``
        says the batch holds no delete (the writer knows it already)."""
        index, deletes = self.index, self.active_deletes
        if all_puts:
            # Transactions and bulk puts: one C-level update.
            keys = [r.key for r in records]
            index.update(zip(keys, locations, strict=True))
            if deletes:
                deletes.difference_update(keys)
            return
        for record, location in zip(records, locations, strict=True):
            if record.kind == _PUT:
                index[record.key] = location
                if deletes:
                    deletes.discard(record.key)
            else:
                index.pop(record.key, None)
                deletes.add(record.key)

    # -- loading -----------------------------------------------------------

    def open_counter(self) -> None:
        """Map the store's change counter for reading, if it has a valid one."""
        self.changes = ChangeCounter.open(self.path, False, self.fs)
        if self.changes is not None:
            self.counter = self.changes.map

    def read_manifest(self) -> fmt.Manifest:
        manifest_path = os.path.join(self.path, fmt.MANIFEST_NAME)
        try:
            data = self.fs.read_file(manifest_path)
        except FileNotFoundError:
            raise StoreNotFoundError(
                f"no logshelf store at {self.path} (MANIFEST missing)"
            ) from None
        return fmt.decode_manifest(data, manifest_path)

    def load_latest(self, manifest: fmt.Manifest) -> None:
        """:meth:`load` ``manifest``, or a newer one: a compaction may replace
        the MANIFEST and delete the segments it replaced between our reading
        the MANIFEST and opening those segments."""
        while True:
            try:
                self.load(manifest)
                return
            except MissingSegmentError as exc:
                newer = self.read_manifest()
                if newer.generation == manifest.generation:
                    # Users catch CorruptionError; the private subclass stays inside.
                    raise CorruptionError(str(exc)) from None
                manifest = newer

    def refresh_manifest(self) -> None:
        """Under the writer lock, before changing the segment set: make sure this
        view works from the current MANIFEST. (Every change of the segment
        set also seals the active segment, which views notice anyway; this
        covers a writer that crashed between its MANIFEST switch and noticing.)"""
        manifest = self.read_manifest()
        if manifest.generation != self.manifest.generation:
            self.load_latest(manifest)

    def load(self, manifest: fmt.Manifest) -> None:
        """Build the index from hints and scans of the manifest's segments. On
        failure the view is left as it was."""
        if len(manifest.segments) > _index.MAX_SEGMENTS:
            raise CorruptionError(f"{self.path}: MANIFEST lists {len(manifest.segments)} segments")
        previous = {seg.id: seg for seg in self.segments}
        reused: set[int] = set()
        segments: list[Segment] = []
        index: dict[str, int] = {}
        deletes: set[str] = set()
        loaded = _Loaded(0, HEADER_END, 0, 0)
        max_txid = self.max_txid
        try:
            last = len(manifest.segments) - 1
            for slot, (segment_id, sealed_len) in enumerate(manifest.segments):
                active = slot == last
                seg = previous.get(segment_id)
                if seg is None or (active and self.writable and not seg.writable):
                    seg = self._open_segment(segment_id, self.writable and active)
                else:
                    reused.add(segment_id)
                segments.append(seg)
                limit = seg.size() if active else sealed_len
                if not active and limit > seg.size():
                    raise CorruptionError(
                        f"{seg.path} is {seg.size()} bytes, the MANIFEST says {sealed_len}"
                    )
                loaded, seen = self._load_segment(
                    seg, slot, limit, loaded.txid, index, deletes if active else None
                )
                max_txid = max(max_txid, seen)
                seg.readable_end = loaded.end
        except BaseException:
            for seg in segments:
                if seg.id not in reused:
                    seg.close()
            raise
        for seg in previous.values():
            if seg.id not in reused:
                seg.close()
        self.manifest = manifest
        self.segments = segments
        self.renumber()
        self.index = index
        self.reset_active(loaded.end)
        self.active_deletes = deletes
        self.txid = loaded.txid
        self.max_txid = max(max_txid, loaded.txid)
        self.seal_next = loaded.seal_next
        # A hint that already covers everything need not be rewritten at close.
        self.hinted_end = loaded.end if loaded.hinted == loaded.end else 0

    def renumber(self) -> None:
        """Slots in MANIFEST order, as a fresh index numbers them."""
        self.slots = list(self.segments)
        self.slot_ids = list(range(len(self.segments)))
        self._drop_remap()

    def _drop_remap(self) -> None:
        if self.pending_remap is not None:
            for seg in self.pending_remap.inputs:
                seg.close()
            self.pending_remap = None

    def _open_segment(self, segment_id: int, writable: bool) -> Segment:
        try:
            return Segment.open(self.fs, self.path, segment_id, writable)
        except FileNotFoundError:
            raise MissingSegmentError(
                f"the MANIFEST of {self.path} names segment {segment_id}, but "
                f"{os.path.join(self.path, fmt.segment_name(segment_id))} is missing"
            ) from None

    def _load_segment(
        self,
        seg: Segment,
        slot: int,
        limit: int,
        txid: int,
        index: dict[str, int],
        deletes: set[str] | None,
    ) -> tuple[_Loaded, int]:
        """Apply one segment to ``index`` (``deletes`` is given for the active
        one only); return what was found and the largest txid seen."""
        sealed = deletes is None
        start = HEADER_END
        hinted = 0
        hint = self._read_hint(seg, limit, sealed)
        if hint is not None:
            _index.apply_hint(hint, slot, index, deletes)
            start = hinted = hint.covered
            txid = max(txid, hint.max_txid)
            if sealed and start == limit:
                return _Loaded(txid, start, 0, hinted), txid
            if hint.seal_next:
                # The range the hint covers ends with a SEAL (a rollover whose
                # MANIFEST switch this handle has not read yet): nothing follows.
                return _Loaded(txid, start, hint.seal_next, hinted), txid
        floor = None if sealed else self.floor_of(seg)
        scan = seg.scan(start, limit, txid, verify_values=not sealed, floor=floor)
        seal_next = _index.apply_scan(scan, slot, index, deletes)
        if scan.stop < limit or scan.end < limit:
            if floor is None:  # a sealed segment: all of it was synced before it was sealed
                raise CorruptionError(
                    f"{seg.path}: sealed segment damaged at offset {scan.stop} "
                    f"({scan.problem}); copy what is intact with "
                    "logshelf.salvage(source, destination)"
                )
            if check_tail(seg, scan, limit, floor):
                # Readers read up to the damage; a writer cuts it (Writer.prepare).
                self.unsynced_tail = limit - scan.end
        # Txids of uncommitted records are burnt too (the second value): a new
        # batch must never reuse the txid of a record that might resurface.
        return _Loaded(max(txid, scan.last_committed), scan.end, seal_next, hinted), scan.max_txid

    def _read_hint(
        self, seg: Segment, limit: int, sealed: bool, keys_in_order: bool = False
    ) -> fmt.Hint | None:
        try:
            data = self.fs.read_file(os.path.join(self.path, fmt.hint_name(seg.id)))
        except OSError:
            return None
        hint = fmt.decode_hint(data, keys_in_order)
        if (
            hint is None
            or hint.segment_id != seg.id
            or hint.salt != seg.salt
            or hint.covered < HEADER_END
            or hint.covered > limit
            or (sealed and hint.covered != limit)
            or not seg.hint_matches(hint)
        ):
            return None
        return hint

    def floor_of(self, seg: Segment) -> Callable[[], int | None]:
        """A lazy :meth:`synced_floor` of the active segment ``seg``: read only
        when a scan meets damage, then remembered for that scan."""
        found: list[int | None] = []

        def floor() -> int | None:
            if not found:
                found.append(self.synced_floor(seg))
            return found[0]

        return floor

    def synced_floor(self, seg: Segment) -> int | None:
        """Where the known-durable part of the active segment ``seg`` ends: its
        intact synced mark (``_synced``), raised to the end of an intact hint
        (written at close after a sync); None without such a mark (a store
        from before marks, a torn or lost mark): then damage followed by valid
        records is refused as corruption, as it always was."""
        mark = read_mark(self.fs, self.path)
        if mark is None or mark[:2] != (seg.id, seg.salt):
            return None
        floor = mark[2]
        hint = self._read_hint(seg, seg.size(), sealed=False)
        if hint is not None:
            floor = max(floor, hint.covered)
        return floor

    # -- following other writers ---------------------------------------------

    def follow_writers(self) -> None:
        """Apply what other writers committed, unless the change counter says
        nothing changed since this view last looked.

        The hot paths inline the comparison and call this only when it
        differs. The counter is read before the size check: a writer that
        finishes after the read moves it again, so nothing is missed. An odd
        value (a write in progress, or a writer killed inside one) is never
        remembered. The single-write path also sets ``seen``, to the value
        its own hold ended on.
        """
        raw = self.counter[_COUNTER]
        if raw == self.seen:
            return
        if self.pending_remap is not None:
            self.remap_step()
        # Remembered only when the active segment ends exactly where this
        # view does. Writers skip their size check on a remembered value, so
        # bytes nobody could parse (left by a write whose undo failed) must
        # keep every handle checking until a writer cuts them.
        # Nor while a switch's remap runs: every operation then comes here
        # and does a step of it.
        if self.refresh() and not raw[0] & 1 and self.pending_remap is None:
            self.seen = raw

    def refresh(self) -> bool:
        """Apply whatever other processes committed since we last looked.

        Returns True when this view then ends exactly where the active
        segment does (nothing unparsed, not sealed); False may also just mean
        "look again" (after the segment set changed).
        """
        if self.seal_next:
            # Sealed: waiting for the writer to publish the successor in the MANIFEST.
            self.follow_seal()
            if self.seal_next:
                return False
        active = self.segments[-1]
        size = self.fs.size(active.fd)
        if size == self.end:
            return True
        if size == self._unparsed[0] and self._unparsed == self._tail_signature(active):
            # Same incomplete tail as last time (a write in progress, or a
            # torn tail no writer has cut yet): nothing new to parse.
            return False
        scan = self.catch_up(size)
        if self.end == size and self.segments[-1] is active and not self.seal_next:
            return True
        if scan is not None and self.end < size and self.segments[-1] is active:
            # Remember the tail only if it is still exactly what was scanned: a
            # write in progress grows the file (a large write becomes visible
            # page by page), and the grown file must be parsed again. A writer
            # cutting a torn tail changes the mtime (the same size and mtime
            # would need a crash and its repair within one clock tick).
            signature = self._tail_signature(active)
            if signature[0] == size:
                self._unparsed = signature
        return False

    def _tail_signature(self, seg: Segment) -> tuple[int, int]:
        st = self.fs.stat(seg.fd)
        return st.st_size, st.st_mtime_ns

    def catch_up(self, size: int) -> SegmentScan | None:
        """Parse the active segment from the view's end up to ``size``; None
        when the segment set had changed (the view was reloaded instead)."""
        active = self.segments[-1]
        if size < self.end:
            # Only a new segment set explains a shrinking active segment.
            manifest = self.read_manifest()
            if manifest.generation == self.manifest.generation:
                raise CorruptionError(
                    f"{active.path} shrank to {size} bytes below its committed end {self.end}"
                )
            self.load_latest(manifest)
            return None
        scan = active.scan(self.end, size, self.txid, floor=self.floor_of(active))
        seal_next = _index.apply_scan(scan, self.active_slot, self.index, self.active_deletes)
        self.end = scan.end
        active.readable_end = scan.end
        self.txid = max(self.txid, scan.last_committed)
        self.max_txid = max(self.max_txid, scan.max_txid)
        if seal_next:
            self.seal_next = seal_next
        if self.seal_next:
            self.follow_seal()
        return scan

    def follow_seal(self) -> None:
        """The active segment was sealed: adopt the manifest that names its successor."""
        manifest = self.read_manifest()
        if manifest.active_id == self.segments[-1].id:
            return  # the writer has not published it yet (or crashed: a writer completes it)
        if not self._follow_rollover(manifest) and not self._follow_switch(manifest):
            self.load_latest(manifest)
        if not self.remap_later:
            self.remap_step()  # the keys it left out go before this operation ends
        if self.seal_next == 0:
            self.refresh()

    def _follow_rollover(self, manifest: fmt.Manifest) -> bool:
        """Adopt ``manifest`` without reloading the index when all it did is
        seal our active segment where we parsed its SEAL and append the
        successor: every index entry stays valid, and the successor is
        parsed by the next refresh. A full reload reads every segment's hint
        (tens of milliseconds at 100,000 keys), and a writer may be doing it
        under the writer lock. False (nothing changed) for anything else: a
        compaction's switch, a reset by flag "n", several rollovers at once."""
        old, new = self.manifest.segments, manifest.segments
        active = self.segments[-1]
        if (
            len(new) != len(old) + 1
            or len(new) > _index.MAX_SEGMENTS
            or len(self.slots) >= _index.MAX_SEGMENTS
            or new[-1][0] != self.seal_next
            or new[-2] != (active.id, self.end)
            or new[:-2] != old[:-1]
        ):
            return False
        try:
            successor = Segment.open(self.fs, self.path, new[-1][0], self.writable)
        except FileNotFoundError:
            return False  # already replaced by a compaction: reload from the newest MANIFEST
        self.adopt(manifest, successor)
        return True

    def _follow_switch(self, manifest: fmt.Manifest) -> bool:
        """Adopt ``manifest`` if it is one compaction switch of ours (``_remap``):
        outputs and successor under new slots, the inputs' slots retired, the
        index left to :meth:`finish_remap`. False (nothing changed) if not."""
        self.finish_remap()  # an earlier switch, if a failed write left it pending
        old = self.manifest.segments
        shape = _remap.switch_shape(
            old, manifest.segments, (self.segments[-1].id, self.end), self.seal_next
        )
        if shape is None or len(self.slots) + len(manifest.segments) >= _index.MAX_SEGMENTS:
            return False
        inputs, count = shape
        lazy = self.index if isinstance(self.index, LazyIndex) else None
        if lazy is not None and not lazy.can_follow(set(self.slot_ids[:inputs])):
            return False  # its table may name segments after the inputs: reload
        opened: list[Segment] = []
        try:
            for segment_id, length in manifest.segments[:count]:
                opened.append(Segment.open(self.fs, self.path, segment_id, False))
                if opened[-1].size() < length:  # not what the MANIFEST says: reload
                    raise FileNotFoundError(segment_id)
                opened[-1].readable_end = length
            opened.append(Segment.open(self.fs, self.path, self.seal_next, self.writable))
        except BaseException as exc:
            for seg in opened:
                seg.close()
            if isinstance(exc, FileNotFoundError):
                return False  # replaced again already: reload from the newest MANIFEST
            raise
        successor = opened.pop()
        slots = range(len(self.slots), len(self.slots) + count)
        lengths = [length for _, length in manifest.segments[:count]]
        if lazy is not None:
            lazy.switched = True
        self.pending_remap = _remap.Remap(
            self.index,
            set(self.slot_ids[:inputs]),
            self.segments[:inputs],  # kept open: entries still point into them
            list(zip(slots, opened, lengths, strict=True)),
            lambda seg, length: self._read_hint(seg, length, True, keys_in_order=True),
            self.fs.read_file,
        )
        self.slots.extend(opened)
        self.segments = opened + self.segments[inputs:]
        self.slot_ids = [*slots, *self.slot_ids[inputs:]]
        self.adopt(manifest, successor)
        return True

    def remap_step(self) -> None:
        """One step of an adopted switch's index work (``_remap``); then, when
        all is done, close the inputs. Reload if an output has no valid hint."""
        pending = self.pending_remap
        if pending is None:
            return
        try:
            done = pending.step()
        except _remap.NoHint:
            self.load_latest(self.read_manifest())
            return
        if done:
            self._drop_remap()

    def finish_remap(self) -> None:
        """All of an adopted switch's index work, now."""
        while self.pending_remap is not None:
            self.remap_step()

    def adopt(self, manifest: fmt.Manifest, successor: Segment) -> None:
        """Append ``successor`` as the new, empty active segment of ``manifest``."""
        self.slot_ids.append(len(self.slots))
        self.slots.append(successor)
        self.segments.append(successor)
        self.manifest = manifest
        self.reset_active()

    # -- reading and inspection ----------------------------------------------

    def read(self, location: int, key: str, copy: bool = True) -> bytes | Buffered:
        """The value of ``key``, whose index entry is ``location``, as
        ``_values.load`` gives it: verified, its signature checked on a
        signed store, decompressed; errors name the key."""
        seg = self.slots[location >> _SLOT_SHIFT]
        return load(self.fs, seg, location & _OFFSET_MASK, key, self.signer, copy)

    def stats(self) -> dict[str, int]:
        """What ``Engine.stats`` reports, from what this view knows."""
        return {
            "keys": len(self.index),
            "segments": len(self.segments),
            "segment_bytes": sum(seg.readable_end for seg in self.segments),
            "generation": self.manifest.generation,
            "last_txid": self.txid,
            # Bytes of an unsynced tail a power loss damaged (docs/durability.md).
            "unsynced_tail_bytes": self.unsynced_tail,
        }

    def close(self) -> None:
        """Close every descriptor and map (idempotent)."""
        for seg in self.segments:
            try:
                seg.close()
            except OSError:
                pass
        self.segments = []
        self.slots = []
        self.slot_ids = []
        self._drop_remap()
        if isinstance(self.index, LazyIndex):
            self.index.release()  # the map of the INDEX file
        if self.changes is not None:
            self.counter = _NO_COUNTER
            self.changes.close()
            self.changes = None
