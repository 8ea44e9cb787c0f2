"""The writer lock: the only place that touches OS locks or imports filelock,
and the change counter that every hold of the lock moves.

Writers of one store serialize on the store's ``LOCK`` file. Two backends take
the same OS lock, so they exclude each other across processes:

* ``"flock"`` (default on POSIX): ``flock(2)`` on a descriptor that stays open
  for the life of the handle. 0.5 us per uncontended acquire + release here,
  and a blocked waiter is woken by the kernel the moment the lock is released.
* ``"filelock"`` (default elsewhere): :class:`filelock.FileLock` with a 1 ms
  poll. On POSIX filelock also uses ``flock`` on the same file, which is why
  the two interoperate; but it opens and closes the file on every acquire
  (56-100 us measured) and polls instead of blocking, so it is the fallback,
  not the default. ``docs/concurrency.md`` has the measurements.

Within one process, every handle on the same store shares one lock object: two
descriptors on one file would otherwise contend with each other (flock locks
belong to open file descriptions), and a thread writing through a second handle
while a first handle's transaction holds the lock would deadlock. The shared
lock is re-entrant per thread. A killed process's lock is released by the
kernel, so a crash never leaves the store locked.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from . import _forking
from . import _format as fmt
from ._file_lock import ExclusiveFileLock
from ._fs import FileSystem
from ._lease import CONTENDED_PAUSE, COOL_DOWN, WaitList, releaser
from .errors import LockTimeoutError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ChangeCounter", "ExclusiveFileLock", "WriterLock"]

# Contended waits with a timeout poll with this back-off (seconds).
_POLL_FIRST = 50e-6
_POLL_MAX = 1e-3

# Every this many hand-overs, a holder frees the waiter slots of dead pids.
_CLEAR_DEAD_EVERY = 256

# Where CHANGES keeps its counter (little-endian: byte _AT holds bit 0).
_AT = fmt.CHANGES_COUNTER.start
_END = fmt.CHANGES_COUNTER.stop
_COUNTER_MASK = (1 << 64) - 1


class ChangeCounter:
    """The store's ``CHANGES`` file (docs/format.md §6), mapped shared: a
    sequence lock over the whole store.

    A writer makes the counter odd as soon as it holds the OS lock and raises
    it to the next even value just before releasing it. Every change to the
    store's files is made under that lock, so it happens while the counter is
    odd, and each hold ends on a value never seen before. A handle that read
    an even value, then brought itself up to date, and later reads the same
    value knows that nothing changed in between: it skips the size check of
    the active segment (an ``lseek``, a tenth of a read). A writer killed
    inside its hold leaves the counter odd, so every handle goes back to
    checking sizes until the next writer finishes.
    """

    def __init__(self, map_: mmap.mmap) -> None:
        #: The shared mapping; readers compare ``map[fmt.CHANGES_COUNTER]``.
        self.map = map_

    @classmethod
    def open(cls, store: str, writable: bool, fs: FileSystem | None = None) -> ChangeCounter | None:
        """Map ``store``'s counter, or None if the store has no valid one.

        Without it every operation checks sizes, which is always correct.
        Writers and readers agree on "valid" (the file's size and magic), so
        a reader never relies on a counter that a writer does not raise. A
        writer that cannot open a valid counter for writing raises instead
        of going on without it.
        """
        fs = fs if fs is not None else FileSystem()
        path = os.path.join(store, fmt.CHANGES_NAME)
        try:
            fd = fs.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            return None
        except PermissionError:
            if writable and cls.open(store, False, fs) is not None:
                raise
            return None
        try:
            if (
                fs.stat(fd).st_size != fmt.CHANGES.size
                or fs.pread(fd, len(fmt.CHANGES_MAGIC), 0) != fmt.CHANGES_MAGIC
            ):
                return None
            return cls(fs.map_shared(fd, fmt.CHANGES.size, writable))
        finally:
            fs.close(fd)

    def begin(self) -> bytes:
        """The OS lock was just taken: mark a hold in progress (odd), and
        return the counter bytes found. An odd value is kept: a writer died
        inside its hold.

        Even to odd sets bit 0, so this is a one-byte store: no handle can
        read a half-written counter.
        """
        m = self.map
        raw = m[_AT:_END]
        if not raw[0] & 1:
            m[_AT] = raw[0] | 1
        return raw

    def end(self) -> bytes:
        """The OS lock is about to be released: move to the next even value
        and return its bytes.

        Odd to even is a one-byte store too, unless the low byte carries (one
        hold in 128). Then the eight bytes are copied in one ``memcpy`` to an
        8-aligned address, which glibc does with one 8-byte store on x86-64
        and arm64; docs/format.md §6.1 says how little a torn copy could fool.
        """
        m = self.map
        low = m[_AT]
        if low < 0xFE:
            m[_AT] = (low | 1) + 1
        else:
            value = int.from_bytes(m[_AT:_END], "little")
            m[_AT:_END] = (((value | 1) + 1) & _COUNTER_MASK).to_bytes(8, "little")
        return m[_AT:_END]

    def close(self) -> None:
        self.map.close()


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative); None: no deadline."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _timed_out(store: str, timeout: float | None, by: str) -> LockTimeoutError:
    return LockTimeoutError(
        f"timed out after {timeout} s waiting for the writer lock of {store} ({by})"
    )


class _ProcessLock:
    """One OS lock on one lock file, shared by every handle in this process.

    ``deadline`` arguments are ``time.monotonic()`` values: one operation's
    waits (for the thread mutex, then for the OS lock) share one budget, so
    ``lock_timeout`` bounds their total.
    """

    def __init__(self, fs: FileSystem, path: str, backend: str, mode: int) -> None:
        self.fs = fs
        self.path = path
        self.backend = backend
        self.mutex = threading.RLock()
        self.depth = 0
        self.fd = -1
        # flock sits on every write's path: call it straight unless a test's
        # FileSystem overrides it (then every call goes through the seam).
        self._flock: Callable[[int, int], None] = (
            fcntl.flock if fcntl is not None and type(fs).flock is FileSystem.flock else fs.flock
        )
        self.filelock: object | None = None
        # Raised around every hold, whichever backend takes the OS lock.
        self.changes = ChangeCounter.open(os.path.dirname(path), True, fs)
        # The lease (_lease): the flock backend keeps the OS lock between
        # holds while no other process waits for it. ``leased``: held with
        # depth 0. ``holds`` counts holds ended under the lease (the releaser
        # compares it to see idleness); ``yield_next`` asks the next hold's
        # end to release, and no lease begins before ``lease_after``.
        self.leased = False
        self.holds = 0
        self.lease_since = 0.0
        self.lease_after = 0.0
        self.yield_next = False
        self._handovers = 0
        self.waiters: WaitList | None = None
        if backend == "flock":
            self.fd = fs.open(path, os.O_RDWR | os.O_CREAT, mode)
            self.waiters = WaitList.open(os.path.dirname(path), fs, mode)
        else:
            import filelock

            # thread_local=False: our own RLock already gives per-thread
            # exclusion; filelock's thread-local mode would create a second
            # OS-level context per thread.
            self.filelock = filelock.FileLock(
                path, mode=mode, thread_local=False, poll_interval=0.001
            )

    def acquire(self, timeout: float | None, store: str, deadline: float | None = None) -> None:
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        if deadline is None:
            self.mutex.acquire()
        elif not self.mutex.acquire(timeout=_remaining(deadline)):  # type: ignore[arg-type]
            raise _timed_out(store, timeout, "held by another thread of this process")
        try:
            self.enter_held(timeout, store, deadline)
        except BaseException:
            self.mutex.release()
            raise

    def enter_held(
        self, timeout: float | None, store: str, deadline: float | None = None
    ) -> bytes | None:
        """:meth:`acquire` for a caller that already holds ``self.mutex`` (the
        engine's write path, whose mutex is this one): only the OS lock.

        Returns the change counter's bytes as this call found them when it
        took the OS lock; None when the lock was already held (a nested hold)
        or the store has no counter.
        """
        if self.depth:
            self.depth += 1
            return None
        if self.leased:
            pass  # the OS lock is still ours: no system call
        elif self.fd >= 0:
            try:
                self._flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._acquire_os(timeout, store, deadline)
        else:
            self._acquire_os(timeout, store, deadline)
        self.depth = 1
        if self.changes is None:
            return None
        return self.changes.begin()

    def exit_held(self) -> bytes | None:
        """Undo :meth:`enter_held`; the caller still holds ``self.mutex``.

        Returns the counter's new bytes when this call released the OS lock;
        None when a hold is still open or the store has no counter.
        """
        self.depth -= 1
        if self.depth:
            return None
        try:
            return None if self.changes is None else self.changes.end()
        finally:
            if self.filelock is not None:
                self.filelock.release()  # type: ignore[attr-defined]
            elif self.waiters is None:
                self._flock(self.fd, fcntl.LOCK_UN)  # no lease without a waiter list
            elif self.yield_next:
                self._hand_over(COOL_DOWN)
            elif self.waiters.anyone():
                self._hand_over(CONTENDED_PAUSE)
            elif self.leased:
                self.holds += 1
            elif time.monotonic() >= self.lease_after:
                self._begin_lease()
            else:  # cooling down after a long lease: no lease yet
                self._flock(self.fd, fcntl.LOCK_UN)

    def _begin_lease(self) -> None:
        """Keep the OS lock after this hold; the releaser gives it up later."""
        self.leased = True
        self.lease_since = time.monotonic()
        releaser.watch(self)

    def _hand_over(self, pause: float) -> None:
        """Release the OS lock at the end of a hold (someone waits, or the
        lease ran its time) and begin no lease for ``pause`` seconds."""
        self.drop_lease(pause)
        self._handovers += 1
        if not self._handovers % _CLEAR_DEAD_EVERY and self.waiters is not None:
            # A waiter killed while waiting leaves its pid behind, and every
            # holder would hand over to nobody at each write.
            self.waiters.clear_dead()

    def drop_lease(self, pause: float) -> None:
        """Release the OS lock, leased or at the end of a hold, and begin no
        lease for ``pause`` seconds: the releaser's call for an idle, wanted
        or too long held lease (it holds ``mutex`` and saw ``depth == 0``)."""
        if self.fd >= 0:
            self._flock(self.fd, fcntl.LOCK_UN)  # if this raises, still leased
        self.lease_after = time.monotonic() + pause
        self.leased = False
        self.yield_next = False

    def _acquire_os(self, timeout: float | None, store: str, deadline: float | None) -> None:
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        if self.filelock is not None:
            import filelock

            remaining = _remaining(deadline)
            try:
                self.filelock.acquire(timeout=-1 if remaining is None else remaining)  # type: ignore[attr-defined]
            except filelock.Timeout as exc:
                raise _timed_out(store, timeout, "another process is writing") from exc
            return
        # Sign up as a waiter, so that a holder keeping a lease hands over
        # at the end of its current write (_lease); and, having waited,
        # take no lease for a while (others are writing too).
        slot = 0 if self.waiters is None else self.waiters.join(os.getpid())
        self.lease_after = time.monotonic() + CONTENDED_PAUSE
        try:
            if deadline is None:
                # Blocks in the kernel; interruptible by signals (Ctrl-C).
                self.fs.flock(self.fd, fcntl.LOCK_EX)
                return
            pause = _POLL_FIRST
            while True:
                try:
                    self.fs.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _timed_out(store, timeout, "another process is writing") from None
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, _POLL_MAX)
        finally:
            if self.waiters is not None:
                self.waiters.leave(slot)

    def release(self) -> None:
        try:
            self.exit_held()
        finally:
            self.mutex.release()

    def close(self) -> None:
        releaser.forget(self)
        # Not while the releaser may be unlocking this descriptor; but never
        # wait forever: at interpreter exit the (daemon) releaser can be
        # frozen holding the mutex, and closing the descriptor is all we need.
        got = self.mutex.acquire(timeout=1.0)
        try:
            self.leased = False
            self._release_resources()
        finally:
            if got:
                self.mutex.release()

    def forget(self) -> None:
        """In a forked child: close this process's copies, release nothing
        (the parent's lease is the parent's; no releaser thread exists here,
        and the mutex may be held by a thread that did not survive the fork)."""
        self.leased = False
        self._release_resources()

    def _release_resources(self) -> None:
        # Closing the last descriptor releases a lease's OS lock.
        if self.changes is not None:
            changes, self.changes = self.changes, None
            changes.close()
        if self.waiters is not None:
            waiters, self.waiters = self.waiters, None
            waiters.close()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)


class _Registry:
    """Process-wide table of shared locks, keyed by the lock file's identity."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[tuple[int, int, int], tuple[_ProcessLock, int]] = {}

    def get(
        self, fs: FileSystem, path: str, backend: str, mode: int
    ) -> tuple[_ProcessLock, tuple[int, int, int]]:
        with self.guard:
            # Create the lock file first so that its identity is stable.
            fd = fs.open(path, os.O_RDWR | os.O_CREAT, mode)
            try:
                st = fs.stat(fd)
            finally:
                fs.close(fd)
            # The counter file is part of the identity: a store deleted and
            # created again whose LOCK reuses the inode number (nothing holds
            # it open under the filelock backend) must not get the old lock,
            # which raises the old, unlinked counter.
            try:
                changes = fs.stat_path(os.path.join(os.path.dirname(path), fmt.CHANGES_NAME)).st_ino
            except FileNotFoundError:
                changes = 0
            # Not the backend: handles of one process opened with different
            # backends must still share one lock, or a write through one while
            # the other holds it would wait on itself. Both backends take flock
            # on the same file, so the first one's choice serves every handle.
            ident = (st.st_dev, st.st_ino, changes)
            entry = self.locks.get(ident)
            if entry is None:
                lock = _ProcessLock(fs, path, backend, mode)
                self.locks[ident] = (lock, 1)
            else:
                lock = entry[0]
                self.locks[ident] = (lock, entry[1] + 1)
            return lock, ident

    def put(self, ident: tuple[int, int, int]) -> None:
        with self.guard:
            entry = self.locks.get(ident)
            if entry is None:
                return
            lock, refs = entry
            if refs <= 1:
                del self.locks[ident]
                lock.close()
            else:
                self.locks[ident] = (lock, refs - 1)

    def forget_after_fork(self) -> None:
        # The child must not use descriptors shared with its parent: a flock
        # belongs to the open file description, so the child would believe it
        # holds the parent's lock. Closing our copies also ensures a parent
        # killed while holding the lock does not stay locked through us.
        self.guard = threading.Lock()
        for lock, _ in self.locks.values():
            try:
                lock.forget()
            except OSError:
                pass
        self.locks = {}


_registry = _Registry()
_forking.register(_registry)


class WriterLock:
    """The writer lock of one store, as seen by one handle.

    Re-entrant within a thread (a transaction may call methods that lock
    again). ``timeout=None`` waits indefinitely; otherwise a wait longer than
    ``timeout`` seconds (or past the ``deadline`` given to
    :meth:`acquire`/:meth:`enter_held`) raises :class:`LockTimeoutError`
    naming the store. ``backend`` is ``"flock"`` or ``"filelock"`` (already
    resolved by ``_options``).
    """

    def __init__(
        self,
        path: str,
        store: str,
        timeout: float | None,
        backend: str = "flock",
        fs: FileSystem | None = None,
        mode: int = 0o666,
    ) -> None:
        fs = fs if fs is not None else FileSystem()
        self.path = path
        self.store = store
        self.timeout = timeout
        self._shared, self._ident = _registry.get(fs, path, backend, mode)
        #: The backend in use: the first handle's in this process (see _Registry.get).
        self.backend = self._shared.backend
        self._finalizer = weakref.finalize(self, _registry.put, self._ident)
        # Bound once: acquire/release sit on every write's path. Each takes
        # an optional deadline (time.monotonic()) shared with earlier waits.
        self.acquire: Callable[..., None] = functools.partial(self._shared.acquire, timeout, store)
        self.release: Callable[[], None] = self._shared.release
        #: The shared re-entrant thread lock inside this writer lock; the
        #: engine uses it as its own mutex.
        self.mutex: threading.RLock = self._shared.mutex
        #: acquire/release for a thread that already holds ``mutex``.
        #: Both return the change counter's bytes, see _ProcessLock.
        self.enter_held: Callable[..., bytes | None] = functools.partial(
            self._shared.enter_held, timeout, store
        )
        self.exit_held: Callable[[], bytes | None] = self._shared.exit_held

    def __enter__(self) -> WriterLock:
        self._shared.acquire(self.timeout, self.store)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shared.release()

    def yield_lease(self) -> None:
        """Release the OS lock when the current hold ends, even with no
        waiter (the caller has work to do after it, outside the lock)."""
        self._shared.yield_next = True

    def busy(self) -> bool:
        """Is the OS lock held by some thread of this process right now? A
        hint only (read without the mutex): for "not now" decisions."""
        return self._shared.depth > 0

    def close(self) -> None:
        """Drop this handle's reference to the shared lock."""
        self._finalizer()

    def abandon(self) -> None:
        """Forget this lock without touching the registry (in a forked child,
        where the registry was emptied and the descriptors closed)."""
        self._finalizer.detach()
