"""The writer lock: the only place that touches OS locks or imports filelock.

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
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from .errors import LockTimeoutError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["BACKENDS", "ExclusiveFileLock", "WriterLock"]

BACKENDS = ("auto", "flock", "filelock")

# Contended waits with a timeout poll with this back-off (seconds).
_POLL_FIRST = 50e-6
_POLL_MAX = 1e-3


class _ProcessLock:
    """One OS lock on one lock file, shared by every handle in this process."""

    def __init__(self, path: str, backend: str) -> None:
        self.path = path
        self.backend = backend
        self.mutex = threading.RLock()
        self.depth = 0
        self.fd = -1
        self.filelock: object | None = None
        if backend == "flock":
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        else:
            import filelock

            # thread_local=False: our own RLock already gives per-thread
            # exclusion; filelock's thread-local mode would create a second
            # OS-level context per thread.
            self.filelock = filelock.FileLock(path, thread_local=False, poll_interval=0.001)

    def acquire(self, timeout: float | None, store: str) -> None:
        if timeout is None:
            self.mutex.acquire()
        elif not self.mutex.acquire(timeout=max(timeout, 0.0)):
            raise LockTimeoutError(
                f"timed out after {timeout} s waiting for the writer lock of {store} "
                "(held by another thread of this process)"
            )
        try:
            self.enter_held(timeout, store)
        except BaseException:
            self.mutex.release()
            raise

    def enter_held(self, timeout: float | None, store: str) -> None:
        """:meth:`acquire` for a caller that already holds ``self.mutex`` (the
        engine's write path, whose mutex is this one): only the OS lock."""
        if self.depth:
            self.depth += 1
            return
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._acquire_os(timeout, store)
        else:
            self._acquire_os(timeout, store)
        self.depth = 1

    def exit_held(self) -> None:
        """Undo :meth:`enter_held`; the caller still holds ``self.mutex``."""
        self.depth -= 1
        if self.depth == 0:
            if self.filelock is not None:
                self.filelock.release()  # type: ignore[attr-defined]
            else:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _acquire_os(self, timeout: float | None, store: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.filelock is not None:
            import filelock

            try:
                self.filelock.acquire(  # type: ignore[attr-defined]
                    timeout=-1 if deadline is None else max(deadline - time.monotonic(), 0.0)
                )
            except filelock.Timeout as exc:
                raise LockTimeoutError(
                    f"timed out after {timeout} s waiting for the writer lock of {store} "
                    "(another process is writing)"
                ) from exc
            return
        assert fcntl is not None
        if deadline is None:
            # Blocks in the kernel; interruptible by signals (Ctrl-C).
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return
        pause = _POLL_FIRST
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeoutError(
                        f"timed out after {timeout} s waiting for the writer lock of "
                        f"{store} (another process is writing)"
                    ) from None
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, _POLL_MAX)

    def release(self) -> None:
        try:
            self.exit_held()
        finally:
            self.mutex.release()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _Registry:
    """Process-wide table of shared locks, keyed by the lock file's identity."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[tuple[int, int, str], tuple[_ProcessLock, int]] = {}

    def get(self, path: str, backend: str) -> tuple[_ProcessLock, tuple[int, int, str]]:
        with self.guard:
            # Create the lock file first so that its identity is stable.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            ident = (st.st_dev, st.st_ino, backend)
            entry = self.locks.get(ident)
            if entry is None:
                lock = _ProcessLock(path, backend)
                self.locks[ident] = (lock, 1)
            else:
                lock = entry[0]
                self.locks[ident] = (lock, entry[1] + 1)
            return lock, ident

    def put(self, ident: tuple[int, int, str]) -> None:
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
                lock.close()
            except OSError:
                pass
        self.locks = {}


_registry = _Registry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.forget_after_fork)


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to the backend for this platform; validate the name."""
    if backend not in BACKENDS:
        raise ValueError(f"lock backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "auto":
        return "flock" if fcntl is not None else "filelock"
    if backend == "flock" and fcntl is None:  # pragma: no cover - Windows
        raise ValueError("lock backend 'flock' is not available on this platform")
    return backend


class WriterLock:
    """The writer lock of one store, as seen by one handle.

    Re-entrant within a thread (a transaction may call methods that lock
    again). ``timeout=None`` waits indefinitely; otherwise a wait longer than
    ``timeout`` seconds raises :class:`LockTimeoutError` naming the store.
    """

    def __init__(self, path: str, store: str, timeout: float | None, backend: str = "auto") -> None:
        self.path = path
        self.store = store
        self.timeout = timeout
        self.backend = resolve_backend(backend)
        self._shared, self._ident = _registry.get(path, self.backend)
        self._finalizer = weakref.finalize(self, _registry.put, self._ident)
        # Bound once: acquire/release sit on every write's path.
        self.acquire: Callable[[], None] = functools.partial(self._shared.acquire, timeout, store)
        self.release: Callable[[], None] = self._shared.release
        #: The shared re-entrant thread lock inside this writer lock; the
        #: engine uses it as its own mutex.
        self.mutex: threading.RLock = self._shared.mutex
        #: acquire/release for a thread that already holds ``mutex``.
        self.enter_held: Callable[[], None] = functools.partial(
            self._shared.enter_held, timeout, store
        )
        self.exit_held: Callable[[], None] = self._shared.exit_held

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

    def is_held_by_me(self) -> bool:
        """True when the calling thread holds this lock (for assertions)."""
        return self._shared.depth > 0 and self._shared.mutex._is_owned()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Drop this handle's reference to the shared lock."""
        self._finalizer()

    def abandon(self) -> None:
        """Forget this lock without touching the registry (in a forked child,
        where the registry was emptied and the descriptors closed)."""
        self._finalizer.detach()


class ExclusiveFileLock:
    """A plain exclusive lock on a file, for work that must not run twice at
    once (compaction) but is not on any hot path: one descriptor per
    acquisition, no sharing, not re-entrant.

    Two acquisitions exclude each other whether they come from two processes,
    two handles of one process or two threads, because each one opens its own
    file description (flock) or its own filelock object.
    """

    def __init__(self, path: str, backend: str = "auto") -> None:
        self.path = path
        self.backend = resolve_backend(backend)
        self._fd = -1
        self._filelock: object | None = None

    def acquire(self, timeout: float | None) -> bool:
        """Take the lock; return False if it is still held by someone else after
        ``timeout`` seconds (0: try once; None: wait as long as it takes)."""
        if self._fd >= 0 or self._filelock is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        if self.backend == "filelock":
            import filelock

            lock = filelock.FileLock(self.path, thread_local=False, poll_interval=0.01)
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except filelock.Timeout:
                return False
            self._filelock = lock
            return True
        assert fcntl is not None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            if timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            os.close(fd)
                            return False
                        # Compactions take seconds: a coarse poll is enough.
                        time.sleep(min(0.01, remaining))
        except BaseException:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise
        self._fd = fd
        _held_exclusive.add(self)
        return True

    def release(self) -> None:
        """Release the lock (closing the descriptor releases the flock)."""
        if self._filelock is not None:
            lock, self._filelock = self._filelock, None
            lock.release()  # type: ignore[attr-defined]
        _held_exclusive.discard(self)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _forget_after_fork(self) -> None:
        # The child's copy of the descriptor would keep the parent's flock
        # alive after the parent releases it: close the copy, hold nothing.
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError:
                pass


# Exclusive locks held right now, so a forked child can drop its copies.
_held_exclusive: weakref.WeakSet[ExclusiveFileLock] = weakref.WeakSet()


def _exclusive_after_fork() -> None:
    for lock in list(_held_exclusive):
        lock._forget_after_fork()
    _held_exclusive.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_exclusive_after_fork)
