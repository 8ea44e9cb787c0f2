"""A handle opened before os.fork() and used in the child.

The child takes a fresh writer lock of its own (the parent's flock descriptor
is shared with it), keeps its index for reading, and must never think it holds
a lock its parent holds. Children report through exit codes and pipes and
always leave with ``os._exit``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import logshelf

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Forked:
    """A child forked to run ``child(chan)``, with a line channel each way.

    Each side closes the other side's pipe ends right after the fork, so a
    side that dies shows up as end-of-file at once instead of a timeout.
    """

    def __init__(self, child: Callable[[Forked], int]) -> None:
        self._child_r, self._parent_w = os.pipe()  # parent -> child
        self._parent_r, self._child_w = os.pipe()  # child -> parent
        sys.stdout.flush()
        sys.stderr.flush()
        self.status: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            status = 98
            try:
                os.close(self._parent_r)
                os.close(self._parent_w)
                self._r, self._w = self._child_r, self._child_w
                status = child(self)
            except BaseException:
                traceback.print_exc()
                status = 99
            finally:
                os._exit(status)
        os.close(self._child_r)
        os.close(self._child_w)
        self._r, self._w = self._parent_r, self._parent_w

    def send(self, msg: bytes) -> None:
        """One line to the other side (ignored if it is gone)."""
        try:
            os.write(self._w, msg + b"\n")
        except BrokenPipeError:
            pass

    def recv(self, timeout: float = 10.0) -> bytes:
        """One line from the other side; b"" on end-of-file or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._r], [], [], remaining)[0]:
                return b""
            chunk = os.read(self._r, 1)
            if not chunk:
                return b""
            data += chunk
        return data[:-1]

    def running(self) -> bool:
        if self.status is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is None

    def wait(self, timeout: float = 10.0) -> int:
        """The child's exit status; fails the test if it has not exited within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"child {self.pid} did not exit within {timeout} s")
            time.sleep(0.005)
        assert self.status is not None
        return self.status

    def reap(self) -> None:
        """Kill the child if it still runs, reap it, close the pipes (for ``finally``)."""
        try:
            if self.running():
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(status)
        finally:
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass


@pytest.mark.timeout(20)
def test_fork_child_writes_visible_to_parent(tmp_path: Path) -> None:
    """A forked child writes through the parent's handle; the parent sees it and keeps working."""
    store = tmp_path / "store"
    db = logshelf.open(store, lock_timeout=10)
    try:
        db["parent_before"] = 1

        def child(chan: Forked) -> int:
            if db["parent_before"] != 1:
                return 10
            for i in range(200):
                db[f"child:{i}"] = i
            with db.transaction():
                db["child_tx"] = db.get("child_tx", 0) + 1
            if db["child:199"] != 199 or db["child_tx"] != 1:
                return 11
            # A write the parent makes after the fork becomes visible here too.
            if chan.recv() != b"parent wrote":
                return 12
            if db.get("parent_after") != 2 or len(db) != 203:
                return 13
            return 0

        proc = Forked(child)
        try:
            db["parent_after"] = 2  # concurrently with the child's writes
            proc.send(b"parent wrote")
            assert proc.wait() == 0
        finally:
            proc.reap()
        # The parent's handle, not reopened, sees everything the child wrote.
        assert db["child:0"] == 0 and db["child:199"] == 199
        assert db["child_tx"] == 1
        assert len(db) == 203
        db["parent_last"] = 3
        with db.transaction():
            db["child_tx"] += 1
        assert db["child_tx"] == 2
    finally:
        db.close()
    with logshelf.open(store, "r") as again:
        assert len(again) == 204
        assert again["parent_last"] == 3 and again["child:150"] == 150


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_fork_child_lock_is_its_own(tmp_path: Path, backend: str) -> None:
    """A forked child's write times out during the parent's transaction, then succeeds."""
    store = tmp_path / "store"
    db = logshelf.open(store, lock_timeout=0.2, lock_backend=backend)
    try:
        db["k"] = 0
        db["k"] = 1  # the parent has used its lock before the fork

        def child(chan: Forked) -> int:
            if chan.recv() != b"parent locked":
                return 10
            try:
                db["child_blocked"] = 1
            except logshelf.LockTimeoutError as exc:
                if db.path not in str(exc):
                    return 11
                chan.send(b"timed out")
            else:
                chan.send(b"wrote while the parent held the lock")
                return 12
            if chan.recv() != b"parent released":
                return 13
            db["child_after"] = 1
            with db.transaction():
                db["k"] = db["k"] + 1
            return 0

        proc = Forked(child)
        try:
            with db.transaction():
                db["parent_tx"] = 1
                proc.send(b"parent locked")
                assert proc.recv() == b"timed out", f"child exit status {proc.wait()}"
            proc.send(b"parent released")
            assert proc.wait() == 0
        finally:
            proc.reap()
        assert "child_blocked" not in db
        assert db["child_after"] == 1
        assert db["parent_tx"] == 1
        assert db["k"] == 2
        db["parent_last"] = 1  # the parent's handle and lock still work
        assert db["parent_last"] == 1
    finally:
        db.close()


@pytest.mark.timeout(20)
def test_fork_inside_transaction_child_not_in_it(tmp_path: Path) -> None:
    """A child forked inside a transaction neither joins it nor holds its lock."""
    store = tmp_path / "store"
    db = logshelf.open(store, lock_timeout=0.2)
    try:
        db["k"] = 0

        def child(chan: Forked) -> int:
            try:
                db["child_in_parent_tx"] = 1
            except logshelf.LockTimeoutError:
                pass
            else:
                # Buffered into the inherited transaction, or written under the parent's lock.
                chan.send(b"wrote")
                return 10
            # The parent's uncommitted writes are not visible to the child.
            if "parent_tx" in db or db["k"] != 0:
                chan.send(b"saw the parent's uncommitted writes")
                return 11
            chan.send(b"timed out")
            if chan.recv() != b"committed":
                return 12
            if db["parent_tx"] != 1 or db["k"] != 1:
                return 13
            db["child_after"] = 1
            return 0

        proc = None
        try:
            with db.transaction():
                db["parent_tx"] = 1
                db["k"] = 1
                proc = Forked(child)
                assert proc.recv() == b"timed out", f"child exit status {proc.wait()}"
            proc.send(b"committed")
            assert proc.wait() == 0
        finally:
            if proc is not None:
                proc.reap()
        assert "child_in_parent_tx" not in db
        assert db["child_after"] == 1
        assert db["parent_tx"] == 1 and db["k"] == 1
    finally:
        db.close()


@pytest.mark.timeout(20)
def test_fork_sibling_waits_for_killed_lock_holder(tmp_path: Path, await_lock_waiter: Any) -> None:
    """A forked child waits for a forked sibling's lock and writes once that holder is SIGKILLed."""
    store = tmp_path / "store"
    # No lock timeout: the sibling then waits in a blocking flock, which
    # /proc/locks shows (a timed wait polls and leaves no such sign).
    db = logshelf.open(store)
    holder = writer = None
    try:
        db["k"] = 0

        def hold(chan: Forked) -> int:
            with db.transaction():
                db["holder_pending"] = 1
                chan.send(b"locked")
                time.sleep(60)
            return 0

        def write(chan: Forked) -> int:
            chan.send(b"started")
            db["writer"] = 1
            return 0

        holder = Forked(hold)
        assert holder.recv() == b"locked", f"holder exit status {holder.wait()}"
        # A sibling forked now shares the parent's (unlocked) lock descriptor,
        # not the holder's: it must wait for the holder...
        writer = Forked(write)
        assert writer.recv() == b"started"
        await_lock_waiter(writer.pid, writer.running)
        assert "writer" not in db, "wrote while a sibling held the lock"
        # ...and proceed once the holder is killed.
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait() == -signal.SIGKILL
        assert writer.wait() == 0
        assert db["writer"] == 1
        assert "holder_pending" not in db
        db["parent_last"] = 1
    finally:
        for proc in (holder, writer):
            if proc is not None:
                proc.reap()
        db.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_forked_child_does_not_keep_dead_parents_lock(
    workers: Any, tmp_path: Path, backend: str
) -> None:
    """A lock holder SIGKILLed while its forked child lives on leaves the store unlocked."""
    store = tmp_path / "store"
    grandchild = 0
    with logshelf.open(store, lock_timeout=0.2) as db:
        holder = workers.spawn("fork_and_hold", store=str(store), lock_backend=backend)
        try:
            grandchild = int(holder.expect_prefix("locked "))
            with pytest.raises(logshelf.LockTimeoutError):
                db["blocked"] = 1
            holder.kill()
            holder.proc.wait(timeout=30)
            os.kill(grandchild, 0)  # the holder's child is still alive...
            db["after"] = 1  # ...and must not hold the lock through inherited descriptors
            assert "pending" not in db and "blocked" not in db
        finally:
            if grandchild:
                try:
                    os.kill(grandchild, signal.SIGKILL)
                except ProcessLookupError:
                    pass
