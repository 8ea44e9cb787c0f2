"""The writer lock, the change counter and the exclusive file lock in isolation."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from logshelf import _format as fmt
from logshelf import _locking
from logshelf._locking import ChangeCounter, ExclusiveFileLock, WriterLock
from logshelf._options import resolve_lock_backend as resolve_backend
from logshelf.errors import LockTimeoutError

# --------------------------------------------------------------------------
# Factories: the only places that call the constructors, so a change of their
# signatures is fixed here alone. The child process below uses them too.


def make_writer_lock(store: Path, timeout: float | None, backend: str) -> WriterLock:
    """The writer lock of the store directory ``store``."""
    return WriterLock(str(store / "LOCK"), str(store), timeout, backend)


def make_change_counter(store: Path, writable: bool) -> ChangeCounter | None:
    """The mapped CHANGES counter of ``store``, or None when it has no valid one."""
    return ChangeCounter.open(str(store), writable)


def make_exclusive_lock(path: Path, backend: str) -> ExclusiveFileLock:
    """A non-shared exclusive lock on the file ``path``."""
    return ExclusiveFileLock(str(path), backend)


BACKENDS = ["flock", "filelock"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store directory holding what the lock needs: a CHANGES counter at 0."""
    path = tmp_path / "store"
    path.mkdir()
    (path / fmt.CHANGES_NAME).write_bytes(fmt.encode_changes(0))
    return path


def set_counter(store: Path, value: int) -> None:
    (store / fmt.CHANGES_NAME).write_bytes(fmt.encode_changes(value))


def counter(store: Path) -> int:
    """The counter as another process would read it (the map is shared with the file)."""
    return int.from_bytes((store / fmt.CHANGES_NAME).read_bytes()[fmt.CHANGES_COUNTER], "little")


def in_thread(work: Callable[[], None]) -> BaseException | None:
    """Run ``work`` in another thread to completion; return what it raised, if anything."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    # A guard against hanging the suite, not a measurement: ``work`` waits at
    # most a lock timeout of 0.2 s when the lock behaves.
    thread.join(timeout=30)
    assert not thread.is_alive(), "the thread is still waiting for the lock"
    return raised[0] if raised else None


# --------------------------------------------------------------------------
# ChangeCounter


def test_counter_open_ignores_a_missing_short_or_foreign_file(store: Path) -> None:
    """No valid CHANGES (missing, wrong size, wrong magic) means no counter, for
    readers and writers alike."""
    path = store / fmt.CHANGES_NAME
    path.unlink()
    assert make_change_counter(store, writable=True) is None
    for data in (
        fmt.encode_changes(4)[:12],
        fmt.encode_changes(4) + b"\0",
        b"NOTCHGS\0" + bytes(8),
    ):
        path.write_bytes(data)
        assert make_change_counter(store, writable=True) is None
        assert make_change_counter(store, writable=False) is None


def test_begin_makes_the_counter_odd_and_returns_the_old_bytes(store: Path) -> None:
    """An even counter becomes odd; begin reports the value it found."""
    set_counter(store, 0x1234)
    changes = make_change_counter(store, writable=True)
    assert changes is not None
    try:
        assert changes.begin() == (0x1234).to_bytes(8, "little")
        assert counter(store) == 0x1235
    finally:
        changes.close()


def test_begin_keeps_an_odd_counter(store: Path) -> None:
    """An odd counter (a writer died inside its hold) stays as it is, and end moves on."""
    set_counter(store, 0x41)
    changes = make_change_counter(store, writable=True)
    assert changes is not None
    try:
        assert changes.begin() == (0x41).to_bytes(8, "little")
        assert counter(store) == 0x41
        assert changes.end() == (0x42).to_bytes(8, "little")
        assert counter(store) == 0x42
    finally:
        changes.close()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (0x01, 0x02),
        (0xFB, 0xFC),
        (0xFD, 0xFE),
        (0xFF, 0x100),
        (0x3FF, 0x400),
        (0xFFFF_FFFF, 0x1_0000_0000),
        (0x00FF_FFFF_FFFF_FFFF, 0x0100_0000_0000_0000),
        ((1 << 64) - 1, 0),
        # An even value (no begin) still moves to the next even one.
        (0x10, 0x12),
        (0xFE, 0x100),
        ((1 << 64) - 2, 0),
    ],
)
def test_end_moves_to_the_next_even_value(store: Path, before: int, after: int) -> None:
    """end() sets the next even value, carrying out of the low byte and wrapping at 2**64."""
    set_counter(store, before)
    changes = make_change_counter(store, writable=True)
    assert changes is not None
    try:
        assert changes.end() == after.to_bytes(8, "little")
        assert counter(store) == after
        assert (store / fmt.CHANGES_NAME).read_bytes()[:8] == b"LSHFCHG\0"
    finally:
        changes.close()


def test_read_only_counter_cannot_be_changed(store: Path) -> None:
    """A reader's map is read-only: a write through it fails and the file is unchanged."""
    set_counter(store, 6)
    changes = make_change_counter(store, writable=False)
    assert changes is not None
    try:
        assert changes.map[fmt.CHANGES_COUNTER] == (6).to_bytes(8, "little")
        with pytest.raises(TypeError):
            changes.begin()
        with pytest.raises(TypeError):
            changes.end()
        assert counter(store) == 6
    finally:
        changes.close()


# --------------------------------------------------------------------------
# resolve_backend


def test_resolve_backend_names_a_bad_backend() -> None:
    """An unknown backend is a ValueError that quotes it."""
    with pytest.raises(ValueError, match="'flok'"):
        resolve_backend("flok")


@pytest.mark.skipif(sys.platform == "win32", reason="flock is the POSIX default")
def test_resolve_backend_maps_auto_to_flock_on_posix() -> None:
    """The backend "auto" is flock where fcntl exists; explicit names are kept."""
    assert resolve_backend("auto") == "flock"
    assert [resolve_backend(name) for name in BACKENDS] == BACKENDS


# --------------------------------------------------------------------------
# WriterLock across processes

# The child builds its lock with this file's make_writer_lock, holds it until
# told to release it on stdin, and reports each step on stdout.
CHILD = """
import importlib.util, pathlib, sys
spec = importlib.util.spec_from_file_location("locking_factories", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.make_writer_lock(pathlib.Path(sys.argv[2]), None, sys.argv[3])
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
"""


class LockHolder:
    """A child process that holds the writer lock until told to let go."""

    def __init__(self, proc: subprocess.Popen[str], stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr

    def expect(self, word: str) -> None:
        """Block until the child prints ``word`` (pytest-timeout bounds the wait)."""
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        assert line == word + "\n", (
            f"child printed {line!r}, not {word!r}; stderr:\n{self.stderr.read_text()}"
        )

    def send(self, word: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(word + "\n")
        stdin.flush()

    def finish(self) -> None:
        """Wait for a clean exit."""
        assert self.proc.wait(timeout=60) == 0, self.stderr.read_text()


def start_lock_holder(store: Path, backend: str, logdir: Path) -> LockHolder:
    stderr = logdir / "child.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, __file__, str(store), backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    return LockHolder(proc, stderr)


def reap(holder: LockHolder) -> None:
    """Kill the child if it still runs, wait for it, close its pipes."""
    if holder.proc.poll() is None:
        holder.proc.kill()
    holder.proc.wait(timeout=60)
    for pipe in (holder.proc.stdin, holder.proc.stdout):
        if pipe is not None:
            pipe.close()


@pytest.mark.timeout(60)
def test_writer_lock_excludes_another_process(store: Path, backend: str, tmp_path: Path) -> None:
    """While a child holds the lock, acquiring it here times out naming the store;
    once the child released it, the same acquire succeeds."""
    lock = make_writer_lock(store, 0.2, backend)
    try:
        holder = start_lock_holder(store, backend, tmp_path)
        try:
            holder.expect("locked")
            assert counter(store) == 1  # the child's hold is visible here
            with pytest.raises(LockTimeoutError, match=re.escape(str(store))):
                lock.acquire()
            assert not lock.busy()
            assert counter(store) == 1  # a failed acquire touches nothing
            holder.send("release")
            holder.expect("released")
            holder.finish()
        finally:
            reap(holder)
        assert counter(store) == 2
        lock.acquire()
        try:
            assert lock.busy()
            assert counter(store) == 3
        finally:
            lock.release()
        assert counter(store) == 4
    finally:
        lock.close()


# --------------------------------------------------------------------------
# WriterLock within one process


def test_writer_lock_is_reentrant_and_moves_the_counter_by_two_per_hold(
    store: Path, backend: str
) -> None:
    """Nested holds in one thread nest; the counter is odd for the outermost
    hold and ends exactly 2 higher."""
    lock = make_writer_lock(store, 0.2, backend)
    try:
        for hold in range(3):
            assert counter(store) == 2 * hold
            with lock:
                assert counter(store) == 2 * hold + 1
                lock.acquire()
                with lock:
                    assert lock.busy()
                    assert counter(store) == 2 * hold + 1
                lock.release()
                assert lock.busy()
                assert counter(store) == 2 * hold + 1
            assert not lock.busy()
        assert counter(store) == 6
    finally:
        lock.close()


def test_enter_and_exit_held_report_the_counter_at_the_outermost_hold(
    store: Path, backend: str
) -> None:
    """enter_held returns the bytes it found, exit_held the bytes it set; nested calls None."""
    set_counter(store, 10)
    lock = make_writer_lock(store, 0.2, backend)
    try:
        with lock.mutex:
            assert lock.enter_held() == (10).to_bytes(8, "little")
            assert lock.enter_held() is None
            assert lock.exit_held() is None
            assert counter(store) == 11
            assert lock.exit_held() == (12).to_bytes(8, "little")
        assert counter(store) == 12
    finally:
        lock.close()


def test_writer_lock_excludes_other_threads(store: Path, backend: str) -> None:
    """Another thread's acquire times out while this thread holds the lock, and
    succeeds after it released it."""
    lock = make_writer_lock(store, 0.2, backend)
    try:

        def hold_briefly() -> None:
            with lock:
                pass

        with lock:
            raised = in_thread(hold_briefly)
            assert isinstance(raised, LockTimeoutError)
            assert "another thread" in str(raised)
            assert counter(store) == 1
        assert in_thread(hold_briefly) is None
        assert counter(store) == 4
    finally:
        lock.close()


def test_two_writer_locks_on_one_store_share_one_os_lock(store: Path, backend: str) -> None:
    """A second lock object on the same store, used while the first is held by
    this thread, nests instead of deadlocking, and moves the counter once."""
    first = make_writer_lock(store, 0.2, backend)
    second = make_writer_lock(store, 0.2, backend)
    try:
        with first:
            second.acquire()  # would time out if it took a second OS lock
            try:
                assert second.busy()
                assert counter(store) == 1
            finally:
                second.release()
            assert first.busy()
            assert counter(store) == 1
        assert counter(store) == 2
        assert not first.busy() and not second.busy()
    finally:
        first.close()
        second.close()


def test_close_drops_the_shared_lock_with_its_last_user(store: Path, backend: str) -> None:
    """The process-wide entry lives while any lock object of the store is open."""
    first = make_writer_lock(store, 0.2, backend)
    second = make_writer_lock(store, 0.2, backend)
    ident = first._ident
    assert second._ident == ident
    first.close()
    assert ident in _locking._registry.locks
    with second:
        assert counter(store) == 1
    second.close()
    assert ident not in _locking._registry.locks
    # A new lock object after that starts afresh and works.
    third = make_writer_lock(store, 0.2, backend)
    try:
        with third:
            assert counter(store) == 3
    finally:
        third.close()
    assert ident not in _locking._registry.locks


def test_writer_lock_without_a_counter_still_locks(tmp_path: Path, backend: str) -> None:
    """A store without CHANGES (older stores) locks as before, with no counter."""
    store = tmp_path / "old-store"
    store.mkdir()
    lock = make_writer_lock(store, 0.2, backend)
    try:
        with lock.mutex:
            assert lock.enter_held() is None
            assert lock.exit_held() is None
        with lock:
            assert lock.busy()
        assert not (store / fmt.CHANGES_NAME).exists()
    finally:
        lock.close()


# --------------------------------------------------------------------------
# ExclusiveFileLock


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "COMPACT.LOCK"


def test_exclusive_locks_in_one_process_exclude_each_other(lock_path: Path, backend: str) -> None:
    """Two lock objects on one file exclude each other even in one thread."""
    first = make_exclusive_lock(lock_path, backend)
    second = make_exclusive_lock(lock_path, backend)
    assert first.acquire(0) is True
    try:
        assert second.acquire(0) is False
        assert second.acquire(0.05) is False
    finally:
        first.release()
    assert second.acquire(0) is True
    try:
        assert first.acquire(0) is False
    finally:
        second.release()
    assert first.acquire(None) is True
    first.release()


def test_exclusive_lock_is_not_reentrant(lock_path: Path, backend: str) -> None:
    """Acquiring twice through one object is a programming error, not a wait."""
    lock = make_exclusive_lock(lock_path, backend)
    assert lock.acquire(0)
    try:
        with pytest.raises(RuntimeError, match="already locked by this object"):
            lock.acquire(0)
    finally:
        lock.release()
    # The failed second acquire did not disturb the released state.
    assert lock.acquire(0)
    lock.release()


def test_writer_locks_of_different_backends_on_one_store_share_one_lock(store: Path) -> None:
    """All writing handles on one store in one process share one mutex and one
    OS lock (docs/concurrency.md, Threads), whatever lock backend each uses.

    Fails today: the registry keys the shared lock by backend as well, so a
    flock handle and a filelock handle take two OS locks on one file. A write
    through one inside the other's hold times out blaming "another process",
    and with the default lock_timeout=None it deadlocks its own thread.
    """
    flock_lock = make_writer_lock(store, 0.2, "flock")
    filelock_lock = make_writer_lock(store, 0.2, "filelock")
    try:
        with flock_lock:
            filelock_lock.acquire()
            try:
                assert filelock_lock.busy()
            finally:
                filelock_lock.release()
        assert counter(store) == 2
    finally:
        flock_lock.close()
        filelock_lock.close()
