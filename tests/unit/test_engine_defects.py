"""Defects found by a full read of the engine (issue 11), each pinned by a
test that failed on the code before the split (c24d45f)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

import logshelf
from logshelf import _compaction, _engine, _file_lock, _locking
from logshelf import _format as fmt
from logshelf._fs import FileSystem
from logshelf._locking import ExclusiveFileLock


class _WriteOnFirstRead(FileSystem):
    """Runs ``action`` once, at the first value read of the handle it serves."""

    def __init__(self) -> None:
        self.action: object = None

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        action, self.action = self.action, None
        if callable(action):
            action()
        return super().pread(fd, length, offset)


def test_get_many_reads_one_state_of_the_store(store_path: Path) -> None:
    """Defect 2: another process's batch committed while get_many reads is
    either wholly visible or not at all (before: one key old, one new)."""
    with logshelf.open(store_path) as writer:
        writer.update({"a": 0, "b": 0})
        fs = _WriteOnFirstRead()
        with logshelf.open(store_path, "r", _fs=fs) as reader:
            assert reader.get_many(["a", "b"]) == {"a": 0, "b": 0}
            fs.action = lambda: writer.update({"a": 1, "b": 1})
            first = reader.get_many(["a", "b"])
            assert first in ({"a": 0, "b": 0}, {"a": 1, "b": 1}), first
            assert reader.get_many(["a", "b", "c"], default="-") == {"a": 1, "b": 1, "c": "-"}


def test_a_bad_lock_backend_is_refused_for_every_flag(store_path: Path) -> None:
    """Defect 4: flag "r" used to accept any lock_backend (only compact() failed)."""
    logshelf.open(store_path).close()
    for flag in ("r", "w", "c", "n"):
        with pytest.raises(ValueError, match="'bogus'"):
            logshelf.open(store_path, flag, lock_backend="bogus")


@pytest.mark.timeout(30)
def test_compact_on_a_read_only_or_closed_handle_raises_before_any_lock(store_path: Path) -> None:
    """Defect 4: compact() on a read-only or closed handle waited for
    COMPACT.LOCK (forever here, lock_timeout=None) before it raised."""
    logshelf.open(store_path).close()
    held = ExclusiveFileLock(str(store_path / fmt.COMPACT_LOCK_NAME))
    assert held.acquire(0)
    try:
        outcome: list[BaseException] = []

        def compact(db: logshelf.Shelf) -> None:
            try:
                db.compact()
            except BaseException as exc:
                outcome.append(exc)

        reader = logshelf.open(store_path, "r")
        closed = logshelf.open(store_path)
        closed.close()
        for handle, error in (
            (reader, logshelf.ReadOnlyError),
            (closed, logshelf.StoreClosedError),
        ):
            worker = threading.Thread(target=compact, args=(handle,), daemon=True)
            worker.start()
            worker.join(10)  # a hang guard, not a timing check
            assert not worker.is_alive(), "compact() waited for the compaction lock"
            assert isinstance(outcome.pop(), error)
        reader.close()
    finally:
        held.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
def test_fork_while_another_thread_holds_the_handle_mutex(store_path: Path) -> None:
    """Defect 5: a child forked while a parent thread held the handle's mutex
    (here: inside a transaction) blocked forever on its first operation."""
    db = logshelf.open(store_path)
    db["k"] = "before"
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: read and write, then report by exit code
            code = 1
            try:
                # (The write waits for the OS lock until the parent's
                # transaction ends, as any other process would.)
                db["child"] = "wrote"
                code = 0 if db["k"] == "before" and db["child"] == "wrote" else 2
            finally:
                os._exit(code)
    finally:
        leave.set()
        holder.join()
    assert _wait(pid, 20) == 0
    assert db["child"] == "wrote"
    db.close()


def _wait(pid: int, limit: float) -> int | None:
    """The child's exit code; kill it and return None if it has not exited
    after ``limit`` seconds (a hang guard)."""
    import time

    stop = time.monotonic() + limit
    while time.monotonic() < stop:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


class _FakeClock:
    """time.monotonic/time.sleep for the lock waits: sleeping advances the
    clock; at ``release_at`` a held compaction lock is let go."""

    def __init__(self, held: ExclusiveFileLock, release_at: float) -> None:
        self.now = 1000.0
        self.held, self.release_at = held, 1000.0 + release_at

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-4)
        if self.held is not None and self.now >= self.release_at:
            self.held.release()
            self.held = None  # type: ignore[assignment]


HOLDER = """
import sys, logshelf
db = logshelf.open(sys.argv[1])
with db.transaction():
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.timeout(60)
def test_lock_timeout_bounds_the_total_wait(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: compact() waited lock_timeout for the compaction lock and then
    lock_timeout again for the writer lock. Now the waits share one budget
    (measured on a fake clock that only the lock waits advance)."""
    writer = logshelf.open(store_path, max_segment_size=4096, lock_timeout=1.0)
    for i in range(50):
        writer[f"k{i}"] = "v" * 200
    held = ExclusiveFileLock(str(store_path / fmt.COMPACT_LOCK_NAME))
    assert held.acquire(0)
    clock = _FakeClock(held, release_at=0.3)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        fake = types.SimpleNamespace(
            monotonic=clock.monotonic, sleep=clock.sleep, perf_counter=clock.monotonic
        )
        monkeypatch.setattr(_locking, "time", fake)
        monkeypatch.setattr(_file_lock, "time", fake)
        monkeypatch.setattr(_engine, "time", fake)
        monkeypatch.setattr(_compaction, "time", fake)  # the deadline of compact()
        with pytest.raises(logshelf.LockTimeoutError):
            writer.compact()
        monkeypatch.undo()
        assert clock.held is None, "the compaction lock was never free"
        # One budget of 1 s for both waits; before: 0.3 s + 1 s.
        assert clock.now - 1000.0 <= 1.0 + 0.01, clock.now - 1000.0
    finally:
        monkeypatch.undo()
        if clock.held is not None:
            held.release()
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()
        writer.close()


def test_a_write_that_rolls_over_after_a_reload_is_indexed(tmp_path: Path) -> None:
    """A write whose rollover finds the MANIFEST moved on (another handle's
    compaction plan reserved segment ids: a new generation, no SEAL) reloads
    the view inside the rollover. The single-put fast path then indexed the
    write in the replaced index dict: the handle read back an older value (or
    none) of the key it had just written, until it reloaded again. Found by
    tests/concurrency/test_compaction_race.py::..._long, about 1 run in 10."""
    path = tmp_path / "db"
    with (
        logshelf.open(path, max_segment_size=4096, auto_compact=None) as w,
        logshelf.open(path, auto_compact=None) as other,
    ):
        w["k"] = "old"
        while w.stats()["segments"] < 2:
            w[f"fill{w.stats()['last_txid']}"] = "x" * 200
        writer = other._engine._writer
        assert writer is not None
        with writer.hold(None):
            writer.prepare()
            _compaction._reserve_ids(other._engine._view, writer, 1)  # a plan, not sealing
        # The next write does not fit the active segment: it rolls over, and
        # the rollover reloads w's view from the newer MANIFEST first.
        before = w.stats()["segments"]
        w["k"] = "new" + "y" * 4000
        assert w.stats()["segments"] > before
        assert w["k"] == "new" + "y" * 4000
    with logshelf.open(path, "r") as again:
        assert again["k"] == "new" + "y" * 4000
