"""The writer lock across processes: timeouts, a killed holder, filelock interop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import logshelf


def _assert_lock_timeout(db: logshelf.Shelf, key: str, timeout: float) -> None:
    """A write on ``db`` raises LockTimeoutError after about ``timeout`` seconds."""
    start = time.monotonic()
    with pytest.raises(logshelf.LockTimeoutError) as info:
        db[key] = "must not be written"
    waited = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, logshelf.StoreError)
    assert db.path in str(info.value)
    assert waited >= timeout * 0.9, waited
    assert waited < timeout + 5, waited


@pytest.mark.timeout(90)
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
        _assert_lock_timeout(db, "blocked", 0.2)
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


@pytest.mark.timeout(60)
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
        start = time.monotonic()
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
        assert time.monotonic() - start < 5
    finally:
        writable.close()


@pytest.mark.timeout(60)
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
        _assert_lock_timeout(db, "blocked", 0.2)
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


@pytest.mark.timeout(60)
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


@pytest.mark.timeout(60)
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
        assert result["waited"] >= 0.25
        assert "theirs" not in db
