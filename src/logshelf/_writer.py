"""The write side of a handle: exists only for writable handles.

A read-only handle has no :class:`Writer` at all, rather than a flag checked
on every path. Everything here runs under the store's writer lock (the
engine takes the handle mutex first, which for a writer is the lock's own
thread mutex): catch up with other writers and cut a torn tail
(:meth:`Writer.prepare`), append one batch (:meth:`Writer.write`, the one
path for single writes, bulk writes and transactions), undo a failed append,
sync, and roll over to a new segment.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from . import _format as fmt
from . import _index
from ._buffer_format import BUFFERS, pack_parts
from ._fs import FileSystem
from ._index_file import write_table_at_close
from ._locking import ExclusiveFileLock, WriterLock
from ._options import Options
from ._pieces import pieces
from ._records import Record
from ._segment import Segment, check_tail
from ._segment_set import (
    SealedHint,
    remove_segments,
    seal_record,
    sealed_hint,
    write_hint,
    write_manifest,
    write_sealed_hint,
)
from ._synced import MarkWriter
from ._tail_cut import cut_tail
from ._view import HEADER_END, View
from .errors import HandlePoisonedError, LockTimeoutError

__all__ = ["Writer"]

_log = logging.getLogger("logshelf")

_SLOT_SHIFT = _index.SLOT_SHIFT
_PUT = fmt.KIND_PUT
_BUFFERS = BUFFERS
# Before long work takes the writer lock it catches up with other writers
# until at most this many bytes are left to parse under the lock (or until
# this many rounds have not got there: writers that outpace the parse).
_LOCK_BACKLOG = 64 << 10
_CATCH_UP_ROUNDS = 8
# The syncs of durability="always" rewrite the synced mark at most this often
# (seconds). The mark reaches the disk only with the kernel's writeback,
# seconds later, so a fresher one buys nothing; at thousands of syncs a second
# its pwrite was 1-2 us each (bench_synced_mark.py).
_MARK_EVERY = 0.05
# write_one calls os.write itself for records up to this size (larger ones
# go through FileSystem.append, which writes them in pieces).
_DIRECT_MAX = 1 << 20
_os_write = os.write
# The writer starts the kernel's writeback every this many appended bytes (each
# request takes ~0.05 ms, Segment.start_writeback): a rollover syncs the rest.
_WRITE_BEHIND = 256 << 10


class Writer:
    """Writes to one store for one handle; see the module docstring."""

    def __init__(self, view: View, options: Options) -> None:
        self.view = view
        self.options = options
        self.fs = options.fs
        self.path = options.path
        self.lock = self._new_lock()
        #: The error of a failed sync (or undo): the handle refuses writes after it.
        self.poisoned: BaseException | None = None
        #: Set by a rollover: check whether to compact once the write returned its locks.
        self.compact_due = False
        #: The clock of ``durability="interval"``: the FileSystem's, so a test's fake reaches it.
        self.clock: Callable[[], float] = self.fs.monotonic
        self.last_sync = self.clock()
        #: The synced mark (``_synced``): rewritten after every sync made under the lock.
        self.marks = MarkWriter(self.fs, self.path, options.mode)
        self._marked_at = float("-inf")
        #: The hint of the segment the last rollover sealed, until it is
        #: written outside the writer lock (``write_deferred``).
        self.sealed_hint: SealedHint | None = None
        # Read on every write.
        self._max_size = options.max_segment_size
        self._direct = type(self.fs).append is FileSystem.append
        self._syncs = options.durability != "none"

    def _new_lock(self) -> WriterLock:
        opts = self.options
        return WriterLock(
            os.path.join(self.path, fmt.LOCK_NAME),
            self.path,
            opts.lock_timeout,
            opts.lock_backend,
            self.fs,
            opts.mode,
        )

    def renew_lock(self) -> None:
        """In a forked child: the parent's lock is not ours; take a fresh one."""
        # The parent's lock object must not release anything on its way out:
        # its registry entry is gone and its key now names ours.
        self.lock.abandon()
        self.lock = self._new_lock()

    def close(self) -> None:
        self.marks.close()
        self.lock.close()

    def check(self) -> None:
        """Raise :class:`HandlePoisonedError` if an earlier sync failed."""
        if self.poisoned is not None:
            raise HandlePoisonedError(
                f"an earlier sync of {self.path} failed ({self.poisoned}); this handle "
                "refuses further writes: close and reopen the store"
            ) from self.poisoned

    @contextmanager
    def hold(self, deadline: float | None = None) -> Iterator[None]:
        """Hold the OS writer lock (the caller holds the handle mutex)."""
        self.lock.enter_held(deadline)
        try:
            yield
        finally:
            self.lock.exit_held()

    # -- the write path ------------------------------------------------------

    def write(self, records: Sequence[Record], deadline: float | None = None) -> int:
        """Take the writer lock, catch up, and append ``records`` (one per key)
        as one batch at the end of the active segment (rolling over first if
        it would not fit), index it, and sync as the durability mode asks:
        the one write path, for single writes, bulk writes and transaction
        commits. Deletes of absent keys are left out; return how many
        records were written (0: nothing was). The caller holds the mutex.
        On any failure the segment is cut back to where the batch started."""
        if len(records) == 1 and not records[0].codec & _BUFFERS:
            r = records[0]
            return self.write_one(
                r.kind, r.key, r.key_bytes, r.codec, r.data, r.vcrc, r.rawlen, deadline
            )
        view = self.view
        lock = self.lock
        # If the change counter still holds what this view saw when it last
        # caught up, nobody has written since: skip the size check (see
        # View.follow_writers).
        at = lock.enter_held(deadline)
        try:
            segments = view.segments
            if (at != view.seen and self.fs.size(segments[-1].fd) != view.end) or view.seal_next:
                self.prepare(remap_later=True)
            index = view.index
            all_puts = True
            # (A batch of one plain record went to write_one: one here is a
            # put with buffers.)
            if len(records) > 1 and not all(r.kind == _PUT for r in records):
                all_puts = False
                if view.pending_remap is not None and not view.pending_remap.started:
                    view.remap_step()
                records = [r for r in records if r.kind == _PUT or r.key in index]
                if not records:
                    return 0
            for attempt in (0, 1):
                segments = view.segments
                active = segments[-1]
                start = view.end
                location = (view.slot_ids[-1] << _SLOT_SHIFT) | start
                txid = view.max_txid + 1
                parts = None
                try:
                    data, locations = fmt.pack_batch(active.salt, txid, records, location)
                except fmt.HasBuffers:
                    # Arrays' buffers are written from their own memory,
                    # never joined (_buffer_format), and so are the values
                    # of a large batch (_pieces): a list of parts.
                    parts, locations, size = pack_parts(active.salt, txid, records, location)
                if parts is None:
                    size = len(data)
                if attempt or start + size <= self._max_size or start <= HEADER_END:
                    break
                self.roll(drop_old=False)
            view.max_txid = txid  # burnt even if the write fails
            try:
                if parts is None:
                    self.fs.append(active.fd, data)
                else:
                    for piece in pieces(parts):
                        self.fs.append(active.fd, piece)
            except BaseException:
                self.undo(active, start)
                raise
            view.txid = txid
            view.apply_written(records, locations, all_puts)
            view.end = end = start + size
            active.readable_end = end
            if self._syncs:
                self.sync_after_write()
        finally:
            due = self._end_hold()
        if end - active.writeback_from >= _WRITE_BEHIND:
            active.start_writeback(end)
        if due:
            self.write_deferred()
            view.remap_step()
        return len(records)

    def write_one(
        self,
        kind: int,
        key: str,
        kb: bytes,
        codec: int,
        data: bytes,
        vcrc: int,
        rawlen: int,
        deadline: float | None = None,
    ) -> int:
        """:meth:`write` of one put or delete without out-of-band buffers:
        the single-key write (``db[k] = v``, ``del db[k]``), with nothing
        else. Returns 1, or 0 for a delete of an absent key (nothing
        written). The caller holds the mutex."""
        view = self.view
        lock = self.lock
        at = lock.enter_held(deadline)
        try:
            if (
                at != view.seen and self.fs.size(view.segments[-1].fd) != view.end
            ) or view.seal_next:
                self.prepare(remap_later=True)
            if kind != _PUT:
                if view.pending_remap is not None and not view.pending_remap.started:
                    view.remap_step()  # a key the switch left out is absent
                if key not in view.index:
                    return 0
            for attempt in (0, 1):
                segments = view.segments
                active = segments[-1]
                start = view.end
                txid = view.max_txid + 1
                record = fmt.pack_record(
                    active.salt, txid, kind, True, codec, kb, data, vcrc, rawlen
                )
                if attempt or start + len(record) <= self._max_size or start <= HEADER_END:
                    break
                self.roll(drop_old=False)
            view.max_txid = txid  # burnt even if the write fails
            try:
                # os.write itself on the real FileSystem (a test's overrides
                # append), for small records: a call costs here.
                if not self._direct or len(record) > _DIRECT_MAX:
                    self.fs.append(active.fd, record)
                elif _os_write(active.fd, record) != len(record):
                    raise OSError(f"short write to {active.path}")  # undone below
            except BaseException:
                self.undo(active, start)
                raise
            view.txid = txid
            # view.index, not a local: a rollover may have replaced it.
            if kind == _PUT:
                view.index[key] = (view.slot_ids[-1] << _SLOT_SHIFT) | start
                if view.active_deletes:
                    view.active_deletes.discard(key)
            else:
                view.index.pop(key, None)
                view.active_deletes.add(key)
            view.end = end = start + len(record)
            active.readable_end = end
            if self._syncs:
                self.sync_after_write()
        finally:
            due = self._end_hold()
        if end - active.writeback_from >= _WRITE_BEHIND:
            active.start_writeback(end)
        if due:
            self.write_deferred()
            view.remap_step()
        return 1

    def _end_hold(self) -> bool:
        """End a write's hold. True when work was left for after it (a
        switch's remap, ``_remap``, reads doing steps while ``seen`` is
        unset; a rollover's hint) and may run now: the OS lock then goes
        with the hold, lease or not, so it holds up no other process."""
        view = self.view
        lock = self.lock
        if view.pending_remap is None and self.sealed_hint is None:
            released = lock.exit_held()
            if released is not None:
                # Caught up under the lock, then only this write: this view
                # is up to date as of the counter it just set.
                view.seen = released
            return False
        lock.yield_lease()
        lock.exit_held()
        view.seen = b""
        return not lock.busy()

    def undo(self, seg: Segment, start: int) -> None:
        """A write failed part-way: cut back to where it started. If even that
        fails, the handle can no longer know what is on disk."""
        try:
            seg.truncate(start)
        except BaseException as exc:
            self.poisoned = exc

    def sync_after_write(self) -> None:
        now = self.clock()
        opts = self.options
        if opts.durability == "always" or now - self.last_sync >= opts.sync_interval:
            self.sync_active(now)
            self.last_sync = now

    def sync_active(self, now: float | None = None, mark: bool = True) -> None:
        """fdatasync the active segment, then rewrite the synced mark (for a
        write's sync, at ``now``: at most every ``_MARK_EVERY`` seconds), if ``mark``."""
        view = self.view
        active, end = view.active, view.end
        try:
            active.sync()
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages
            # and a retry can "succeed": never trust this handle again.
            self.poisoned = exc
            raise
        # Only now, after the sync returned: the mark must never name bytes
        # that are not durable yet (see _synced). It is not synced itself: it
        # reaches the disk with the kernel's writeback (until then an older,
        # lower mark stands), at no cost to this write.
        if not mark:
            pass  # ahead of a rollover, which marks its own sync
        elif now is not None:
            if now - self._marked_at >= _MARK_EVERY:
                self._marked_at = now
                self.marks.record(active.id, active.salt, end)
        elif self.lock.busy():
            self.marks.record(active.id, active.salt, end)
        else:
            self._mark_unlocked(active, end)

    def _mark_unlocked(self, active: Segment, end: int) -> None:
        """``sync()`` and ``close()`` sync without the writer lock: take it only
        if it is free at once, and write the mark only if this view is still
        the store's current one (another writer may have rolled over, and a
        mark of our sealed segment would replace the mark of its successor)."""
        lock = self.lock
        try:
            lock.enter_held(time.monotonic())
        except (LockTimeoutError, OSError):
            return  # another process is writing; its own syncs keep the mark
        try:
            view = self.view
            if active is view.active and not view.seal_next and self.fs.size(active.fd) == end:
                self.marks.record(active.id, active.salt, end)
        finally:
            lock.exit_held()

    # -- catching up, torn tails ---------------------------------------------

    def prepare(self, remap_later: bool = False) -> None:
        """Under the writer lock: catch up with other writers, cut a torn tail,
        finish an interrupted rollover, so that appending is safe. Whatever
        lies beyond the last committed batch at this point is garbage: no
        other writer can be mid-write while we hold the lock.

        ``remap_later``: a compaction switch met here is adopted, but its
        remap of the index (``_remap``) is left to the caller, to run once
        the lock is released (``view.pending_remap``)."""
        view = self.view
        view.remap_later = remap_later
        try:
            self._prepare()
        finally:
            view.remap_later = False

    def _prepare(self) -> None:
        view = self.view
        while True:
            if view.seal_next:
                # Our active segment ends with a SEAL. Usually its writer has
                # published the successor since we saw it: adopt that. Only if
                # the MANIFEST still names the sealed segment (read under the
                # lock, so its writer died mid-rollover) finish the rollover.
                view.follow_seal()
                if view.seal_next:
                    self.roll(drop_old=False, seal_written=True)
                continue
            active = view.active
            size = active.size()
            if size == view.end:
                return
            scan = view.catch_up(size)
            if scan is None or view.active is not active or view.seal_next:
                continue  # the segment set changed: look at the new active segment
            if view.end < size:
                unsynced = check_tail(active, scan, size, view.floor_of(active))
                self._cut_tail(active, view.end, size, unsynced)

    def catch_up_before_locking(self) -> None:
        """Parse what other writers appended, outside the writer lock, until
        little is left for :meth:`prepare` to parse under it (where every
        writer of the store waits). For the lock holds that follow long work:
        opening (loading the index) and a compaction's two steps (its copy
        takes seconds). One refresh is not enough while others keep writing:
        a writer appending during a compaction left ~100,000 records, whose
        parse under the lock stalled every writer for 0.1 s and more. Each
        round parses what arrived during the previous one, so the backlog
        shrinks quickly."""
        view = self.view
        self.write_deferred()
        # A compaction's plan snapshots the index: no retired slot in it.
        view.finish_remap()
        for _ in range(_CATCH_UP_ROUNDS):
            view.refresh()
            if view.seal_next or self.fs.size(view.active.fd) - view.end <= _LOCK_BACKLOG:
                return

    def _cut_tail(self, seg: Segment, end: int, size: int, unsynced: bool = False) -> None:
        """Quarantine and cut bytes after the last committed batch
        (``_tail_cut``), then record the new end as synced."""
        cut_tail(self.fs, self.path, seg, end, size, self.options.mode, unsynced)
        self.marks.record(seg.id, seg.salt, end)
        if unsynced:
            self.view.unsynced_tail = size - end

    # -- the segment set -------------------------------------------------------

    def roll(
        self,
        drop_old: bool,
        seal_written: bool = False,
        *,
        reserve_ids: int = 0,
        replace: tuple[int, tuple[tuple[int, int], ...]] | None = None,
    ) -> None:
        """Start a new active segment. Order: new file durable, then SEAL in
        the old one (readers notice it with their cheap size check), then the
        MANIFEST switch (the commit point).

        ``drop_old`` (flag "n") leaves the old segments out of the new
        MANIFEST. ``reserve_ids`` allocates that many further segment ids for
        a compaction's output files. ``replace=(n, entries)`` commits a
        compaction: the first ``n`` sealed segments give way to ``entries``;
        the SEAL is then what tells every handle to follow the switch.
        """
        view, fs, mode = self.view, self.fs, self.options.mode
        if not seal_written:
            generation = view.manifest.generation
            view.refresh_manifest()
            if view.manifest.generation != generation:
                # Our view was stale (see View.refresh_manifest): catch up
                # with the current active segment before sealing it.
                self.prepare()
        old = view.active
        manifest = view.manifest
        if seal_written:
            new_id = view.seal_next
            seal_txid = view.txid
        else:
            new_id = manifest.next_segment_id
            seal_txid = view.max_txid + 1
        new = Segment.create(fs, self.path, new_id, seal_txid, mode)
        try:
            fs.sync_directory(self.path)
            if not seal_written:
                seal = seal_record(old.salt, seal_txid, new_id)
                view.max_txid = seal_txid
                start = view.end
                try:
                    old.append(seal)
                except BaseException:
                    self.undo(old, start)
                    raise
                view.end = start + len(seal)
                view.txid = seal_txid
                old.readable_end = view.end
                # The old segment is sealed now: nothing may ever be appended
                # after its SEAL, even if the rest of this rollover fails. The
                # next write of this handle finishes the rollover (or adopts
                # the MANIFEST, should the switch below have happened).
                view.seal_next = new_id
            self.sync_active()
            # The new segment's first mark, durable before the MANIFEST names
            # it: every active segment has one from its start (its header
            # was fsynced by Segment.create). A sync here costs little next to
            # the rollover's own, and the mark then never depends on writeback.
            self.marks.record(new.id, new.salt, HEADER_END)
            self.marks.make_durable()
            sealed = tuple(
                (seg.id, length)
                for seg, (_, length) in zip(view.segments[:-1], manifest.segments[:-1], strict=True)
            )
            if replace is not None:
                count, entries = replace
                sealed = (*entries, *sealed[count:])
            segments: tuple[tuple[int, int], ...]
            if drop_old:
                segments = ((new_id, fmt.ACTIVE),)
            else:
                segments = (*sealed, (old.id, view.end), (new_id, fmt.ACTIVE))
            next_id = max(manifest.next_segment_id, new_id + 1) + reserve_ids
            new_manifest = fmt.Manifest(manifest.generation + 1, next_id, segments)
            write_manifest(fs, self.path, new_manifest, mode)
        except BaseException:
            new.close()
            raise
        sync_error = self.sync_manifest_rename()
        try:
            self._after_roll(old, new, new_manifest, seal_txid, drop_old, reserve_ids, replace)
        finally:
            if sync_error is not None:
                raise sync_error

    def _after_roll(
        self,
        old: Segment,
        new: Segment,
        new_manifest: fmt.Manifest,
        seal_txid: int,
        drop_old: bool,
        reserve_ids: int,
        replace: tuple[int, tuple[tuple[int, int], ...]] | None,
    ) -> None:
        """The in-memory half of :meth:`roll`, once its MANIFEST is in place."""
        view = self.view
        if not drop_old:
            # Only after the switch: a hint covering the SEAL must never exist
            # while the MANIFEST still calls that segment active, or a reopen
            # would skip the SEAL and append after it. Written once the lock is
            # released (``sealed_hint``: only a copy of the index is taken
            # here). A crash before leaves the segment without a hint: an open
            # scans it.
            if self.sealed_hint is not None:
                self.write_deferred()  # two rollovers in one hold: rare
            self.sealed_hint = sealed_hint(view, new.id)
        if replace is not None or len(view.slots) >= _index.MAX_SEGMENTS - 1:
            # Follow our own SEAL like any other handle, on the next
            # operation, after the writer lock is released: it retires the
            # inputs' slots and remaps the keys that moved from the outputs'
            # hints (``_remap``). (Or reloads, renumbering slots that would
            # run out.)
            new.close()
            view.seal_next = new.id
            return
        if not drop_old and not reserve_ids and self.options.auto_compact is not None:
            self.compact_due = True
        if drop_old:
            for seg in view.segments:
                seg.close()
            remove_segments(self.fs, self.path, [seg.id for seg in view.segments])
            view.segments = []
            view.renumber()
            view.index = {}
        view.adopt(new_manifest, new)
        view.txid = max(view.txid, seal_txid)
        view.max_txid = max(view.max_txid, seal_txid)

    def sync_manifest_rename(self) -> OSError | None:
        """fsync the directory after a MANIFEST replacement. The new MANIFEST
        is in place whatever happens here, so the handle must go on to adopt
        it; but a failed directory sync, like a failed fsync, means nothing
        about durability can be trusted: poison the handle and report it."""
        try:
            self.fs.sync_directory(self.path)
        except OSError as exc:
            self.poisoned = exc
            return exc
        return None

    def write_deferred(self) -> None:
        """Write the hint a rollover left for after the writer lock."""
        sealed, self.sealed_hint = self.sealed_hint, None
        if sealed is not None:
            write_sealed_hint(self.view, sealed, self.options.mode)

    def write_active_hint(self) -> None:
        """At close: a hint of the active segment, unless one covers it
        already (and the hint a rollover left for after the lock)."""
        self.write_deferred()
        view = self.view
        if not write_table_at_close(view, self.options.mode):
            return  # a lazy index whose INDEX file still covers nearly all
        if view.end > HEADER_END and view.end != view.hinted_end and not view.seal_next:
            write_hint(view, self.options.mode)
            view.hinted_end = view.end

    def compaction_lock(self) -> ExclusiveFileLock:
        """The lock that keeps two compactions (and garbage collection) apart."""
        opts, path = self.options, os.path.join(self.path, fmt.COMPACT_LOCK_NAME)
        return ExclusiveFileLock(path, opts.lock_backend, self.fs, opts.mode)
