"""The writer lease: a writer keeps the OS lock between its writes.

A ``flock`` and its unlock are two system calls, a fifth of a small write's
cost here (``benchmarks/bench_floor.py``). A process that writes again and
again keeps the OS lock instead, as long as nobody else wants it:

* A process that finds the lock taken writes its pid into a slot of the
  store's ``LEASE`` file (shared memory, docs/format.md §6.3) while it
  waits, and clears it once it holds the lock.
* The holder looks at the slots at the end of every hold (a slice compare of
  the mapped file, no system call) and releases the OS lock when one is
  set: a waiter gets the lock after at most the holder's current write.
* One daemon thread per process (:class:`Releaser`) wakes every ``TICK``
  seconds (backing off to ``MAX_TICK`` while the holder keeps writing)
  while a lease is held and releases it when the holder made no write since
  its last look (idle), when a waiter signed up, or when the lease has been
  held longer than ``MAX_HOLD``; the next lease then waits ``COOL_DOWN``.
  That bounds the wait of whoever cannot sign up: a waiter whose slot
  another waiter shared and cleared, an older logshelf, a foreign
  ``filelock`` user.

A lease is for a process that writes alone. Once a hold ended with a
waiter, or this process had to wait, it takes no lease for
``CONTENDED_PAUSE``: writers that contend take and release the lock per
write, as without leases (a holder descheduled between two writes would
otherwise keep the lock from everyone for a time slice).

Nothing here changes what the lock protects: every change to the store is
still made inside a hold, with the change counter odd (``_locking``); a
killed holder's lock is released by the kernel as before.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from typing import Protocol

from . import _forking
from . import _format as fmt
from ._fs import FileSystem

__all__ = [
    "CONTENDED_PAUSE",
    "COOL_DOWN",
    "MAX_HOLD",
    "MAX_TICK",
    "TICK",
    "Releaser",
    "WaitList",
    "releaser",
]

#: How often the releaser looks at a held lease (seconds). A lease is given
#: up between one and two ticks after the holder's last write.
TICK = 0.001
#: ... and every 2 ticks, up to this, while the holder keeps writing.
MAX_TICK = 0.004
#: A lease held this long (seconds) is given up at the end of the next hold,
#: waiters or not...
MAX_HOLD = 0.02
#: ...and the next lease begins only this much later (seconds): until then
#: every write takes and releases the OS lock, leaving gaps in which a
#: process that cannot sign up as a waiter (an older logshelf, a foreign
#: ``filelock`` user polling the lock file) gets its turn.
COOL_DOWN = 0.002
#: After a hand-over to a waiter, or a wait for the lock, this process takes
#: no lease for this long (seconds). While several processes write at once a
#: lease buys nothing (it is handed over after every write) and costs much:
#: a holder the scheduler stops between two writes would keep everyone
#: waiting for its next time slice, where without a lease the lock is free.
CONTENDED_PAUSE = 0.05

_SLOTS = fmt.LEASE_SLOTS
_FIRST = fmt.LEASE_WAITERS.start
_END = fmt.LEASE_WAITERS.stop
_NOBODY = bytes(_END - _FIRST)


class WaitList:
    """The waiter slots of one store's ``LEASE`` file, mapped shared."""

    def __init__(self, map_: mmap.mmap) -> None:
        self.map = map_

    @classmethod
    def open(cls, store: str, fs: FileSystem, mode: int) -> WaitList | None:
        """Map (creating if needed) ``store``'s ``LEASE`` file; None when it
        cannot be used (then waiters wait for the holder's idle release)."""
        path = os.path.join(store, fmt.LEASE_NAME)
        try:
            fd = fs.open(path, os.O_RDWR | os.O_CREAT, mode)
        except OSError:
            return None
        try:
            size = fs.stat(fd).st_size
            if size == 0:
                # Two creators write the same bytes; the file never shrinks.
                fs.pwrite(fd, fmt.encode_lease(), 0)
                size = fmt.LEASE_SIZE
            if size != fmt.LEASE_SIZE or fs.pread(fd, 8, 0) != fmt.LEASE_MAGIC:
                return None
            return cls(fs.map_shared(fd, fmt.LEASE_SIZE, True))
        except OSError:
            return None
        finally:
            fs.close(fd)

    def anyone(self) -> bool:
        """Does any process wait for the lock? (One compare of 256 bytes.)"""
        return self.map[_FIRST:_END] != _NOBODY

    def join(self, pid: int) -> int:
        """Sign ``pid`` up as a waiter; return its slot's offset (0: no free
        slot, the waiter then relies on the holder's idle release)."""
        m = self.map
        raw = pid.to_bytes(4, "little")
        for i in range(_SLOTS):
            at = _FIRST + 4 * ((pid + i) % _SLOTS)
            if m[at : at + 4] == b"\0\0\0\0":
                m[at : at + 4] = raw
                return at
        return 0

    def leave(self, at: int) -> None:
        """Clear the slot :meth:`join` returned (once the lock is held)."""
        if at:
            self.map[at : at + 4] = b"\0\0\0\0"

    def clear_dead(self) -> None:
        """Free the slots of processes that no longer exist (a waiter killed
        while waiting), so that holders stop handing the lock to nobody."""
        m = self.map
        for at in range(_FIRST, _END, 4):
            pid = int.from_bytes(m[at : at + 4], "little")
            if pid:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    if m[at : at + 4] == pid.to_bytes(4, "little"):
                        m[at : at + 4] = b"\0\0\0\0"
                except OSError:
                    pass  # exists, someone else's

    def close(self) -> None:
        self.map.close()


class Holder(Protocol):
    """What the releaser needs of the process lock (``_locking._ProcessLock``)."""

    mutex: threading.RLock
    depth: int
    leased: bool
    holds: int
    lease_since: float
    yield_next: bool
    waiters: WaitList | None

    def drop_lease(self, pause: float) -> None:
        """Release the OS lock held as a lease (caller holds ``mutex``) and
        begin no new lease for ``pause`` seconds."""


class Releaser:
    """The one daemon thread of a process that gives up idle or wanted
    leases, of every store this process writes. Started by the first lease
    (its glibc arena reserves address space, untouched: one per process,
    not one per store)."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.wake = threading.Event()
        self.holders: set[Holder] = set()
        self.thread: threading.Thread | None = None
        self.stopping = False

    def watch(self, holder: Holder) -> None:
        """``holder`` just began a lease: look at it every tick until it ends."""
        with self.guard:
            if holder in self.holders and self.thread is not None:
                return  # still watched since its last lease: the thread is awake
            self.holders.add(holder)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="logshelf-lease", daemon=True)
                self.thread.start()
        self.wake.set()

    def forget(self, holder: Holder) -> None:
        """Stop watching ``holder`` (its lock is closing)."""
        with self.guard:
            self.holders.discard(holder)

    def _run(self) -> None:
        tick = TICK
        while not self.stopping:
            with self.guard:
                holders = list(self.holders)
            if not holders:
                self.wake.wait()
                self.wake.clear()
                continue
            seen = [h.holds for h in holders]
            time.sleep(tick)
            if self.stopping:
                return
            now = time.monotonic()
            busy = True
            for holder, holds in zip(holders, seen, strict=True):
                # Inside a hold (a transaction) is not idle.
                idle = holder.holds == holds and not holder.depth
                busy = busy and not idle
                if not self._look(holder, idle, now):
                    with self.guard:
                        if not holder.leased:
                            self.holders.discard(holder)
            # Each wake-up takes the GIL from the writing thread, which costs
            # it more than the look: while every holder keeps writing, look
            # less often (a waiter does not need the look: it signs up, and
            # the holder hands over at the end of its current hold).
            tick = min(tick * 2, MAX_TICK) if busy else TICK

    @staticmethod
    def _look(holder: Holder, idle: bool, now: float) -> bool:
        """Give up ``holder``'s lease if it is idle, wanted or too old;
        return whether it is still held."""
        if not holder.leased:
            return False
        waiters = holder.waiters
        wanted = waiters is not None and waiters.anyone()
        if not (idle or wanted or now - holder.lease_since > MAX_HOLD):
            return True
        if holder.mutex.acquire(blocking=False):
            try:
                if holder.leased and not holder.depth:
                    holder.drop_lease(CONTENDED_PAUSE if wanted else (0.0 if idle else COOL_DOWN))
                    if wanted and waiters is not None:
                        waiters.clear_dead()
            except (OSError, ValueError):
                # The unlock failed (a closed descriptor, a test's injected
                # error): this thread must live on; the next tick tries again.
                pass
            finally:
                holder.mutex.release()
        else:
            # A thread of this process is inside a hold: it gives the lock
            # up when that hold ends.
            holder.yield_next = True
        return holder.leased

    def before_fork(self) -> None:
        """Before ``fork()``: give up every lease that no thread is inside a
        hold of, and stop the thread. A process forked while it has threads
        may deadlock in the child, and Python 3.12+ warns about exactly that
        (a DeprecationWarning, after the parent's at-fork hooks ran: so the
        thread stays stopped unless a lease is still held)."""
        thread = self.thread
        if thread is None or thread is threading.current_thread():
            return
        self.stopping = True
        self.wake.set()
        thread.join(1.0)
        with self.guard:
            for holder in list(self.holders):
                if not holder.mutex.acquire(blocking=False):
                    continue
                try:
                    if holder.leased and not holder.depth:
                        holder.drop_lease(0.0)
                except (OSError, ValueError):
                    pass
                finally:
                    holder.mutex.release()
                if not holder.leased:
                    self.holders.discard(holder)

    def after_fork_in_parent(self) -> None:
        """Start the thread again if a lease is still held (one a thread
        of this process was inside a hold of at the fork)."""
        with self.guard:
            self.stopping = False
            if self.thread is not None and not self.thread.is_alive():
                self.thread = None
            if self.holders and self.thread is None:
                self.thread = threading.Thread(target=self._run, name="logshelf-lease", daemon=True)
                self.thread.start()

    def forget_after_fork(self) -> None:
        # No thread survives a fork, and the child holds no lease.
        self.guard = threading.Lock()
        self.wake = threading.Event()
        self.holders = set()
        self.thread = None
        self.stopping = False


#: The process's releaser.
releaser = Releaser()
_forking.register(releaser)
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=releaser.before_fork, after_in_parent=releaser.after_fork_in_parent)
