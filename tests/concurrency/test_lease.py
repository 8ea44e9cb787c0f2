"""The writer lease (``logshelf._lease``): a writer keeps the OS lock between
its writes while nobody else wants it, and gives it up when someone does,
when it goes idle, or when it is killed."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf import _lease
from logshelf._fs import FileSystem


class _CountingFS(FileSystem):
    """Counts flock calls (overriding flock routes every call through here)."""

    def __init__(self) -> None:
        super().__init__()
        self.flocks: list[int] = []

    def flock(self, fd: int, operation: int) -> None:
        self.flocks.append(operation)
        super().flock(fd, operation)


def _lock_is_free(store: Path) -> bool:
    """Try the store's writer lock from a new open file description."""
    fd = os.open(store / fmt.LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases what we may have taken
    return True


def _wait_until(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.001)
    return False


def test_writes_under_a_lease_make_no_lock_system_call(tmp_path: Path) -> None:
    fs = _CountingFS()
    store = tmp_path / "s"
    with logshelf.open(store, _fs=fs) as db:
        db["first"] = 0
        before = len(fs.flocks)
        start = time.monotonic()
        for i in range(500):
            db[f"k{i}"] = i
        elapsed = time.monotonic() - start
        during = fs.flocks[before:]
        # The releaser may give an idle lease up between two writes (the
        # machine may pause this thread for a tick); each such release costs
        # one unlock and one lock. Far fewer than two per write either way.
        ticks = int(elapsed / _lease.TICK) + 2
        assert len(during) <= 2 * ticks and len(during) < 500, (len(during), elapsed)
        assert all(db[f"k{i}"] == i for i in range(500))


def test_an_idle_lease_is_released(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store) as db:
        db["k"] = 1
        # Held right after the write (a lease), released within a few ticks.
        assert _wait_until(lambda: _lock_is_free(store))
        db["k"] = 2  # and taken again when needed
        assert db["k"] == 2


def test_a_lease_ends_with_the_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s"
    db = logshelf.open(store)
    # The releaser never sees this lease: only close() can end it.
    monkeypatch.setattr(_lease.releaser, "watch", lambda holder: None)
    db["k"] = 1
    assert not _lock_is_free(store)
    db.close()
    assert _lock_is_free(store)


_HOLDER = textwrap.dedent(
    """
    import sys, time
    import logshelf
    from logshelf import _lease
    _lease.TICK = float(sys.argv[3])  # 3600: the releaser never runs
    db = logshelf.open(sys.argv[1], lock_timeout=30)
    mode = sys.argv[2]
    if mode == "idle":
        db["holder"] = "wrote"
        print("ready", flush=True)
        time.sleep(60)
    else:  # keep writing until told (by a file) to stop
        i = 0
        print("ready", flush=True)
        stop = sys.argv[1] + ".stop"
        import os
        while not os.path.exists(stop):
            db[f"h{i % 1000}"] = i
            i += 1
        db.close()
        print(i, flush=True)
    """
)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _start_holder(store: Path, mode: str, tick: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store), mode, str(tick)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.timeout(120)
def test_a_busy_holder_hands_over_to_a_waiting_process(tmp_path: Path) -> None:
    """The holder writes non-stop and its releaser is off: only the waiter
    slot in LEASE gets the lock to us, at the end of one of its writes."""
    store = tmp_path / "s"
    logshelf.open(store).close()
    holder = _start_holder(store, "busy", 3600.0)
    try:
        with logshelf.open(store, lock_timeout=5) as db:
            for i in range(50):
                db[f"mine{i}"] = i  # LockTimeoutError if nobody hands over
            assert all(db[f"mine{i}"] == i for i in range(50))
        (tmp_path / "s.stop").touch()
        out, _ = holder.communicate(timeout=60)
        assert holder.returncode == 0 and int(out) > 0
    finally:
        _stop(holder)
    with logshelf.open(store, "r") as db:
        assert all(db[f"mine{i}"] == i for i in range(50))
        assert sum(1 for k in db if k.startswith("h")) > 0


@pytest.mark.timeout(120)
def test_an_idle_holder_releases_to_a_waiting_process(tmp_path: Path) -> None:
    store = tmp_path / "s"
    logshelf.open(store).close()
    holder = _start_holder(store, "idle", _lease.TICK)
    try:
        with logshelf.open(store, lock_timeout=5) as db:
            db["mine"] = 1
            assert db["holder"] == "wrote"
    finally:
        _stop(holder)


@pytest.mark.timeout(120)
def test_a_holder_killed_while_holding_a_lease(tmp_path: Path) -> None:
    """kill -9 of a process that holds a lease (idle, its releaser off): the
    kernel releases the lock, every acknowledged write is there, and writing
    goes on."""
    store = tmp_path / "s"
    logshelf.open(store).close()
    holder = _start_holder(store, "idle", 3600.0)
    try:
        assert not _lock_is_free(store)  # it really holds the lock between writes
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert _lock_is_free(store)
        with logshelf.open(store, lock_timeout=5) as db:
            assert db["holder"] == "wrote"
            db["after"] = 1
            assert db.verify() == []
    finally:
        _stop(holder)


def test_a_dead_waiters_slot_is_cleared(tmp_path: Path) -> None:
    """A waiter killed while waiting leaves its pid in LEASE; holders then
    hand over after every write until they notice it is dead."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = tmp_path / "s"
    with logshelf.open(store) as db:
        db["k"] = 0
        lease = store / fmt.LEASE_NAME
        with open(lease, "r+b") as f:
            f.seek(fmt.LEASE_WAITERS.start)
            f.write(dead.pid.to_bytes(4, "little"))
        for i in range(300):  # more than _locking._CLEAR_DEAD_EVERY hand-overs
            db["k"] = i
        data = lease.read_bytes()
        assert data[fmt.LEASE_WAITERS] == bytes(4 * fmt.LEASE_SLOTS)
        assert db["k"] == 299


def test_a_damaged_lease_file_only_costs_the_lease(tmp_path: Path) -> None:
    """No usable waiter list: every write takes and releases the OS lock,
    as without a lease, and everything else works."""
    store = tmp_path / "s"
    logshelf.open(store).close()
    (store / fmt.LEASE_NAME).write_bytes(b"not a lease file")
    fs = _CountingFS()
    with logshelf.open(store, _fs=fs) as db:
        before = len(fs.flocks)
        for i in range(20):
            db[f"k{i}"] = i
        assert len(fs.flocks) - before >= 40
        assert _lock_is_free(store)
        assert dict(db) == {f"k{i}": i for i in range(20)}


def test_a_store_without_a_lease_file_gets_one(tmp_path: Path) -> None:
    """Stores made before the lease existed: the first writer adds the file."""
    store = tmp_path / "s"
    logshelf.open(store).close()
    (store / fmt.LEASE_NAME).unlink()
    with logshelf.open(store, "r") as db:  # readers write nothing
        assert len(db) == 0
    assert not (store / fmt.LEASE_NAME).exists()
    with logshelf.open(store) as db:
        db["k"] = 1
    assert (store / fmt.LEASE_NAME).read_bytes() == fmt.encode_lease()


@pytest.mark.timeout(120)
def test_a_foreign_filelock_user_gets_its_turn(tmp_path: Path) -> None:
    """A process that cannot sign up as a waiter (here ``filelock`` polling
    LOCK, as a foreign tool would) still gets the lock while this process
    writes non-stop: a lease ends after MAX_HOLD, and the next one begins
    only after COOL_DOWN."""
    store = tmp_path / "s"
    logshelf.open(store).close()
    code = textwrap.dedent(
        """
        import sys, filelock
        lock = filelock.FileLock(sys.argv[1], timeout=30, thread_local=False)
        with lock:
            print("got", flush=True)
        """
    )
    with logshelf.open(store) as db:
        db["start"] = 0  # a lease from here on
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(store / fmt.LOCK_NAME)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            i = 0
            deadline = time.monotonic() + 60
            while child.poll() is None and time.monotonic() < deadline:
                db[f"k{i % 100}"] = i
                i += 1
            assert child.wait(timeout=30) == 0
            assert child.stdout is not None and child.stdout.read().strip() == "got"
        finally:
            _stop(child)


def _lease_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "logshelf-lease" and t.is_alive()]


def test_fork_drops_leases_and_the_thread(tmp_path: Path) -> None:
    """A process forked while it has threads may deadlock in the child, and
    Python 3.12+ warns about it: before a fork every lease is given up and
    the releaser thread stopped; the next write starts it again."""
    store = tmp_path / "s"
    with logshelf.open(store) as db:
        db["k"] = 0
        assert _lease_threads() and not _lock_is_free(store)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its status
            ok = not _lease_threads()
            try:
                with logshelf.open(store, lock_timeout=5) as child:
                    child["child"] = 1
            except BaseException:
                os._exit(2)
            os._exit(0 if ok else 1)
        # In the parent, right after the fork: no thread, no lock held.
        assert not _lease_threads()
        assert os.waitpid(pid, 0)[1] == 0
        assert _lock_is_free(store)
        db["k"] = 1
        assert _lease_threads()
        assert db["child"] == 1
