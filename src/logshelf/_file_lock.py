"""A plain exclusive file lock, for work that must not run twice at once
(compaction, garbage collection): one descriptor per acquisition, not on any
hot path. Split from ``_locking`` (the writer lock, which is), which
re-exports it.
"""

from __future__ import annotations

import os
import time

from . import _forking
from ._fs import FileSystem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ExclusiveFileLock"]


class ExclusiveFileLock:
    """A plain exclusive lock on a file, for work that must not run twice at
    once (compaction) but is not on any hot path: one descriptor per
    acquisition, no sharing, not re-entrant.

    Two acquisitions exclude each other whether they come from two processes,
    two handles of one process or two threads, because each one opens its own
    file description (flock) or its own filelock object.
    """

    def __init__(
        self,
        path: str,
        backend: str = "flock",
        fs: FileSystem | None = None,
        mode: int = 0o666,
    ) -> None:
        self.fs = fs if fs is not None else FileSystem()
        self.path = path
        self.backend = backend
        self.mode = mode
        self._fd = -1
        self._filelock: object | None = None

    def acquire(self, timeout: float | None) -> bool:
        """Take the lock; return False if it is still held by someone else after
        ``timeout`` seconds (0: try once; None: wait as long as it takes)."""
        if self._fd >= 0 or self._filelock is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        if self.backend == "filelock":
            import filelock

            lock = filelock.FileLock(
                self.path, mode=self.mode, thread_local=False, poll_interval=0.01
            )
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except filelock.Timeout:
                return False
            self._filelock = lock
            return True
        fs = self.fs
        fd = fs.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
        try:
            if timeout is None:
                fs.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fs.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            fs.close(fd)
                            return False
                        # Compactions take seconds: a coarse poll is enough.
                        time.sleep(min(0.01, remaining))
        except BaseException:
            try:
                fs.close(fd)
            except OSError:
                pass
            raise
        self._fd = fd
        _forking.register(self)
        return True

    def release(self) -> None:
        """Release the lock (closing the descriptor releases the flock)."""
        if self._filelock is not None:
            lock, self._filelock = self._filelock, None
            lock.release()  # type: ignore[attr-defined]
        _forking.unregister(self)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self.fs.close(fd)

    def forget_after_fork(self) -> None:
        # The child's copy of the descriptor would keep the parent's flock
        # alive after the parent releases it: close the copy, hold nothing.
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                self.fs.close(fd)
            except OSError:
                pass
