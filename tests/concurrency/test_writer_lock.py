"""The writer lock across processes: timeouts, a killed holder, filelock interop."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._fs import FileSystem


def _assert_lock_timeout(db: logshelf.Shelf, key: str) -> None:
    """A write on ``db`` raises LockTimeoutError (a TimeoutError and a
    StoreError naming the store) and writes nothing. How long it waited is
    not asserted (the per-test timeout bounds it); benchmarks/bench_lock_wait.py
    measures it."""
    with pytest.raises(logshelf.LockTimeoutError) as info:
        db[key] = "must not be written"
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, logshelf.StoreError)
    assert db.path in str(info.value)
    assert key not in db


@pytest.mark.timeout(20)
@pytest.mark.parametrize("child_backend", ["flock", "filelock"])
def test_sigkilled_lock_holder_releases_lock(
    workers: Any, tmp_path: Path, child_backend: str
) -> None:
    """A writer SIGKILLed inside a transaction frees the lock; its writes never appear."""
    store = tmp_path / "store"
    with logshelf.open(store, lock_timeout=0.2) as db:
        db["before"] = 0
        holder = workers.spawn(
            "hold_transaction",
            store=str(store),
            lock_backend=child_backend,
            committed=["child_committed"],
            pending=["pending1", "pending2", "before"],
        )
        holder.expect("locked")
        # The child holds the lock: our write times out, naming the store.
        _assert_lock_timeout(db, "blocked")
        # Readers never wait for the writer lock.
        assert db["before"] == 0
        assert db["child_committed"] == "committed"
        holder.kill()
        holder.proc.wait(timeout=30)
        # Bounded: the very next write, with the same 0.2 s timeout, succeeds.
        db["after"] = 1
        assert "pending1" not in db and "pending2" not in db
        assert db["before"] == 0
        assert "blocked" not in db
        assert sorted(db) == ["after", "before", "child_committed"]
    with logshelf.open(store, "r") as again:
        assert dict(again) == {"before": 0, "child_committed": "committed", "after": 1}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_readers_not_blocked_by_held_writer_lock(
    workers: Any, tmp_path: Path, backend: str
) -> None:
    """While another process holds the writer lock, reads through any handle answer promptly."""
    store = tmp_path / "store"
    with logshelf.open(store) as db:
        db.update({f"k{i}": i for i in range(100)})
    # A writable handle takes the lock briefly at open, so open it first.
    writable = logshelf.open(store, "w", lock_backend=backend)
    try:
        holder = workers.spawn(
            "hold_transaction", store=str(store), committed=["late"], pending=["pending"]
        )
        holder.expect("locked")
        # Every read below answers while the lock is held (the holder only
        # lets go when it is killed): a read that waited would hang until
        # the test's timeout.
        readonly = logshelf.open(store, "r")  # opening read-only does not lock
        try:
            for db in (readonly, writable):
                assert len(db) == 101
                assert db.get_many(["k0", "k99", "late", "pending"]) == {
                    "k0": 0,
                    "k99": 99,
                    "late": "committed",
                    "pending": None,
                }
                assert sorted(db)[:2] == ["k0", "k1"]
                assert "pending" not in db
        finally:
            readonly.close()
        assert holder.proc.poll() is None  # the lock was held throughout
    finally:
        writable.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_foreign_filelock_excludes_logshelf_writer(
    workers: Any, tmp_path: Path, backend: str
) -> None:
    """Another process's filelock.FileLock on <store>/LOCK blocks logshelf writes until released."""
    store = tmp_path / "store"
    logshelf.open(store).close()
    with logshelf.open(store, lock_timeout=0.2, lock_backend=backend) as db:
        holder = workers.spawn("hold_filelock", path=str(store / "LOCK"))
        holder.expect("locked")
        _assert_lock_timeout(db, "blocked")
        with pytest.raises(logshelf.LockTimeoutError), db.transaction():
            db["blocked_tx"] = 1
        holder.send("release")
        holder.expect("released")
        db["after"] = 1
        with db.transaction():
            db["after_tx"] = 2
        assert dict(db) == {"after": 1, "after_tx": 2}
        holder.send("exit")
        holder.result(timeout=30)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_logshelf_transaction_excludes_foreign_filelock(
    workers: Any, tmp_path: Path, backend: str
) -> None:
    """A logshelf transaction keeps another process's filelock.FileLock on <store>/LOCK waiting."""
    store = tmp_path / "store"
    with logshelf.open(store, lock_backend=backend) as db:
        with db.transaction():
            db["k"] = 1
            prober = workers.spawn("try_filelock", path=str(store / "LOCK"), timeout=0.2)
            assert prober.result(timeout=60)["acquired"] is False
        prober = workers.spawn("try_filelock", path=str(store / "LOCK"), timeout=10)
        assert prober.result(timeout=60)["acquired"] is True
        assert db["k"] == 1


@pytest.mark.timeout(20)
def test_lock_timeout_child_process_names_store(workers: Any, tmp_path: Path) -> None:
    """Another process's timed-out write raises LockTimeoutError naming the store."""
    store = tmp_path / "store"
    with logshelf.open(store) as db:
        probe = workers.spawn(
            "try_write", store=str(store), key="theirs", value=1, lock_timeout=0.3
        )
        probe.expect("ready")
        with db.transaction():
            db["mine"] = 1
            probe.send("go")
            result = probe.result(timeout=60)
        assert result["written"] is False
        assert str(store) in result["error"]
        assert "theirs" not in db


# -- lock_timeout at open and in compact(), pickling before the lock, GC --------


@pytest.mark.parametrize("flag", ["c", "w"])
def test_open_for_writing_times_out_while_another_process_holds_the_lock(
    workers: Any, tmp_path: Path, flag: str
) -> None:
    """A writable open takes the writer lock briefly (to cut a torn tail and
    collect leftovers): with ``lock_timeout`` it raises LockTimeoutError
    naming the store while another process holds the lock, instead of
    waiting; a read-only open is not held up; once the holder is gone the
    same open succeeds and nothing of the holder's transaction is there."""
    store = tmp_path / "store"
    with logshelf.open(store) as db:
        db["before"] = 0
    holder = workers.spawn(
        "hold_transaction", store=str(store), committed=["child"], pending=["pending"]
    )
    holder.expect("locked")
    with pytest.raises(logshelf.LockTimeoutError) as info:
        logshelf.open(store, flag, lock_timeout=0.2)
    assert str(store) in str(info.value)
    with logshelf.open(store, "r") as reader:
        assert dict(reader) == {"before": 0, "child": "committed"}
    holder.kill()
    holder.proc.wait(timeout=30)
    with logshelf.open(store, flag, lock_timeout=0.2) as db:
        db["after"] = 1
        assert dict(db) == {"before": 0, "child": "committed", "after": 1}


def test_compact_times_out_while_another_process_holds_a_lock(workers: Any, tmp_path: Path) -> None:
    """compact() waits at most ``lock_timeout`` for the compaction lock
    (another process compacting) and for the writer lock (another process
    writing), raising LockTimeoutError and changing nothing; with both free it
    compacts."""
    store = tmp_path / "store"
    with logshelf.open(store, max_segment_size=4096, auto_compact=None) as db:
        for i in range(200):
            db[f"k{i % 20}"] = "v" * 100 + str(i)
        expected = dict(db)
    with logshelf.open(store, max_segment_size=4096, auto_compact=None, lock_timeout=0.2) as db:
        compacting = workers.spawn("hold_filelock", path=str(store / "COMPACT.LOCK"))
        compacting.expect("locked")
        with pytest.raises(logshelf.LockTimeoutError, match="another compaction"):
            db.compact()
        compacting.send("release")
        compacting.expect("released")
        compacting.send("exit")
        compacting.result(timeout=30)

        writing = workers.spawn("hold_transaction", store=str(store), committed=[], pending=["p"])
        writing.expect("locked")
        with pytest.raises(logshelf.LockTimeoutError):
            db.compact()
        writing.kill()
        writing.proc.wait(timeout=30)
        assert dict(db) == expected
        assert db.compact().compacted
        assert dict(db) == expected
    with logshelf.open(store, "r") as again:
        assert dict(again) == expected and again.verify() == []


def test_unpicklable_value_fails_before_the_lock_is_taken(workers: Any, tmp_path: Path) -> None:
    """docs/durability.md: an unpicklable value fails before the lock is taken.
    With another process holding the writer lock, writing a lambda raises the
    pickling error, not LockTimeoutError, and writes nothing."""
    store = tmp_path / "store"
    with logshelf.open(store, lock_timeout=2) as db:  # opened (and locked briefly) first
        db["keep"] = 1
        holder = workers.spawn("hold_transaction", store=str(store), committed=[], pending=["p"])
        holder.expect("locked")
        pickling_errors = (pickle.PicklingError, AttributeError, TypeError)
        for write in (
            lambda: db.__setitem__("bad", lambda: None),
            lambda: db.update({"good": 1, "bad": lambda: None}),
            lambda: db.set_many([("bad", lambda: None)]),
        ):
            with pytest.raises(pickling_errors) as info:
                write()
            assert not isinstance(info.value, logshelf.LockTimeoutError), info.value
        holder.kill()
        holder.proc.wait(timeout=30)
        assert dict(db) == {"keep": 1}


class _CountingSyncs(FileSystem):
    """Counts fdatasync calls."""

    def __init__(self) -> None:
        self.syncs = 0

    def datasync(self, fd: int) -> None:
        self.syncs += 1
        super().datasync(fd)


def test_handle_left_unclosed_is_closed_by_garbage_collection(
    workers: Any, tmp_path: Path, open_files: Any
) -> None:
    """A writable handle dropped without close() is closed when it is
    collected, as shelve's are: its writes are synced, the active segment's
    hint is written, every descriptor (the lock's too) is released, and
    another process takes the writer lock and sees every write."""
    store = tmp_path / "store"
    fs = _CountingSyncs()
    db = logshelf.open(store, _fs=fs)
    db.update({f"k{i}": i for i in range(50)})
    db["last"] = "written, never closed"
    hint = store / fmt.hint_name(1)
    assert not hint.exists() and open_files(store)
    syncs = fs.syncs
    del db
    gc.collect()
    assert fs.syncs > syncs
    decoded = fmt.decode_hint(hint.read_bytes())
    assert decoded is not None and decoded.covered == (store / fmt.segment_name(1)).stat().st_size
    assert open_files(store) == []
    prober = workers.spawn("try_filelock", path=str(store / "LOCK"), timeout=10)
    assert prober.result(timeout=60)["acquired"] is True
    writer = workers.spawn("try_write", store=str(store), key="other", value=2, lock_timeout=10)
    writer.expect("ready")
    writer.send("go")
    assert writer.result(timeout=60)["written"] is True
    with logshelf.open(store, "r") as again:
        assert again["last"] == "written, never closed" and again["other"] == 2
        assert len(again) == 52
