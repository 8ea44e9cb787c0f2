"""The bytes-level engine: str keys to stored values on an append-only log.

The engine owns the index, the segment set, recovery, the write path, refresh
from other processes, transactions and durability. It never pickles: values
arrive already serialized (``store.py`` does that), which keeps this layer
inspectable with raw bytes.

Concurrency model (details in ``docs/concurrency.md``):

* One ``threading.RLock`` per handle serializes threads using that handle.
* Writers of all processes serialize on the store's writer lock. Under it a
  writer first catches up with what others appended (the write offset is the
  file's size, never a cached counter), cuts a torn tail if a crashed writer
  left one, then appends one batch with one ``write``.
* Readers never lock. Before each operation a handle compares the active
  segment's size with the end of what it has applied and parses only complete,
  committed batches beyond it.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from . import _codecs, _compaction, _index
from . import _format as fmt
from ._fs import FileSystem
from ._locking import ChangeCounter, ExclusiveFileLock, WriterLock
from ._segment import Segment, SegmentScan
from .errors import (
    CorruptionError,
    FormatError,
    HandlePoisonedError,
    LockTimeoutError,
    ReadOnlyError,
    StoreClosedError,
    StoreError,
    StoreNotFoundError,
)

__all__ = ["DURABILITY_MODES", "Engine", "Record"]

_log = logging.getLogger("logshelf")

DURABILITY_MODES = ("none", "always", "interval")

# Index entries are packed ints (see _index.py); module constants for the hot paths.
_SLOT_SHIFT = _index.SLOT_SHIFT
_OFFSET_MASK = _index.OFFSET_MASK

_HEADER_END = fmt.SEGMENT_HEADER.size
# For the read path in get().
_RECORD_SIZE = fmt.RECORD_HEADER.size
_unpack_record = fmt.RECORD_HEADER.unpack_from
_CODEC_MASK = fmt.CODEC_MASK
_crc32 = zlib.crc32
# At most this much of a torn tail is copied to quarantine/ before it is cut.
_QUARANTINE_MAX = 16 << 20
# Automatic compaction waits for at least this much dead data (or one
# max_segment_size, if that is smaller).
_AUTO_COMPACT_MIN_DEAD = 64 << 20
# Before a compaction takes the writer lock it catches up with other writers
# until at most this many bytes are left to parse under the lock (or until
# this many rounds have not got there: writers that outpace the parse).
_LOCK_BACKLOG = 64 << 10
_CATCH_UP_ROUNDS = 8

_PUT = fmt.KIND_PUT
_DELETE = fmt.KIND_DELETE

# The counter bytes of CHANGES, and what stands in for them in a store that
# has no counter: odd, so never remembered, so every operation checks sizes.
_COUNTER = fmt.CHANGES_COUNTER
_NO_COUNTER = b"\x01" * fmt.CHANGES.size


class _MissingSegmentError(CorruptionError):
    """The MANIFEST names a segment file that does not exist. Corruption, unless
    a compaction replaced that MANIFEST meanwhile (see ``_load_latest``)."""


class _Guard:
    """Acquire an engine's mutex with its lock timeout; release that same
    mutex (the engine may swap in a new one after a fork)."""

    __slots__ = ("_engine", "_mutex")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._mutex = engine._mutex

    def __enter__(self) -> None:
        if not self._mutex.acquire(False):
            self._engine._wait_for(self._mutex)

    def __exit__(self, *exc: object) -> None:
        self._mutex.release()


# Live engines, so a fork can be detected without a getpid() per operation.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _mark_forked() -> None:
    for engine in list(_engines):
        engine._forked = True
        engine._ok = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


# How the engine carries one record to write: (kind, key, key bytes, codec,
# stored value, crc32 of the stored value, rawlen). A tuple, not an object:
# it is built once per written key.
Record = tuple[int, str, bytes, int, bytes, int, int]


def encode_key(key: str) -> bytes:
    """UTF-8 bytes of a key, checked against the format's limits.

    Raises:
        ValueError: the key holds lone surrogates or is longer than 65535 bytes.
    """
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"key {key!r} cannot be encoded as UTF-8: {exc.reason}") from None
    if len(data) > fmt.MAX_KEY_BYTES:
        raise ValueError(
            f"key of {len(data)} bytes is too long (at most {fmt.MAX_KEY_BYTES} bytes "
            f"in UTF-8): {key[:40]!r}..."
        )
    return data


class Engine:
    """A handle on one store directory; see the module docstring.

    Args:
        path: the store directory.
        flag: "r", "w", "c" or "n" with dbm meanings.
        durability: "none", "always" or "interval".
        sync_interval: seconds between syncs in "interval" mode.
        lock_timeout: seconds to wait for the writer lock; None waits forever.
        lock_backend: "auto", "flock" or "filelock".
        max_segment_size: roll over to a new segment beyond this many bytes.
        auto_compact: after a rollover, compact when at least this fraction of
            the sealed segments' bytes is dead (overwritten or deleted data)
            and the dead bytes reach ``min(64 MiB, max_segment_size)``; None
            turns automatic compaction off.
        fs: the file-system layer (tests inject faults through it).
    """

    def __init__(
        self,
        path: str,
        flag: str = "c",
        *,
        durability: str = "none",
        sync_interval: float = 1.0,
        lock_timeout: float | None = None,
        lock_backend: str = "auto",
        max_segment_size: int = 128 << 20,
        auto_compact: float | None = 0.5,
        fs: FileSystem | None = None,
    ) -> None:
        if flag not in ("r", "w", "c", "n"):
            raise ValueError(f"flag must be one of 'r', 'w', 'c' or 'n', not {flag!r}")
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if not sync_interval >= 0:
            raise ValueError(f"sync_interval must be >= 0 seconds, not {sync_interval!r}")
        if lock_timeout is not None and not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be None or >= 0 seconds, not {lock_timeout!r}")
        if max_segment_size < 4096:
            raise ValueError(f"max_segment_size must be >= 4096 bytes, not {max_segment_size!r}")
        if auto_compact is not None and not 0 < auto_compact <= 1:
            raise ValueError(
                f"auto_compact must be None or a fraction in (0, 1], not {auto_compact!r}"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.flag = flag
        self.writable = flag != "r"
        self.durability = durability
        self.sync_interval = sync_interval
        self.max_segment_size = max_segment_size
        self.auto_compact = auto_compact
        # Set by a rollover of this handle: check whether to compact once the
        # write that rolled over has returned its locks.
        self._compact_due = False
        self._lock_timeout = lock_timeout
        self._lock_backend = lock_backend
        self._fs = fs if fs is not None else FileSystem()
        self._mutex = threading.RLock()
        self._closed = False
        self._forked = False
        # False when closed or forked: one attribute test on the hot paths.
        self._ok = True
        self._size = self._fs.size
        self._poisoned: BaseException | None = None
        self._lock: WriterLock | None = None
        # The store's change counter, or an always-odd stand-in when it has
        # none: see _follow_writers. _seen is the last even value read
        # before this handle was brought up to date.
        self._changes: ChangeCounter | None = None
        self._counter: mmap.mmap | bytes = _NO_COUNTER
        self._seen = b""
        self._segments: list[Segment] = []
        self._index: dict[str, int] = {}
        self._active_deletes: set[str] = set()
        self._manifest = fmt.Manifest(0, 0)
        self._end = _HEADER_END
        self._txid = 0
        self._max_txid = 0
        self._seal_next = 0
        self._last_sync = time.monotonic()
        self._hinted_end = 0
        # (size, mtime) of the active segment when its tail last failed to parse.
        self._unparsed: tuple[int, int] = (-1, -1)
        self._tx: dict[str, Record] | None = None
        self._tx_thread: int | None = None
        self._open()
        _engines.add(self)

    # ------------------------------------------------------------------
    # open and load

    def _open(self) -> None:
        path = self.path
        manifest_path = os.path.join(path, fmt.MANIFEST_NAME)
        if os.path.isfile(path):
            raise FormatError(
                f"{path} is a file, not a logshelf store (a store is a directory "
                "holding a MANIFEST)"
            )
        if not os.path.exists(manifest_path):
            if self.flag in ("r", "w"):
                if os.path.isdir(path) and os.listdir(path):
                    raise FormatError(
                        f"{path} is a directory without a MANIFEST: not a logshelf store"
                    )
                raise StoreNotFoundError(
                    f"no logshelf store at {path} (flag {self.flag!r} opens an existing "
                    "store; use flag 'c' to create one)"
                )
            self._create_store()
        try:
            # Read the MANIFEST before creating anything (even LOCK): a
            # directory that is not a store must be left exactly as it was.
            manifest = self._read_manifest()
            self._changes = ChangeCounter.open(path, writable=False)
            if self._changes is not None:
                self._counter = self._changes.map
            if self.writable:
                self._lock = WriterLock(
                    os.path.join(path, fmt.LOCK_NAME), path, self._lock_timeout, self._lock_backend
                )
                # Share the process-wide lock's mutex: a write then takes one
                # thread lock, not two, and handles on one store never
                # interleave inside a process.
                self._mutex = self._lock.mutex
            self._load_latest(manifest)
            if self.writable:
                self._catch_up_before_locking()
                with self._locked():
                    self._prepare_write()
                    if self.flag == "n" and (
                        self._index or self._end > _HEADER_END or len(self._segments) > 1
                    ):
                        self._roll(drop_old=True)
                    self._collect_garbage()
        except BaseException:
            self._close_files()
            raise

    def _create_store(self) -> None:
        """Create a new store atomically: build it in a temporary directory, then
        rename that into place. Two processes creating the same store at once
        both succeed; one rename wins and the other opens the winner's store."""
        fs = self._fs
        if os.path.isdir(self.path) and os.listdir(self.path):
            raise FormatError(
                f"{self.path} is a directory without a MANIFEST: not a logshelf store"
            )
        parent = os.path.dirname(self.path)
        tmp = f"{self.path}.{os.getpid()}.{os.urandom(4).hex()}.creating"
        fs.mkdir(tmp)
        try:
            lock_fd = fs.open(os.path.join(tmp, fmt.LOCK_NAME), os.O_RDWR | os.O_CREAT)
            fs.close(lock_fd)
            # Only ever created here, with the store: a handle that found no
            # counter does not raise one, so one created later could be
            # trusted by readers while such a handle writes.
            fs.write_file_atomic(
                os.path.join(tmp, fmt.CHANGES_NAME), fmt.encode_changes(0), sync_dir=False
            )
            Segment.create(fs, tmp, 1, 0).close()
            manifest = fmt.Manifest(1, 2, ((1, fmt.ACTIVE),))
            fs.write_file_atomic(
                os.path.join(tmp, fmt.MANIFEST_NAME), fmt.encode_manifest(manifest)
            )
            try:
                fs.rename(tmp, self.path)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise
                # Someone else created it first; use theirs.
                if not os.path.exists(os.path.join(self.path, fmt.MANIFEST_NAME)):
                    raise FormatError(
                        f"{self.path} is a directory without a MANIFEST: not a logshelf store"
                    ) from exc
            fs.sync_directory(parent)
        finally:
            if os.path.isdir(tmp):
                for name in fs.listdir(tmp):
                    fs.unlink(os.path.join(tmp, name))
                fs.rmdir(tmp)

    def _read_manifest(self) -> fmt.Manifest:
        manifest_path = os.path.join(self.path, fmt.MANIFEST_NAME)
        try:
            data = self._fs.read_file(manifest_path)
        except FileNotFoundError:
            raise StoreNotFoundError(
                f"no logshelf store at {self.path} (MANIFEST missing)"
            ) from None
        return fmt.decode_manifest(data, manifest_path)

    def _load_latest(self, manifest: fmt.Manifest) -> None:
        """:meth:`_load` ``manifest``, or a newer one: a compaction may replace
        the MANIFEST and delete the segments it replaced between our reading
        the MANIFEST and opening those segments."""
        while True:
            try:
                self._load(manifest)
                return
            except _MissingSegmentError as exc:
                newer = self._read_manifest()
                if newer.generation == manifest.generation:
                    # Users catch CorruptionError; the private subclass stays inside.
                    raise CorruptionError(str(exc)) from None
                manifest = newer

    def _refresh_manifest(self) -> None:
        """Under the writer lock, before changing the segment set: make sure this
        handle works from the current MANIFEST. (Every change of the segment
        set also seals the active segment, which handles notice anyway; this
        covers a writer that crashed between its MANIFEST switch and noticing.)"""
        manifest = self._read_manifest()
        if manifest.generation != self._manifest.generation:
            self._load_latest(manifest)

    def _load(self, manifest: fmt.Manifest) -> None:
        """Build the index from hints and scans of the manifest's segments."""
        if len(manifest.segments) > _index.MAX_SEGMENTS:
            raise CorruptionError(f"{self.path}: MANIFEST lists {len(manifest.segments)} segments")
        previous = {seg.id: seg for seg in self._segments}
        reused: set[int] = set()
        segments: list[Segment] = []
        index: dict[str, int] = {}
        deletes: set[str] = set()
        txid = 0
        try:
            last = len(manifest.segments) - 1
            for slot, (segment_id, sealed_len) in enumerate(manifest.segments):
                active = slot == last
                seg = previous.get(segment_id)
                if seg is None or (active and self.writable and not seg.writable):
                    try:
                        seg = Segment.open(
                            self._fs, self.path, segment_id, self.writable and active
                        )
                    except FileNotFoundError:
                        raise _MissingSegmentError(
                            f"the MANIFEST of {self.path} names segment {segment_id}, but "
                            f"{os.path.join(self.path, fmt.segment_name(segment_id))} is missing"
                        ) from None
                else:
                    reused.add(segment_id)
                segments.append(seg)
                limit = seg.size() if active else sealed_len
                if not active and limit > seg.size():
                    raise CorruptionError(
                        f"{seg.path} is {seg.size()} bytes, the MANIFEST says {sealed_len}"
                    )
                txid, end, seal_next, hinted = self._load_segment(
                    seg, slot, limit, txid, index, deletes if active else None, sealed=not active
                )
                seg.readable_end = end
        except BaseException:
            # Leave the handle as it was: close only what this call opened.
            for seg in segments:
                if seg.id not in reused:
                    seg.close()
            raise
        for seg in previous.values():
            if seg.id not in reused:
                seg.close()
        self._manifest = manifest
        self._segments = segments
        self._index = index
        self._active_deletes = deletes
        self._end = end
        self._txid = txid
        self._max_txid = max(self._max_txid, txid)
        self._seal_next = seal_next
        # A hint that already covers everything need not be rewritten at close.
        self._hinted_end = end if hinted == end else 0
        self._unparsed = (-1, -1)

    def _load_segment(
        self,
        seg: Segment,
        slot: int,
        limit: int,
        txid: int,
        index: dict[str, int],
        deletes: set[str] | None,
        sealed: bool,
    ) -> tuple[int, int, int, int]:
        """Apply one segment to ``index``; return (last txid, end of committed
        data, seal target, end of the range its hint covered or 0)."""
        start = _HEADER_END
        hinted = 0
        hint = self._read_hint(seg, limit, sealed)
        if hint is not None:
            _index.apply_hint(hint, slot, index, deletes)
            start = hinted = hint.covered
            txid = max(txid, hint.max_txid)
            if sealed and start == limit:
                return txid, start, 0, hinted
            if hint.seal_next:
                # The range the hint covers ends with a SEAL (a rollover whose
                # MANIFEST switch this handle has not read yet): nothing follows.
                return txid, start, hint.seal_next, hinted
        scan = seg.scan(start, limit, txid, verify_values=not sealed)
        seal_next = _index.apply_scan(scan, slot, index, deletes)
        if scan.stop < limit or scan.end < limit:
            if sealed:
                raise CorruptionError(
                    f"{seg.path}: sealed segment damaged at offset {scan.stop} "
                    f"({scan.problem}); copy what is intact with "
                    "logshelf.salvage(source, destination)"
                )
            self._check_tail(seg, scan, limit)
        # Txids of uncommitted records are burnt too: a new batch must never
        # reuse the txid of a record that might resurface.
        self._max_txid = max(self._max_txid, scan.max_txid)
        return max(txid, scan.last_committed), scan.end, seal_next, hinted

    def _read_hint(self, seg: Segment, limit: int, sealed: bool) -> fmt.Hint | None:
        try:
            data = self._fs.read_file(os.path.join(self.path, fmt.hint_name(seg.id)))
        except OSError:
            return None
        hint = fmt.decode_hint(data)
        if (
            hint is None
            or hint.segment_id != seg.id
            or hint.salt != seg.salt
            or hint.covered < _HEADER_END
            or hint.covered > limit
            or (sealed and hint.covered != limit)
            or not seg.hint_matches(hint)
        ):
            return None
        return hint

    def _check_tail(self, seg: Segment, scan: SegmentScan, limit: int) -> None:
        """Tell a torn tail (nothing valid after the stop) from damage in the
        middle of the active segment (valid records follow). The first is
        normal after a crash; the second must never be silently cut away."""
        if scan.stop >= limit:
            return
        found = seg.find_valid_record(scan.stop + 1, limit)
        if found is not None:
            raise CorruptionError(
                f"{seg.path}: damaged record at offset {scan.stop} ({scan.problem}) is "
                f"followed by valid records (offset {found}); the store needs "
                "logshelf.salvage(source, destination) to copy what is intact"
            )

    # ------------------------------------------------------------------
    # per-operation checks, refresh

    def _guard(self) -> _Guard:
        """Context manager: this handle's mutex, waited for at most ``lock_timeout``."""
        return _Guard(self)

    def _wait_for(self, mutex: threading.RLock) -> None:
        """Block on a mutex another thread holds (usually during its transaction)."""
        timeout = self._lock_timeout
        if timeout is None:
            mutex.acquire()
        elif not mutex.acquire(timeout=timeout):
            raise LockTimeoutError(
                f"timed out after {timeout} s waiting for the writer lock of {self.path} "
                "(held by another thread of this process)"
            )

    def _check_usable(self) -> None:
        """The one choke point for "is this handle usable?"; call under the mutex."""
        if self._closed:
            raise StoreClosedError(f"invalid operation on closed store {self.path}")
        if self._forked:
            self._after_fork()

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"store {self.path} was opened read-only (flag 'r')")
        if self._poisoned is not None:
            raise HandlePoisonedError(
                f"an earlier sync of {self.path} failed ({self._poisoned}); this handle "
                "refuses further writes: close and reopen the store"
            ) from self._poisoned

    def _after_fork(self) -> None:
        """In a child process: keep the index and descriptors for reading, but
        take a fresh writer lock (the parent's lock descriptor is shared)."""
        self._forked = False
        self._ok = not self._closed
        self._mutex = threading.RLock()
        self._tx = None
        self._tx_thread = None
        if self._lock is not None:
            # The parent's lock object must not release anything on its way
            # out: its registry entry is gone and its key now names ours.
            self._lock.abandon()
        if self.writable:
            self._lock = WriterLock(
                os.path.join(self.path, fmt.LOCK_NAME),
                self.path,
                self._lock_timeout,
                self._lock_backend,
            )
            self._mutex = self._lock.mutex

    def _follow_writers(self) -> None:
        """Apply what other writers committed, unless the change counter says
        nothing changed since this handle last looked (under the mutex).

        The hot paths inline the comparison and call this only when it
        differs. The counter is read before the size check: a writer that
        finishes after the read moves it again, so nothing is missed. An odd
        value (a write in progress, or a writer killed inside one) is never
        remembered. The single-write path also sets ``_seen``, to the value
        its own hold ended on.
        """
        raw = self._counter[_COUNTER]
        if raw == self._seen:
            return
        # Remembered only when the active segment ends exactly where this
        # handle's view does. Writers skip their size check on a remembered
        # value, so bytes nobody could parse (left by a write whose undo
        # failed) must keep every handle checking until a writer cuts them.
        if self._refresh() and not raw[0] & 1:
            self._seen = raw

    def _refresh(self) -> bool:
        """Apply whatever other processes committed since we last looked.

        Returns True when this handle's view then ends exactly where the
        active segment does (nothing unparsed, not sealed); False may also
        just mean "look again" (after the segment set changed).
        """
        if self._seal_next:
            # Sealed: waiting for the writer to publish the successor in the MANIFEST.
            self._follow_seal()
            if self._seal_next:
                return False
        active = self._segments[-1]
        size = self._fs.size(active.fd)
        if size == self._end:
            return True
        if size == self._unparsed[0] and self._unparsed == self._tail_signature(active):
            # Same incomplete tail as last time (a write in progress, or a
            # torn tail no writer has cut yet): nothing new to parse.
            return False
        scan = self._catch_up(size)
        if self._end == size and self._segments[-1] is active and not self._seal_next:
            return True
        if scan is not None and self._end < size and self._segments[-1] is active:
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
        st = self._fs.stat(seg.fd)
        return st.st_size, st.st_mtime_ns

    def _catch_up(self, size: int) -> SegmentScan | None:
        active = self._segments[-1]
        if size < self._end:
            # Only a new segment set explains a shrinking active segment.
            manifest = self._read_manifest()
            if manifest.generation == self._manifest.generation:
                raise CorruptionError(
                    f"{active.path} shrank to {size} bytes below its committed end {self._end}"
                )
            self._load_latest(manifest)
            return None
        slot = len(self._segments) - 1
        scan = active.scan(self._end, size, self._txid)
        seal_next = _index.apply_scan(scan, slot, self._index, self._active_deletes)
        self._end = scan.end
        active.readable_end = scan.end
        self._txid = max(self._txid, scan.last_committed)
        self._max_txid = max(self._max_txid, scan.max_txid)
        if seal_next:
            self._seal_next = seal_next
        if self._seal_next:
            self._follow_seal()
        return scan

    def _follow_seal(self) -> None:
        """The active segment was sealed: adopt the manifest that names its successor."""
        manifest = self._read_manifest()
        if manifest.active_id == self._segments[-1].id:
            return  # the writer has not published it yet (or crashed: a writer completes it)
        if not self._follow_rollover(manifest):
            self._load_latest(manifest)
        if self._seal_next == 0:
            self._refresh()

    def _follow_rollover(self, manifest: fmt.Manifest) -> bool:
        """Adopt ``manifest`` without reloading the index when all it did is
        seal our active segment where we parsed its SEAL and append the
        successor: every index entry stays valid, and the successor is
        parsed by the next refresh. A full reload reads every segment's hint
        (tens of milliseconds at 100,000 keys), and a writer may be doing it
        under the writer lock. False (nothing changed) for anything else: a
        compaction's switch, a reset by flag "n", several rollovers at once."""
        old, new = self._manifest.segments, manifest.segments
        active = self._segments[-1]
        if (
            len(new) != len(old) + 1
            or len(new) > _index.MAX_SEGMENTS
            or new[-1][0] != self._seal_next
            or new[-2] != (active.id, self._end)
            or new[:-2] != old[:-1]
        ):
            return False
        try:
            successor = Segment.open(self._fs, self.path, new[-1][0], self.writable)
        except FileNotFoundError:
            return False  # already replaced by a compaction: reload from the newest MANIFEST
        self._segments.append(successor)
        self._manifest = manifest
        self._seal_next = 0
        self._active_deletes = set()
        self._end = _HEADER_END
        successor.readable_end = _HEADER_END
        self._hinted_end = 0
        self._unparsed = (-1, -1)  # remembered of the sealed segment, not this one
        return True

    # ------------------------------------------------------------------
    # writer-side helpers (all under the writer lock)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        assert self._lock is not None
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def _prepare_write(self) -> None:
        """Under the writer lock: catch up with other writers, cut a torn tail,
        finish an interrupted rollover, so that appending is safe. Whatever
        lies beyond the last committed batch at this point is garbage: no
        other writer can be mid-write while we hold the lock."""
        while True:
            if self._seal_next:
                # Our active segment ends with a SEAL. Usually its writer has
                # published the successor since we saw it: adopt that. Only if
                # the MANIFEST still names the sealed segment (read under the
                # lock, so its writer died mid-rollover) finish the rollover.
                self._follow_seal()
                if self._seal_next:
                    self._roll(drop_old=False, seal_written=True)
                continue
            active = self._segments[-1]
            size = active.size()
            if size == self._end:
                return
            scan = self._catch_up(size)
            if scan is None or self._segments[-1] is not active or self._seal_next:
                continue  # the segment set changed: look at the new active segment
            if self._end < size:
                self._check_tail(active, scan, size)
                self._cut_tail(active, self._end, size)

    def _collect_garbage(self) -> None:
        """Delete segment and hint files the MANIFEST does not reference: what a
        crash left of an interrupted rollover, reset or compaction. Under the
        writer lock, which every change of the segment set also holds, and
        only while no compaction runs: a running compaction writes segments
        the MANIFEST names only once it commits."""
        lock = self.compaction_lock()
        if not lock.acquire(0):
            return
        try:
            self.collect_garbage_locked()
        finally:
            lock.release()

    def compaction_lock(self) -> ExclusiveFileLock:
        """The lock that keeps two compactions (and garbage collection) apart."""
        return ExclusiveFileLock(os.path.join(self.path, fmt.COMPACT_LOCK_NAME), self._lock_backend)

    def collect_garbage_locked(self) -> None:
        """:meth:`_collect_garbage` for a caller holding the compaction lock
        and the writer lock."""
        live = {seg.id for seg in self._segments}
        for name in self._fs.listdir(self.path):
            if name.endswith(".tmp"):
                # A crashed atomic replacement. (A hint another process is
                # writing right now may go too; hints are optional.)
                try:
                    self._fs.unlink(os.path.join(self.path, name))
                except FileNotFoundError:
                    pass
                continue
            if not name.startswith("seg-") or not name.endswith((".log", ".hint")):
                continue
            try:
                segment_id = int(name[4:20], 16)
            except ValueError:
                continue
            if segment_id not in live and len(name) in (24, 25):
                try:
                    self._fs.unlink(os.path.join(self.path, name))
                except FileNotFoundError:
                    pass

    def _cut_tail(self, seg: Segment, end: int, size: int) -> None:
        """Quarantine and cut bytes after the last committed batch: never append after garbage."""
        fs = self._fs
        qdir = os.path.join(self.path, fmt.QUARANTINE_DIR)
        try:
            if not os.path.isdir(qdir):
                fs.mkdir(qdir)
            name = f"seg-{seg.id:016x}-at-{end}-{time.time_ns()}.bin"
            data = fs.pread(seg.fd, min(size - end, _QUARANTINE_MAX), end)
            fs.write_file_atomic(os.path.join(qdir, name), data, sync_dir=False)
        except OSError:
            pass  # Quarantine is forensics only; cutting the tail is what matters.
        seg.truncate(end)
        seg.sync()
        _log.warning(
            "cut %d bytes of torn tail from %s at offset %d (copy kept in %s)",
            size - end,
            seg.path,
            end,
            qdir,
        )

    def _append(self, records: Collection[Record]) -> None:
        """Write one batch atomically at the end of the active segment and apply
        it to the index. Under the writer lock, after :meth:`_prepare_write`.
        ``records`` hold one record per key."""
        for attempt in (0, 1):
            active = self._segments[-1]
            start = self._end
            slot = len(self._segments) - 1
            txid = self._max_txid + 1
            data, positions = fmt.pack_batch(
                active.salt, txid, records, (slot << _SLOT_SHIFT) | start
            )
            if attempt or start + len(data) <= self.max_segment_size or start <= _HEADER_END:
                break
            # Full: roll over, then pack again with the new segment's salt.
            self._roll(drop_old=False)
        self._max_txid = txid  # burnt even if the write fails
        try:
            active.append(data)
        except BaseException:
            self._undo_append(active, start)
            raise
        self._txid = txid
        index = self._index
        deletes = self._active_deletes
        if all(r[0] == _PUT for r in records):
            keys = [r[1] for r in records]
            index.update(zip(keys, positions, strict=True))
            if deletes:
                deletes.difference_update(keys)
        else:
            for (kind, key, *_), loc in zip(records, positions, strict=True):
                if kind == _PUT:
                    index[key] = loc
                    deletes.discard(key)
                else:
                    index.pop(key, None)
                    deletes.add(key)
        self._end = end = start + len(data)
        active.readable_end = end
        if self.durability != "none":
            self._sync_after_write()

    def _sync_active(self) -> None:
        try:
            self._segments[-1].sync()
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages
            # and a retry can "succeed": never trust this handle again.
            self._poisoned = exc
            raise

    def _roll(
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
        the SEAL is then what tells every other handle to reload.
        """
        if not seal_written:
            generation = self._manifest.generation
            self._refresh_manifest()
            if self._manifest.generation != generation:
                # Our view was stale (see _refresh_manifest): catch up with the
                # current active segment before sealing it.
                self._prepare_write()
        fs = self._fs
        old = self._segments[-1]
        manifest = self._manifest
        if seal_written:
            new_id = self._seal_next
            seal_txid = self._txid
        else:
            new_id = manifest.next_segment_id
            seal_txid = self._max_txid + 1
        new = Segment.create(fs, self.path, new_id, seal_txid)
        try:
            fs.sync_directory(self.path)
            if not seal_written:
                seal = fmt.pack_record(
                    old.salt,
                    seal_txid,
                    fmt.KIND_SEAL,
                    True,
                    0,
                    b"",
                    fmt.SEAL_VALUE.pack(new_id),
                    zlib.crc32(fmt.SEAL_VALUE.pack(new_id)),
                    0,
                )
                self._max_txid = seal_txid
                start = self._end
                try:
                    old.append(seal)
                except BaseException:
                    self._undo_append(old, start)
                    raise
                self._end = start + len(seal)
                self._txid = seal_txid
                old.readable_end = self._end
                # The old segment is sealed now: nothing may ever be appended
                # after its SEAL, even if the rest of this rollover fails. The
                # next write of this handle finishes the rollover (or adopts
                # the MANIFEST, should the switch below have happened).
                self._seal_next = new_id
            self._sync_active()
            sealed = tuple(
                (seg.id, length)
                for seg, (_, length) in zip(
                    self._segments[:-1], manifest.segments[:-1], strict=True
                )
            )
            if replace is not None:
                count, entries = replace
                sealed = (*entries, *sealed[count:])
            segments: tuple[tuple[int, int], ...]
            if drop_old:
                segments = ((new_id, fmt.ACTIVE),)
            else:
                segments = (*sealed, (old.id, self._end), (new_id, fmt.ACTIVE))
            next_id = max(manifest.next_segment_id, new_id + 1) + reserve_ids
            new_manifest = fmt.Manifest(manifest.generation + 1, next_id, segments)
            # The commit point. An exception from here means the old MANIFEST
            # is still in place; the directory sync that follows is another
            # matter (see _sync_manifest_rename).
            fs.write_file_atomic(
                os.path.join(self.path, fmt.MANIFEST_NAME),
                fmt.encode_manifest(new_manifest),
                sync_dir=False,
            )
        except BaseException:
            new.close()
            raise
        sync_error = self._sync_manifest_rename()
        try:
            self._after_roll(old, new, new_manifest, seal_txid, drop_old, reserve_ids, replace)
        finally:
            if sync_error is not None:
                raise sync_error

    def _sync_manifest_rename(self) -> OSError | None:
        """fsync the directory after a MANIFEST replacement. The new MANIFEST
        is in place whatever happens here, so the handle must go on to adopt
        it; but a failed directory sync, like a failed fsync, means nothing
        about durability can be trusted: poison the handle and report it."""
        try:
            self._fs.sync_directory(self.path)
        except OSError as exc:
            self._poisoned = exc
            return exc
        return None

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
        """The in-memory half of :meth:`_roll`, once its MANIFEST is in place."""
        fs = self._fs
        new_id = new.id
        if not drop_old:
            # Only after the switch: a hint covering the SEAL must never exist
            # while the MANIFEST still calls that segment active, or a reopen
            # would skip the SEAL and append after it.
            self._write_hint(old, len(self._segments) - 1, self._end, seal_next=new_id)
        if replace is not None:
            # Every slot after the replaced segments moved. Rather than
            # renumber in place, follow our own SEAL like any other handle,
            # on the next operation: the reload from the new MANIFEST and the
            # hints then happens after the writer lock is released.
            new.close()
            self._seal_next = new_id
            return
        if not drop_old and not reserve_ids and self.auto_compact is not None:
            self._compact_due = True
        self._manifest = new_manifest
        self._seal_next = 0
        if drop_old:
            for seg in self._segments:
                seg.close()
                for name in (fmt.segment_name(seg.id), fmt.hint_name(seg.id)):
                    try:
                        fs.unlink(os.path.join(self.path, name))
                    except FileNotFoundError:
                        pass
            self._segments = [new]
            self._index = {}
        else:
            self._segments.append(new)
        self._active_deletes = set()
        self._end = _HEADER_END
        new.readable_end = _HEADER_END
        self._txid = max(self._txid, seal_txid)
        self._max_txid = max(self._max_txid, seal_txid)
        self._hinted_end = 0
        self._unparsed = (-1, -1)

    def _write_hint(self, seg: Segment, slot: int, covered: int, seal_next: int = 0) -> None:
        """Snapshot the index entries of one segment (best effort)."""
        keys, offsets = _index.snapshot(self._index, slot)
        deleted = list(self._active_deletes) if slot == len(self._segments) - 1 else []
        try:
            hint = seg.make_hint(covered, self._txid, keys, offsets, deleted, seal_next)
            self._fs.write_file_atomic(
                os.path.join(self.path, fmt.hint_name(seg.id)),
                fmt.encode_hint(hint),
                sync_dir=False,
            )
        except OSError:
            pass  # A hint is an optimisation: without it the next open scans.

    # ------------------------------------------------------------------
    # public operations

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` as it was given to a put (decompressed, both
        checksums verified), or None when the key is absent."""
        mutex = self._mutex
        if not mutex.acquire(False):
            self._wait_for(mutex)
        try:
            if not self._ok:
                self._check_usable()
            if self._tx is not None and key in self._tx and self._in_my_transaction():
                record = self._tx[key]
                if record[0] == _DELETE:
                    return None
                return (
                    _codecs.decompress(record[3], record[4], record[6]) if record[3] else record[4]
                )
            if self._counter[_COUNTER] != self._seen:
                self._follow_writers()
            loc = self._index.get(key)
            if loc is None:
                return None
            seg = self._segments[loc >> _SLOT_SHIFT]
            offset = loc & _OFFSET_MASK
            # The common case inline (a call costs a tenth of a read): an
            # uncompressed record in the segment's map whose checksums, kind
            # and key all check out. Anything else, including every error, is
            # left to Segment.read_value below, which says what is wrong.
            m = seg.mapping
            if m is not None and offset + _RECORD_SIZE <= seg.mapped_end:
                hcrc, vcrc, _, vlen, _, klen, kind, flags = _unpack_record(m, offset)
                keyend = offset + _RECORD_SIZE + klen
                end = keyend + vlen
                if end <= seg.mapped_end:
                    value = m[keyend:end]
                    if (
                        _crc32(m[offset + 4 : keyend], seg.salt) == hcrc
                        and _crc32(value) == vcrc
                        and kind == _PUT
                        and not flags & _CODEC_MASK
                        and m[offset + _RECORD_SIZE : keyend] == key.encode()
                    ):
                        return value
            try:
                codec, data, rawlen = seg.read_value(offset, key.encode())
            except CorruptionError as exc:  # the message names file and offset
                raise CorruptionError(f"key {key!r}: {exc}") from None
            if not codec:
                return data
            try:
                return _codecs.decompress(codec, data, rawlen)
            except CorruptionError as exc:
                raise CorruptionError(
                    f"key {key!r}: {seg.path}: the value at offset {offset}: {exc}"
                ) from None
        finally:
            mutex.release()

    def _in_my_transaction(self) -> bool:
        return self._tx is not None and self._tx_thread == threading.get_ident()

    def _present(self, key: str) -> bool:
        """Is ``key`` live, counting this thread's open transaction? (under the mutex)"""
        tx = self._tx
        if tx is not None and key in tx and self._in_my_transaction():
            return tx[key][0] == _PUT
        return key in self._index

    def contains(self, key: str) -> bool:
        mutex = self._mutex
        if not mutex.acquire(False):
            self._wait_for(mutex)
        try:
            if not self._ok:
                self._check_usable()
            if self._counter[_COUNTER] != self._seen:
                self._follow_writers()
            return self._present(key)
        finally:
            mutex.release()

    def keys(self) -> list[str]:
        """A snapshot of the live keys, in the order they were first written."""
        with self._guard():
            self._check_usable()
            self._follow_writers()
            if not self._in_my_transaction():
                return list(self._index)
            tx = self._tx
            assert tx is not None
            keys = [k for k in self._index if k not in tx or tx[k][0] == _PUT]
            keys.extend(k for k, r in tx.items() if r[0] == _PUT and k not in self._index)
            return keys

    def __len__(self) -> int:
        with self._guard():
            self._check_usable()
            self._follow_writers()
            count = len(self._index)
            if self._in_my_transaction():
                assert self._tx is not None
                for key, record in self._tx.items():
                    count += (record[0] == _PUT) - (key in self._index)
            return count

    def put(self, key: str, codec: int, data: bytes, rawlen: int) -> None:
        """Write one key: a batch of one record (the path
        ``benchmarks/bench_store.py`` measures as "insert")."""
        try:
            kb = key.encode("utf-8")
        except UnicodeEncodeError:
            kb = encode_key(key)  # raises the ValueError that names the key
        if len(kb) > fmt.MAX_KEY_BYTES:
            encode_key(key)
        self._write_one((_PUT, key, kb, codec, data, zlib.crc32(data), rawlen))

    def delete(self, key: str) -> bool:
        """Delete a key; return False when it was not present (nothing written)."""
        return self._write_one((_DELETE, key, encode_key(key), 0, b"", 0, 0))

    def _write_one(self, record: Record) -> bool:
        """Write one record as a batch of its own; return False for a delete
        of an absent key (nothing written).

        :meth:`put_many` specialised for the most common calls, with the
        writer lock taken inline and the record packed and indexed directly.
        """
        kind, key = record[0], record[1]
        mutex = self._mutex
        if not mutex.acquire(False):
            self._wait_for(mutex)
        try:
            if not self._ok:
                self._check_usable()
                if self._mutex is not mutex:  # just forked: new mutex and lock
                    return self._write_slow([record])
            if self._tx is not None and self._tx_thread == threading.get_ident():
                # Inside this thread's transaction (writability was checked
                # when it began): buffer until commit.
                return self._buffer(record)
            if self._lock is None or self._poisoned is not None or self._tx is not None:
                return self._write_slow([record])
            lock = self._lock
            # The handle's mutex is the lock's own (see _open): take only the OS
            # lock. If the change counter still holds what this handle saw
            # when it last caught up, nobody has written since: skip the size
            # check (see _follow_writers).
            at = lock.enter_held()
            try:
                active = self._segments[-1]
                if (at != self._seen and self._size(active.fd) != self._end) or self._seal_next:
                    self._prepare_write()
                    active = self._segments[-1]
                if kind == _DELETE and key not in self._index:
                    return False
                kb, data = record[2], record[4]
                start = self._end
                if start + 32 + len(kb) + len(data) > self.max_segment_size and start > _HEADER_END:
                    self._roll(drop_old=False)
                    active = self._segments[-1]
                    start = self._end
                txid = self._max_txid + 1
                packed = fmt.pack_record(
                    active.salt, txid, kind, True, record[3], kb, data, record[5], record[6]
                )
                self._max_txid = txid  # burnt even if the write fails
                try:
                    self._fs.append(active.fd, packed)
                except BaseException:
                    self._undo_append(active, start)
                    raise
                self._txid = txid
                if kind == _PUT:
                    self._index[key] = ((len(self._segments) - 1) << _SLOT_SHIFT) | start
                    if self._active_deletes:
                        self._active_deletes.discard(key)
                else:
                    del self._index[key]
                    self._active_deletes.add(key)
                self._end = end = start + len(packed)
                active.readable_end = end
                if self.durability != "none":
                    self._sync_after_write()
            finally:
                released = lock.exit_held()
            if released is not None:
                # Caught up under the lock, then only this write: this handle
                # is up to date as of the counter it just set.
                self._seen = released
        finally:
            mutex.release()
        if self._compact_due:
            self._after_write()
        return True

    def _undo_append(self, seg: Segment, start: int) -> None:
        """A write failed part-way: cut back to where it started. If even that
        fails, the handle can no longer know what is on disk."""
        try:
            seg.truncate(start)
        except BaseException as exc:
            self._poisoned = exc

    def _sync_after_write(self) -> None:
        now = time.monotonic()
        if self.durability == "always" or now - self._last_sync >= self.sync_interval:
            self._sync_active()
            self._last_sync = now

    def put_many(self, items: list[tuple[str, int, bytes, int]]) -> None:
        """Write ``(key, codec, stored value, rawlen)`` items as one atomic
        batch: all or none become visible, to other processes and after a
        crash. A later item for the same key wins."""
        records: list[Record] = [
            (_PUT, key, encode_key(key), codec, data, zlib.crc32(data), rawlen)
            for key, codec, data, rawlen in items
        ]
        if records:
            self._write_slow(records)
            self._after_write()

    def delete_many(self, keys: list[str]) -> int:
        """Delete the present keys among ``keys`` as one atomic batch; return
        how many were present."""
        encoded = [(key, encode_key(key)) for key in keys]
        with self._guard():
            self._check_usable()
            self._check_writable()
            with self.transaction():
                present = {key: kb for key, kb in encoded if self._present(key)}
                self._write_slow([(_DELETE, key, kb, 0, b"", 0, 0) for key, kb in present.items()])
        self._after_write()
        return len(present)

    def _buffer(self, record: Record) -> bool:
        """Add a record to this thread's open transaction; False for a delete
        of a key that is absent (nothing buffered)."""
        tx = self._tx
        assert tx is not None
        key = record[1]
        if record[0] == _DELETE:
            if not self._present(key):
                return False
            if key not in self._index:
                # Only this transaction wrote the key: forget that write
                # rather than commit a put and a tombstone for nothing.
                del tx[key]
                return True
        tx[key] = record
        return True

    def _write_slow(self, records: list[Record]) -> bool:
        """Write ``records`` as one batch through the general path. A delete
        of a key that is absent (counting this thread's transaction) is left
        out; return False when nothing was left to write."""
        with self._guard():
            if not self._ok:
                self._check_usable()
            self._check_writable()
            if self._in_my_transaction():
                wrote = False
                for record in records:
                    wrote = self._buffer(record) or wrote
                return wrote
            if len(records) > 1:
                # One record per key: a batch should not carry dead weight.
                records = list({r[1]: r for r in records}.values())
            with self._locked():
                self._prepare_write()
                index = self._index
                records = [r for r in records if r[0] == _PUT or r[1] in index]
                if not records:
                    return False
                self._append(records)
                return True

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the writer lock; buffer writes; commit them as one batch.

        Nested calls join the outer transaction. Other threads using this
        handle (or another handle on the same store in this process) wait
        until it ends.
        """
        with self._guard():
            self._check_usable()
            self._check_writable()
            if self._tx is not None:
                yield
                return
            with self._locked():
                self._prepare_write()
                self._tx = {}
                self._tx_thread = threading.get_ident()
                try:
                    yield
                    if self._tx:
                        self._check_writable()
                        # Another handle of this thread may have written meanwhile.
                        self._prepare_write()
                        self._append(self._tx.values())
                finally:
                    self._tx = None
                    self._tx_thread = None
        self._after_write()

    def sync(self) -> None:
        """Make every write of this handle durable (fdatasync of the active segment)."""
        with self._guard():
            self._check_usable()
            if self.writable and self._poisoned is None:
                self._sync_active()
                self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync, write a hint for the active segment, release descriptors. Idempotent."""
        with self._guard():
            if self._closed:
                return
            try:
                if self.writable and self._poisoned is None and not self._forked and self._segments:
                    self._sync_active()
                    if (
                        self._end > _HEADER_END
                        and self._end != self._hinted_end
                        and not self._seal_next
                    ):
                        slot = len(self._segments) - 1
                        self._write_hint(self._segments[slot], slot, self._end)
                        self._hinted_end = self._end
            finally:
                self._closed = True
                self._ok = False
                self._close_files()

    def _close_files(self) -> None:
        for seg in self._segments:
            try:
                seg.close()
            except OSError:
                pass
        self._segments = []
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._changes is not None:
            self._counter = _NO_COUNTER
            self._changes.close()
            self._changes = None

    def verify(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Check every record of every segment and every index entry.

        Returns a list of problems, empty when the store is healthy. Reads
        every byte of committed data, so it costs a full pass over the store;
        ``progress`` is called with a line after each segment and at the end.
        """
        with self._guard():
            self._check_usable()
            self._refresh()
            problems: list[str] = []
            for number, seg in enumerate(self._segments, 1):
                if progress is not None and number > 1:
                    progress(f"checked {number - 1} of {len(self._segments)} segments")
                limit = seg.readable_end
                scan = seg.scan(_HEADER_END, limit, seg.base_txid)
                for _ in scan:
                    pass
                if scan.stop < limit or scan.end < limit:
                    problems.append(
                        f"{seg.path}: invalid record at offset {scan.stop}: {scan.problem}"
                    )
                problems.extend(
                    f"{seg.path}: value checksum mismatch in the record at offset {offset}"
                    for offset in scan.damaged
                )
            for key, loc in self._index.items():
                seg = self._segments[loc >> _SLOT_SHIFT]
                try:
                    seg.read_value(loc & _OFFSET_MASK, encode_key(key))
                except CorruptionError as exc:
                    problems.append(f"key {key!r}: {exc}")
            if progress is not None:
                progress(
                    f"checked {len(self._segments)} segments and {len(self._index)} index entries"
                )
            return problems

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fs(self) -> FileSystem:
        """The file-system layer every file operation of this handle goes through."""
        return self._fs

    @property
    def lock_timeout(self) -> float | None:
        return self._lock_timeout

    # ------------------------------------------------------------------
    # compaction (the copying lives in _compaction.py)

    def compact(self) -> _compaction.CompactionResult:
        """Rewrite the live records of all sealed segments (sealing the active
        one first) and drop everything dead. Other handles keep reading and
        writing meanwhile; see ``_compaction.py``."""
        return _compaction.compact(self, wait=True)

    def compaction_plan(self) -> _compaction.Plan | None:
        """Step 1 of a compaction, under the writer lock: seal the active
        segment if it holds records, reserve ids for the outputs, snapshot the
        live entries of the sealed segments. None when nothing is sealed."""
        with self._guard():
            self._check_usable()
            self._check_writable()
            if self._tx is not None:
                raise RuntimeError(
                    f"compact() cannot run inside a transaction on {self.path}: it would "
                    "hold the writer lock for the whole copy"
                )
            self._catch_up_before_locking()
            with self._locked():
                self._prepare_write()
                self._refresh_manifest()
                # Next-fit packing of a subset of the records needs no more
                # segments than the inputs used; one spare for mixed sizes.
                reserve = len(self._segments) + 1
                if self._end > _HEADER_END:
                    self._roll(drop_old=False, reserve_ids=reserve)
                elif len(self._segments) > 1:
                    # The active segment is empty: leave it be, just reserve ids.
                    manifest = self._manifest
                    self._write_manifest(
                        fmt.Manifest(
                            manifest.generation + 1,
                            manifest.next_segment_id + reserve,
                            manifest.segments,
                        )
                    )
                else:
                    return None
                # Every segment but the (new) active one is an input.
                count = len(self._segments) - 1
                manifest = self._manifest
                inputs = manifest.segments[:count]
                plan = _compaction.Plan(
                    inputs,
                    list(range(manifest.next_segment_id - reserve, manifest.next_segment_id)),
                    # Copying the dict is C-speed; filtering and sorting it
                    # happen in the copy step, outside the lock.
                    self._index.copy(),
                    segments_before=len(self._segments),
                    bytes_before=sum(seg.size() for seg in self._segments),
                )
                try:
                    for segment_id, length in inputs:
                        seg = Segment.open(self._fs, self.path, segment_id, writable=False)
                        seg.readable_end = length
                        plan.segments.append(seg)
                except BaseException:
                    for seg in plan.segments:
                        seg.close()
                    raise
                return plan

    def _catch_up_before_locking(self) -> None:
        """Parse what other writers appended, outside the writer lock, until
        little is left for :meth:`_prepare_write` to parse under it (where
        every writer of the store waits). For the lock holds that follow long
        work: opening (loading the index) and a compaction's two steps (its
        copy takes seconds). One refresh is not enough while others keep
        writing: a writer appending during a compaction left ~100,000
        records, whose parse under the lock stalled every writer for 0.1 s
        and more. Each round parses what arrived during the previous one, so
        the backlog shrinks quickly."""
        for _ in range(_CATCH_UP_ROUNDS):
            self._refresh()
            if self._seal_next or self._size(self._segments[-1].fd) - self._end <= _LOCK_BACKLOG:
                return

    def compaction_switch(
        self, plan: _compaction.Plan, entries: tuple[tuple[int, int], ...]
    ) -> bool:
        """Step 3 of a compaction, under the writer lock: commit the outputs
        in place of the inputs. False if the MANIFEST no longer starts with
        the inputs (flag "n" reset the store meanwhile)."""
        with self._guard():
            self._check_usable()
            self._check_writable()
            self._catch_up_before_locking()
            with self._locked():
                self._prepare_write()
                self._refresh_manifest()
                count = len(plan.inputs)
                if self._manifest.segments[:count] != plan.inputs:
                    return False
                self._roll(drop_old=False, replace=(count, entries))
                return True

    def _write_manifest(self, manifest: fmt.Manifest) -> None:
        """Replace the MANIFEST (under the writer lock) and adopt it."""
        self._fs.write_file_atomic(
            os.path.join(self.path, fmt.MANIFEST_NAME),
            fmt.encode_manifest(manifest),
            sync_dir=False,
        )
        self._manifest = manifest
        error = self._sync_manifest_rename()
        if error is not None:
            raise error

    def _after_write(self) -> None:
        """Run an automatic compaction a rollover asked for, once the write
        that rolled over has let go of every lock (not inside a transaction
        or any other call still holding this handle's mutex)."""
        if not self._compact_due or self._mutex._is_owned():  # type: ignore[attr-defined]
            return
        self._compact_due = False
        threshold = self.auto_compact
        try:
            dead, sealed = self._dead_bytes()
            if threshold is None or dead < threshold * sealed:
                return
            if dead < min(_AUTO_COMPACT_MIN_DEAD, self.max_segment_size):
                return
            _compaction.compact(self, wait=False)
        except (OSError, StoreError) as exc:
            # The write that triggered this succeeded; a failed compaction
            # changed nothing and must not look like a failed write.
            _log.warning("automatic compaction of %s failed: %s", self.path, exc)

    def _dead_bytes(self) -> tuple[int, int]:
        """(estimated dead bytes, total record bytes) of the sealed segments.

        Live bytes are estimated from the sizes of up to ~256 live records
        spread over the sealed segments: exact enough for a threshold, and
        cheap (one pass over the index, a few hundred header reads).
        """
        with self._guard():
            self._check_usable()
            self._refresh()
            count = len(self._segments) - 1
            sealed = sum(length - _HEADER_END for _, length in self._manifest.segments[:count])
            if sealed <= 0:
                return 0, 0
            limit = count << _SLOT_SHIFT
            live = [loc for loc in self._index.values() if loc < limit]
            if not live:
                return sealed, sealed
            sample = live[:: max(1, len(live) // 256)]
            size = sum(
                self._segments[loc >> _SLOT_SHIFT].record_size(loc & _OFFSET_MASK) for loc in sample
            )
            live_bytes = size * len(live) // len(sample)
            return max(sealed - live_bytes, 0), sealed

    def stats(self) -> dict[str, int]:
        """Numbers for inspection: live keys, segments, committed bytes in the
        segments, MANIFEST generation and the last transaction id."""
        with self._guard():
            self._check_usable()
            self._refresh()
            return {
                "keys": len(self._index),
                "segments": len(self._segments),
                "segment_bytes": sum(seg.readable_end for seg in self._segments),
                "generation": self._manifest.generation,
                "last_txid": self._txid,
            }
