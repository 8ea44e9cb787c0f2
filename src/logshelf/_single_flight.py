"""Single flight: one computation per cold key, across threads and processes.

A caller about to compute key K first takes K's flight lock; every other
caller of K, in any thread or process, waits for it, then finds the value in
the store. The lock is two-level, because POSIX record locks belong to a
process (two threads of one process never exclude each other):

* in this process, a ``threading.Lock`` per key offset;
* across processes, an exclusive ``fcntl.lockf`` lock on one byte of
  ``CACHE.FLIGHTS`` at ``flight_offset(K)`` (``_cache_format.py``). The kernel
  releases it when its holder dies, even by ``kill -9``, so a waiter takes
  over at once and no "being computed" flag can be left behind (cachier's
  failure). A waiter blocked in the kernel wakes as soon as the holder
  unlocks, right after its commit.

Record locks have one trap: closing *any* descriptor of the file drops all of
the process's locks on it. So each process opens ``CACHE.FLIGHTS`` once per
store and keeps it open until exit (a registry keyed by the file's identity).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from dataclasses import dataclass, field

from . import _cache_format as cfmt
from . import _forking
from ._fs import FileSystem

__all__ = ["Flights", "Ticket"]


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    owner: int = 0


@dataclass
class Ticket:
    """The outcome of :meth:`Flights.acquire`; give it back to :meth:`Flights.release`.

    ``held``: this caller may compute (it holds the lock, or no lock applies).
    Not held: another caller held the lock, this one waited until it let go
    and holds nothing; it should read the store, and acquire again if the
    value is not there (the holder raised or died)."""

    offset: int
    #: True when another caller held the lock and this one waited for it.
    waited: bool
    held: bool
    #: False for a re-entrant acquire (this thread already computes K), and
    #: when the kernel reported a deadlock: nothing to release then.
    owned: bool = False
    process_locked: bool = False


class _FlightFile:
    """``CACHE.FLIGHTS`` of one store, open once in this process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.mutex = threading.Lock()
        self.slots: dict[int, _Slot] = {}
        _forking.register(self)

    def forget_after_fork(self) -> None:
        # A child holds none of its parent's record locks, and no thread of
        # the parent exists in it: every slot starts free, and so does the
        # registry's mutex (a parent thread may have held it at the fork).
        global _files_mutex
        self.mutex = threading.Lock()
        self.slots = {}
        _files_mutex = threading.Lock()


_files: dict[tuple[int, int], _FlightFile] = {}
_files_mutex = threading.Lock()


class Flights:
    """The flight locks of one cache directory."""

    def __init__(self, directory: str, fs: FileSystem, mode: int) -> None:
        path = os.path.join(directory, cfmt.FLIGHTS_NAME)
        try:
            fd = fs.open(path, os.O_RDWR | os.O_CREAT, mode)
        except PermissionError:
            # A read-only directory: lockf needs a descriptor open for
            # writing, so single flight is off and callers compute alone.
            self._file: _FlightFile | None = None
            return
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        with _files_mutex:
            known = _files.get(ident)
            if known is None:
                known = _files[ident] = _FlightFile(fd)
            else:
                # Keep the first descriptor; closing this one before it held
                # any lock drops nothing.
                fs.close(fd)
        self._file = known

    def acquire(self, key: str) -> Ticket:
        """Take ``key``'s flight lock, waiting for another holder."""
        ticket = self._acquire(key, True)
        assert ticket is not None
        return ticket

    def try_acquire(self, key: str) -> Ticket | None:
        """Take ``key``'s flight lock if nobody holds it; None otherwise."""
        return self._acquire(key, False)

    def _acquire(self, key: str, blocking: bool) -> Ticket | None:
        offset = cfmt.flight_offset(key)
        file = self._file
        if file is None:
            return Ticket(offset, False, True)
        me = threading.get_ident()
        with file.mutex:
            slot = file.slots.get(offset)
            if slot is None:
                slot = file.slots[offset] = _Slot()
            elif slot.owner == me:
                # The function calls itself with the same arguments: waiting
                # for ourselves would hang; let it recurse as it would uncached.
                return Ticket(offset, False, True)
            slot.users += 1
        waited = False
        try:
            if not slot.lock.acquire(blocking=False):
                if not blocking:
                    self._leave(file, offset, slot)
                    return None
                waited = True
                slot.lock.acquire()
            slot.owner = me
        except BaseException:
            self._leave(file, offset, slot)
            raise
        try:
            locked = self._lock_process(file.fd, offset, blocking)
        except BaseException:
            self._unlock_slot(file, offset, slot)
            raise
        if locked is None or locked == "waited":
            self._unlock_slot(file, offset, slot)
            return None if locked is None else Ticket(offset, True, False)
        return Ticket(offset, waited, True, True, locked == "locked")

    @staticmethod
    def _lock_process(fd: int, offset: int, blocking: bool) -> str | None:
        """The process-level step: "locked" (exclusive), "waited" (another
        process held it and let go: nothing held now), "unlocked" (compute
        without the lock), or None when not blocking and busy.

        Waiters ask for a *shared* lock, which the kernel grants to all of
        them at once when the holder lets go: they then read the value side
        by side instead of taking the exclusive lock one after the other."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return "locked"
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        if not blocking:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH, 1, offset)
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
            # Two processes each computing a key the other one needs (two
            # memoized functions calling each other): the kernel refuses to
            # let both wait. Compute without the lock; both will store the
            # same value.
            return "unlocked"
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        return "waited"

    def release(self, ticket: Ticket) -> None:
        """Let the next waiter of the ticket's key go (after the commit)."""
        file = self._file
        if file is None or not ticket.owned:
            return
        if ticket.process_locked:
            fcntl.lockf(file.fd, fcntl.LOCK_UN, 1, ticket.offset)
        with file.mutex:
            slot = file.slots[ticket.offset]
        self._unlock_slot(file, ticket.offset, slot)

    def _unlock_slot(self, file: _FlightFile, offset: int, slot: _Slot) -> None:
        slot.owner = 0
        slot.lock.release()
        self._leave(file, offset, slot)

    @staticmethod
    def _leave(file: _FlightFile, offset: int, slot: _Slot) -> None:
        with file.mutex:
            slot.users -= 1
            if slot.users == 0 and file.slots.get(offset) is slot:
                del file.slots[offset]
