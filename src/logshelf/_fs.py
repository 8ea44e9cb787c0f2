"""The one door to the operating system for store files.

Every system call logshelf makes on a store's files goes through a
:class:`FileSystem` instance. Production code uses the plain one below; the
fault-injection tests pass a subclass that fails, shortens or drops chosen
operations, which is only meaningful because nothing bypasses this layer.
(One exception: the ``"filelock"`` lock backend opens the lock file inside
the filelock package; the default ``"flock"`` backend comes through here.)
"""

from __future__ import annotations

import mmap
import os
import sys
import time
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileSystem"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

# One write(2) moves at most 0x7ffff000 bytes on Linux; larger values need a loop.
_MAX_WRITE = 1 << 30


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h
_range_call: list[Callable[[int, int, int, int], int] | None] = []


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` through ctypes (the os module has no
    binding), looked up once; None off Linux or without ctypes."""
    if not _range_call:
        call = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                call = ctypes.CDLL(None).sync_file_range
                call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                call.restype = ctypes.c_int
            except (ImportError, OSError, AttributeError):
                call = None
        _range_call.append(call)
    return _range_call[0]


class FileSystem:
    """Thin wrappers over ``os`` calls; methods raise the original ``OSError``."""

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        """Open ``path`` and return a descriptor that is not inherited by exec
        (``mode``, less the umask, for a file it creates)."""
        return os.open(path, flags | _O_CLOEXEC | _O_BINARY, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def size(self, fd: int) -> int:
        """Current size of an open file (an lseek: about 0.2 us here, half an fstat)."""
        return os.lseek(fd, 0, os.SEEK_END)

    def stat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def stat_path(self, path: str) -> os.stat_result:
        return os.stat(path)

    def flock(self, fd: int, operation: int) -> None:
        """``fcntl.flock``: raises BlockingIOError for a held lock with LOCK_NB."""
        assert fcntl is not None, "flock is POSIX only"
        fcntl.flock(fd, operation)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """Read up to ``length`` bytes at ``offset``; fewer only at end of file."""
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data
        # Regular files only return short reads at EOF, but be exact anyway.
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def append(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` at the end of an ``O_APPEND`` descriptor.

        Raises OSError on failure; the caller truncates back whatever part of
        ``data`` may have landed.
        """
        written = os.write(fd, data)
        if written == len(data):
            return
        view = memoryview(data)[written:]
        while view:
            written = os.write(fd, view[:_MAX_WRITE])
            if written <= 0:  # pragma: no cover - write(2) reports errors by raising
                raise OSError(f"write made no progress on fd {fd}")
            view = view[written:]

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (never on an ``O_APPEND``
        descriptor: Linux would append instead)."""
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def datasync(self, fd: int) -> None:
        """Make a file's data (and its size) durable."""
        if sys.platform == "darwin":  # pragma: no cover - not our CI platform
            # fsync on macOS does not flush the drive's cache.
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        elif hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # pragma: no cover
            os.fsync(fd)

    def fsync(self, fd: int) -> None:
        """Make a file's data and metadata durable."""
        os.fsync(fd)

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Ask the kernel to start writing ``length`` bytes at ``offset`` to
        the disk, without waiting: Linux's ``sync_file_range`` with
        ``SYNC_FILE_RANGE_WRITE``, which keeps the pages cached. Not a sync
        (nothing becomes durable by it, and it reports no earlier write
        error); a no-op where the call does not exist, and failures are
        ignored, since the sync that follows meets them anyway."""
        call = _sync_file_range()
        if call is not None:
            call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    def sync_directory(self, path: str) -> None:
        """Make a directory's entries (created, renamed, removed files) durable."""
        if sys.platform == "win32":  # pragma: no cover - NTFS journals its metadata
            return
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        """Read a whole (small) file."""
        fd = self.open(path, os.O_RDONLY)
        try:
            return self.pread(fd, self.size(fd), 0)
        finally:
            self.close(fd)

    def write_file_atomic(
        self, path: str, data: bytes, *, sync_dir: bool = True, mode: int = 0o666
    ) -> None:
        """Replace ``path`` with ``data`` so that readers and crashes see the old
        or the new content, never a mix: temporary file, fsync, rename, then
        fsync of the directory so the rename itself survives a power loss."""
        directory = os.path.dirname(path) or "."
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            try:
                self.append(fd, data)
                self.fsync(fd)
            finally:
                self.close(fd)
            self.replace(tmp, path)
        except BaseException:
            try:
                self.unlink(tmp)
            except OSError:
                pass
            raise
        if sync_dir:
            self.sync_directory(directory)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def map(self, fd: int, length: int) -> mmap.mmap:
        """Map the first ``length`` bytes of a file read-only.

        Callers map only bytes that can never be truncated away (committed
        records): touching a mapped page past end of file kills the process
        with SIGBUS.
        """
        return mmap.mmap(fd, length, access=mmap.ACCESS_READ)

    def map_range(self, fd: int, offset: int, length: int) -> memoryview:
        """A read-only view of ``length`` bytes at ``offset``, on a map of its
        own: it lives as long as the view or anything made from it (an
        array), and is never closed from here, so it stays valid after the
        file is closed or deleted. Only for committed bytes (see :meth:`map`)."""
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_READ, offset=start)
        return memoryview(mapping)[offset - start :]

    def read_into(self, fd: int, buffer: memoryview, offset: int) -> int:
        """Fill ``buffer`` from ``offset``; fewer bytes (the count returned)
        only at end of file."""
        done = 0
        while done < len(buffer):
            got = os.preadv(fd, [buffer[done:]], offset + done)
            if not got:
                break
            done += got
        return done

    def monotonic(self) -> float:
        """The clock of ``durability="interval"`` (tests pass a fake one)."""
        return time.monotonic()

    def map_shared(self, fd: int, length: int, writable: bool) -> mmap.mmap:
        """Map a small shared file (the change counter) for reading or writing."""
        return mmap.mmap(fd, length, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
