"""The bytes-level engine: a thin front over the view, the writer and compaction.

The engine maps ``str`` keys to stored values (already serialized and maybe
compressed: ``store.py`` does that) and owns what every public operation
shares: the handle's mutex, fork handling, the transaction buffer, and the
order of steps. The work itself lives in one module per job (see
``docs/design.md``): ``_view`` (what this handle knows of the log and how it
follows other writers), ``_writer`` (the write path, only for writable
handles), ``_segment_set`` (the files of the store), ``_compaction``.

Concurrency (``docs/concurrency.md``): one re-entrant mutex per handle (a
writable handle's is its writer lock's, shared by the process's handles on
the store); writers of all processes serialize on the writer lock, catch up
under it, then append one batch with one ``write``; readers never lock, and
follow other writers' committed batches when the change counter moves.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from . import _compaction, _forking, _inspect
from . import _format as fmt
from ._buffer_format import BUFFERS, Buffered
from ._index import OFFSET_MASK, SLOT_SHIFT
from ._index_file import load_index, open_view, remove_stale_table
from ._options import Options
from ._records import Record, delete_record, encode_key, new_record
from ._segment_set import collect_garbage, ensure_store
from ._signing import Signer, latest_signed, open_signer
from ._txn import Transaction
from ._view import HEADER_END, View
from ._writer import Writer
from .errors import CorruptionError, LockTimeoutError, ReadOnlyError, StoreClosedError, StoreError

__all__ = ["Engine"]

_T = TypeVar("_T")

_log = logging.getLogger("logshelf")

_PUT = fmt.KIND_PUT
_DELETE = fmt.KIND_DELETE
_COUNTER = fmt.CHANGES_COUNTER
_MAX_KEY_BYTES = fmt.MAX_KEY_BYTES
_RECORD_SIZE = fmt.RECORD_HEADER.size
# Anything but a plain value (a codec, buffers, a signature) leaves the fast path.
_CODEC_MASK = fmt.CODEC_MASK | fmt.FLAG_BUFFERS | fmt.FLAG_SIGNED
_SIGNED_ONLY = fmt.FLAG_SIGNED
_BUFFERS = BUFFERS  # in the codec field of a put, not the flags byte
_crc32 = zlib.crc32
_get_ident = threading.get_ident
# Automatic compaction waits for at least this much dead data (or one
# max_segment_size, if that is smaller).
_AUTO_COMPACT_MIN_DEAD = 64 << 20


class Engine:
    """A handle on one store directory; see the module docstring.

    Implements the bytes-store protocol that :class:`logshelf.Shelf` is typed
    against (``_bytes_store.BytesStore``).
    """

    #: Values with out-of-band buffers are stored (``_buffer_format``).
    out_of_band = True

    def __init__(self, options: Options) -> None:
        self.options = options
        self.path = options.path
        self.flag = options.flag
        self.writable = options.writable
        self._fs = options.fs
        self._timeout = options.lock_timeout
        self._mutex = threading.RLock()
        self._closed = False
        self._forked = False
        # False when closed or forked: one attribute test on the hot paths.
        self._ok = True
        # When lock_timeout is set: the deadline of the current operation's
        # lock waits (its mutex wait and its OS-lock wait share one budget).
        self._deadline: float | None = None
        self._txn: Transaction | None = None
        self._signer: Signer | None = None
        self._view = View(self._fs, self.path, self.writable)
        self._writer: Writer | None = None
        self._open()
        _forking.register(self)

    # -- open ----------------------------------------------------------------

    def _open(self) -> None:
        ensure_store(self._fs, self.path, self.flag, self.options.mode)
        view = self._view
        try:
            # Read the MANIFEST before creating anything (even LOCK): a
            # directory that is not a store must be left exactly as it was.
            manifest = view.read_manifest()
            view.open_counter()
            if self.writable:
                writer = self._writer = Writer(view, self.options)
                # Share the process-wide lock's mutex: a write then takes one
                # thread lock, not two, and handles on one store never
                # interleave inside a process.
                self._mutex = writer.lock.mutex
            open_view(view, manifest)  # from the INDEX file when it can
            if self._writer is not None:
                self._writer.catch_up_before_locking()
                self._open_writer(self._writer)
            else:
                view.signer = open_signer(self.options, self.path, False, empty=False)
            self._signer = view.signer
        except BaseException:
            self._close_files()
            raise

    def _open_writer(self, writer: Writer) -> None:
        """Under the writer lock: cut a torn tail, reset for flag "n", and
        remove what a crash left behind."""
        view = self._view
        mutex = self._acquire()
        try:
            with writer.hold(self._deadline):
                writer.prepare()
                if self.flag == "n" and (
                    view.index or view.end > HEADER_END or len(view.segments) > 1
                ):
                    writer.roll(drop_old=True)
                # Unreferenced files go, unless a compaction runs (_segment_set).
                live = {seg.id for seg in view.segments}
                if collect_garbage(self._fs, self.path, live, writer.compaction_lock()):
                    remove_stale_table(view)
                # Under the lock: a new signed store gets its identity once.
                empty = not view.index and view.end <= HEADER_END and len(view.segments) == 1
                view.signer = open_signer(self.options, self.path, True, empty)
        finally:
            mutex.release()

    # -- the handle mutex: the one way in -------------------------------------

    def _acquire(self, deadline: float | None = None, usable: bool = True) -> threading.RLock:
        """Take this handle's mutex and return it (the caller releases that
        object: after a fork the handle swaps in a new one).

        Waits at most ``lock_timeout`` (or until ``deadline``); sets
        ``self._deadline`` for the operation's later lock waits. With
        ``usable`` (every operation but ``close``), a closed handle raises
        :class:`StoreClosedError` and a forked one is readied for the child.
        """
        while True:
            mutex = self._mutex
            if self._timeout is None:
                mutex.acquire()
            else:
                if deadline is None:
                    deadline = time.monotonic() + self._timeout
                if not mutex.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                    raise LockTimeoutError(
                        f"timed out after {self._timeout} s waiting for the writer lock "
                        f"of {self.path} (held by another thread of this process)"
                    )
                self._deadline = deadline
            if self._ok or not usable:
                return mutex
            if self._closed:
                mutex.release()
                raise StoreClosedError(f"invalid operation on closed store {self.path}")
            # Forked: take a fresh writer lock, whose mutex replaces ours.
            self._after_fork()
            mutex.release()

    def forget_after_fork(self) -> None:
        """In a forked child (see ``_forking``): a thread of the parent may have
        held the mutex at the fork and will never release it here."""
        self._mutex = threading.RLock()
        self._forked = True
        self._ok = False

    def _after_fork(self) -> None:
        """In a child process, on first use: keep the index and descriptors for
        reading, but take a fresh writer lock (the parent's lock descriptor
        is shared)."""
        self._forked = False
        self._ok = not self._closed
        self._txn = None
        if self._writer is not None:
            self._writer.renew_lock()
            self._mutex = self._writer.lock.mutex

    def _writable(self) -> Writer:
        writer = self._writer
        if writer is None:
            raise ReadOnlyError(f"store {self.path} was opened read-only (flag 'r')")
        writer.check()
        return writer

    # -- reads -------------------------------------------------------------------

    def get(self, key: str, copy: bool = True) -> bytes | Buffered | None:
        """The value of ``key`` as it was given to a put (decompressed, both
        checksums verified), or None when the key is absent. A value with
        out-of-band buffers is a ``Buffered``; ``copy=False`` maps its
        buffers instead of copying them (``_buffer_io``)."""
        mutex = self._acquire()
        try:
            txn = self._txn
            if txn is not None and key in txn.records and txn.thread == _get_ident():
                return txn.value(key)
            view = self._view
            if view.counter[_COUNTER] != view.seen:
                view.follow_writers()
            loc = view.index.get(key)
            if loc is None:
                return None
            seg = view.slots[loc >> SLOT_SHIFT]
            offset = loc & OFFSET_MASK
            m = seg.mapping
            if m is not None and offset + _RECORD_SIZE <= seg.mapped_end:
                # The common case in one call (a call costs a tenth of this
                # read): an uncompressed PUT of this key in the map of
                # committed bytes, its checksums checked by Segment.verified.
                # Anything else, and every error, goes through View.read,
                # which decompresses or says what is wrong, naming the key.
                try:
                    record = seg.verified(m, offset, seg.mapped_end, offset)
                except CorruptionError:
                    record = None
                if record is not None and record[0] == _PUT and record[5] == key.encode():
                    flags = record[2] & _CODEC_MASK
                    if not flags:
                        return record[6]
                    if flags == _SIGNED_ONLY and self._signer is not None:  # checked too
                        where = (seg.path, offset)
                        return self._signer.verify_plain(record[5], record[6], where)
            return view.read(loc, key, copy)
        finally:
            mutex.release()

    def get_many(self, keys: Iterable[str], copy: bool = True) -> list[bytes | Buffered | None]:
        """The values of ``keys`` (None for an absent key), all read from one
        state of the store: other processes' commits are applied once,
        before the first read, so the result never mixes data from before
        and after another writer's batch."""
        mutex = self._acquire()
        try:
            view = self._view
            view.follow_writers()
            txn = self._txn if self._txn is not None and self._txn.mine() else None
            values: list[bytes | Buffered | None] = []
            for key in keys:
                if txn is not None and key in txn.records:
                    values.append(txn.value(key))
                    continue
                loc = view.index.get(key)
                values.append(None if loc is None else view.read(loc, key, copy))
            return values
        finally:
            mutex.release()

    def contains(self, key: str) -> bool:
        mutex = self._acquire()
        try:
            view = self._view
            if view.counter[_COUNTER] != view.seen:
                view.follow_writers()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.present(key, view.index)
            return key in view.index
        finally:
            mutex.release()

    def keys(self) -> list[str]:
        """A snapshot of the live keys, in no promised order (roughly the
        order of their first write since the segments holding them were
        written; compaction and reopening change it)."""
        mutex = self._acquire()
        try:
            view = self._view
            view.follow_writers()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.keys(view.index)
            return list(view.index)
        finally:
            mutex.release()

    def __len__(self) -> int:
        mutex = self._acquire()
        try:
            view = self._view
            view.follow_writers()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.count(view.index)
            return len(view.index)
        finally:
            mutex.release()

    # -- writes ----------------------------------------------------------------

    def put(self, key: str, codec: int, data: bytes, rawlen: int) -> None:
        """Write one key: a batch of one record (the path
        ``benchmarks/bench_store.py`` measures as "insert")."""
        try:
            kb = key.encode("utf-8")
        except UnicodeEncodeError:
            kb = encode_key(key)  # raises the ValueError that names the key
        if len(kb) > _MAX_KEY_BYTES:
            encode_key(key)
        if self._signer is not None:
            codec, data = self._signer.sign(kb, codec, data, rawlen)
        if codec & _BUFFERS:  # written from the arrays' own memory: write()'s path
            self._write((new_record((_PUT, key, kb, codec, data, _crc32(data), rawlen)),))
        else:
            self._write_one(_PUT, key, kb, codec, data, _crc32(data), rawlen)

    def delete(self, key: str) -> bool:
        """Delete a key; return False when it was not present (nothing written)."""
        return self._write_one(_DELETE, key, encode_key(key), 0, b"", 0, 0) > 0

    def put_many(self, records: list[Record]) -> None:
        """Write ``records`` (puts) as one atomic batch: all or none become
        visible, to other processes and after a crash. A later record for
        the same key wins."""
        if records:
            self._write(latest_signed(records, self._signer))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the present keys among ``keys`` as one atomic batch; return
        how many were present."""
        records = {key: delete_record(key) for key in keys}
        return self._write(list(records.values())) if records else 0

    def _write_one(
        self, kind: int, key: str, kb: bytes, codec: int, data: bytes, vcrc: int, rawlen: int
    ) -> int:
        """:meth:`_write` of one plain record (a put or a delete, no buffers),
        without building the record unless a transaction buffers it: the
        path of ``db[k] = v`` and ``del db[k]``, where every step costs."""
        mutex = self._acquire()
        try:
            txn = self._txn
            if txn is not None and txn.thread == _get_ident():
                record = new_record((kind, key, kb, codec, data, vcrc, rawlen))
                return txn.buffer(record, self._view.index)  # a bool is the count 0 or 1
            writer = self._writer
            if writer is None or writer.poisoned is not None:
                writer = self._writable()  # raises
            written = writer.write_one(kind, key, kb, codec, data, vcrc, rawlen, self._deadline)
        finally:
            mutex.release()
        if writer.compact_due:
            self._after_write()
        return written

    def _write(self, records: tuple[Record, ...] | list[Record]) -> int:
        """The one write path of the front: buffer into this thread's open
        transaction, or write one batch under the writer lock. Deletes of
        absent keys are left out; return how many records were written."""
        mutex = self._acquire()
        try:
            txn = self._txn
            if txn is not None and txn.thread == _get_ident():
                # Inside this thread's transaction (writability was checked
                # when it began): buffer until commit.
                index = self._view.index
                if len(records) == 1:
                    return txn.buffer(records[0], index)  # a bool is the count 0 or 1
                return sum(txn.buffer(record, index) for record in records)
            writer = self._writer
            if writer is None or writer.poisoned is not None:
                writer = self._writable()  # raises
            written = writer.write(records, self._deadline)
        finally:
            mutex.release()
        if writer.compact_due:
            self._after_write()
        return written

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the writer lock; buffer writes; commit them as one batch.

        Nested calls join the outermost transaction. Other threads using this
        handle (or another handle on the same store in this process) wait
        until it ends.
        """
        mutex = self._acquire()
        try:
            writer = self._writable()
            if self._txn is not None:
                yield
                return
            with writer.hold(self._deadline):
                writer.prepare()
                txn = self._txn = Transaction()
                try:
                    yield
                    if txn.records:
                        writer.check()
                        # Another handle of this thread may have written
                        # meanwhile: write() catches up first.
                        writer.write(list(txn.records.values()))
                finally:
                    self._txn = None
        finally:
            mutex.release()
        self._after_write()

    def sync(self) -> None:
        """Make every write of this handle durable (fdatasync of the active segment)."""
        mutex = self._acquire()
        try:
            writer = self._writer
            if writer is not None and writer.poisoned is None:
                writer.sync_active()
                writer.last_sync = writer.clock()
        finally:
            mutex.release()

    def close(self) -> None:
        """Sync, write a hint for the active segment, release descriptors. Idempotent."""
        mutex = self._acquire(usable=False)
        try:
            if self._closed:
                return
            try:
                writer = self._writer
                if (
                    writer is not None
                    and writer.poisoned is None
                    and not self._forked
                    and self._view.segments
                ):
                    writer.sync_active()
                    writer.write_active_hint()
            finally:
                self._closed = True
                self._ok = False
                self._close_files()
        finally:
            mutex.release()
        _forking.unregister(self)

    def _close_files(self) -> None:
        self._view.close()
        if self._writer is not None:
            if self._forked:
                self._writer.lock.abandon()  # the child never took it
            else:
                self._writer.close()

    # -- inspection ------------------------------------------------------------

    def verify(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Check every record of every segment and every index entry.

        Returns a list of problems, empty when the store is healthy. Reads
        every byte of committed data, so it costs a full pass over the store;
        ``progress`` is called with a line after each segment and at the end.
        """
        mutex = self._acquire()
        try:
            self._view.refresh()
            return _inspect.verify(self._view, progress)
        finally:
            mutex.release()

    def stats(self) -> dict[str, int]:
        """Numbers for inspection: live keys, segments, committed bytes in the
        segments, MANIFEST generation and the last transaction id."""
        mutex = self._acquire()
        try:
            self._view.refresh()
            return self._view.stats()
        finally:
            mutex.release()

    def locate(self, key: str) -> tuple[str, int] | None:
        """``(segment file, offset)`` of the record holding ``key``'s live
        value, or None when it is absent (for inspection and debugging)."""
        mutex = self._acquire()
        try:
            view = self._view
            view.follow_writers()
            loc = view.index.get(key)
            if loc is None:
                return None
            return view.slots[loc >> SLOT_SHIFT].path, loc & OFFSET_MASK
        finally:
            mutex.release()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- compaction: the engine drives the steps of _compaction ------------------

    def compact(
        self,
        wait: bool = True,
        max_inputs: int | None = None,
        drop: _compaction.Drop | None = None,
    ) -> _compaction.CompactionResult:
        """Rewrite the live records of all sealed segments (sealing the active
        one first) and drop everything dead, while other handles read and
        write (``_compaction.py``). ``max_inputs`` and ``drop`` rewrite only
        the oldest segments and leave records out (eviction). ``wait=False``
        returns at once (``compacted=False``) when another compaction runs.
        With ``lock_timeout``, the waits before the plan share one budget,
        and so do the waits before the switch."""
        mutex = self._acquire()  # a closed or read-only handle fails before any lock
        try:
            writer = self._writable()
            load_index(self._view)  # not under the writer lock: the plan copies it
        finally:
            mutex.release()
        return _compaction.run(
            _compaction.Job(self.options, self._view, writer, self._signer, self._locked_step),
            wait,
            self._timeout if wait else 0.0,
            max_inputs,
            drop,
            self.stats,
        )

    def _locked_step(self, deadline: float | None, step: Callable[[Writer], _T]) -> _T:
        """Run a compaction step under the mutex and the writer lock, after
        catching up outside the lock."""
        mutex = self._acquire(deadline)
        try:
            writer = self._writable()
            if self._txn is not None:
                raise RuntimeError(
                    f"compact() cannot run inside a transaction on {self.path}: it would "
                    "hold the writer lock for the whole copy"
                )
            # Both steps roll over, and a rollover syncs the active segment
            # under the lock: most of what another writer left unsynced is
            # written now instead (5 ms of a 9 ms switch hold, measured).
            # Synced before catching up (what others append during the sync
            # is parsed outside the lock too) and once more after it (what
            # they appended while it ran).
            writer.sync_active(mark=False)
            writer.catch_up_before_locking()
            writer.sync_active(mark=False)
            with writer.hold(self._deadline):
                writer.prepare()
                return step(writer)
        finally:
            mutex.release()

    def _after_write(self) -> None:
        """Run an automatic compaction a rollover asked for, once the write
        that rolled over has let go of every lock (not inside a transaction,
        of this handle or of another on the same store in this thread)."""
        writer = self._writer
        if writer is None or not writer.compact_due or writer.lock.busy():
            return  # "not now": a later write asks again
        writer.compact_due = False
        threshold = self.options.auto_compact
        try:
            mutex = self._acquire()
            try:
                self._view.refresh()
                dead, sealed = _inspect.dead_bytes(self._view)
            finally:
                mutex.release()
            if threshold is None or dead < threshold * sealed:
                return
            if dead < min(_AUTO_COMPACT_MIN_DEAD, self.options.max_segment_size):
                return
            self.compact(wait=False)
        except (OSError, StoreError) as exc:
            # The write that triggered this succeeded; a failed compaction
            # changed nothing and must not look like a failed write.
            _log.warning("automatic compaction of %s failed: %s", self.path, exc)
