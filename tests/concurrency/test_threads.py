"""Threads of one process sharing a handle, or using several handles on one store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import logshelf


def _run_threads(targets: list[Callable[[], None]], timeout: float = 60.0) -> None:
    """Start the targets together, join them, and re-raise the first worker exception."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(timeout=30)
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.0))
    alive = [t for t in threads if t.is_alive()]
    if errors:
        raise errors[0]
    assert not alive, f"{len(alive)} threads still running after {timeout} s (deadlock?)"


@pytest.mark.timeout(20)
def test_threads_shared_handle_distinct_keys_all_present(tmp_path: Path) -> None:
    """Eight threads writing and re-reading 500 keys each through one handle lose nothing."""
    threads, count = 8, 500
    with logshelf.open(tmp_path / "store") as db:

        def writer(t: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(count):
                    db[f"t{t}:{i}"] = (t, i)
                    # Read back this key and an earlier one: never missing, never wrong.
                    assert db[f"t{t}:{i}"] == (t, i)
                    j = i // 2
                    assert db.get(f"t{t}:{j}") == (t, j)
                    assert f"t{t}:{j}" in db
                    if i % 100 == 0:
                        assert len(db) >= i + 1

            return run

        _run_threads([writer(t) for t in range(threads)])
        assert len(db) == threads * count
        for t in range(threads):
            for i in range(count):
                assert db[f"t{t}:{i}"] == (t, i)
    with logshelf.open(tmp_path / "store", "r") as db:
        assert len(db) == threads * count
        assert db.get_many([f"t{t}:{count - 1}" for t in range(threads)]) == {
            f"t{t}:{count - 1}": (t, count - 1) for t in range(threads)
        }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_threads_mixed_writes_and_counters_exact_stress(tmp_path: Path) -> None:
    """Eight threads on two handles mixing writes, batches and increments lose nothing."""
    threads, count = 8, 3000
    store = tmp_path / "store"
    with logshelf.open(store) as a, logshelf.open(store) as b:

        def worker(t: int) -> Callable[[], None]:
            db = a if t % 2 else b

            def run() -> None:
                for i in range(count):
                    if i % 3 == 0:
                        db[f"t{t}:{i}"] = i
                    elif i % 3 == 1:
                        db.update({f"t{t}:{i}": i, f"t{t}:{i}:x": -i})
                    else:
                        with db.transaction():
                            db["n"] = db.get("n", 0) + 1
                            db[f"t{t}:{i}"] = i
                    if i % 500 == 0:
                        assert db[f"t{t}:{i}"] == i

            return run

        _run_threads([worker(t) for t in range(threads)], timeout=240)
    with logshelf.open(store, "r") as db:
        per_thread = count + count // 3
        assert len(db) == threads * per_thread + 1
        assert db["n"] == threads * (count // 3)
        for t in range(threads):
            assert db[f"t{t}:{count - 1}"] == count - 1


@pytest.mark.timeout(20)
def test_threads_shared_handle_transaction_counter_exact(tmp_path: Path) -> None:
    """Eight threads doing 300 transactional increments each on one handle end at exactly 2400."""
    threads, count = 8, 300
    with logshelf.open(tmp_path / "store") as db:

        def run() -> None:
            for _ in range(count):
                with db.transaction():
                    db["n"] = db.get("n", 0) + 1

        _run_threads([run] * threads)
        assert db["n"] == threads * count
    with logshelf.open(tmp_path / "store", "r") as db:
        assert db["n"] == threads * count


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_threads_own_handles_transaction_counter_exact(tmp_path: Path, backend: str) -> None:
    """Eight threads with a handle each doing transactional increments end at the exact count."""
    threads, count = 8, 200
    store = tmp_path / "store"
    logshelf.open(store).close()
    handles = [logshelf.open(store, lock_backend=backend) for _ in range(threads)]
    try:

        def worker(db: logshelf.Shelf) -> Callable[[], None]:
            def run() -> None:
                for _ in range(count):
                    with db.transaction():
                        db["n"] = db.get("n", 0) + 1

            return run

        _run_threads([worker(db) for db in handles])
        for db in handles:
            assert db["n"] == threads * count
    finally:
        for db in handles:
            db.close()


@pytest.mark.timeout(20)
def test_second_handle_inside_transaction_same_thread_does_not_deadlock(tmp_path: Path) -> None:
    """A same-thread write via a second handle inside a transaction proceeds; both persist."""
    store = tmp_path / "store"
    # Outcome, not duration: had b waited for the lock a's transaction
    # holds, its write would raise LockTimeoutError after 5 s.
    with logshelf.open(store, lock_timeout=5) as a, logshelf.open(store, lock_timeout=5) as b:
        with a.transaction():
            a["from_a"] = 1
            b["from_b"] = 2  # must not wait for the lock a's transaction holds
            assert b["from_b"] == 2
        assert a["from_b"] == 2
        assert b["from_a"] == 1


@pytest.mark.timeout(20)
def test_other_thread_waits_for_transaction_of_other_handle(tmp_path: Path) -> None:
    """Another thread's handle times out (naming the store) during a transaction, then writes."""
    store = tmp_path / "store"
    with logshelf.open(store) as a, logshelf.open(store, lock_timeout=0.2) as b:
        outcome: dict[str, Any] = {}

        def other() -> None:
            try:
                b["from_b"] = 1
                outcome["written"] = True
            except logshelf.LockTimeoutError as exc:
                outcome["error"] = exc

        with a.transaction():
            a["from_a"] = 1
            _run_threads([other], timeout=10)
            assert "from_b" not in a  # a reads its own transaction, b wrote nothing
        error = outcome.get("error")
        assert isinstance(error, TimeoutError), outcome
        assert str(a.path) in str(error)
        _run_threads([other], timeout=30)
        assert outcome.get("written")
        assert a["from_b"] == 1 and b["from_a"] == 1


@pytest.mark.timeout(20)
def test_close_of_second_handle_keeps_lock_of_first(tmp_path: Path, workers: Any) -> None:
    """Closing one of two handles on a store keeps the other's writer lock held and working."""
    store = tmp_path / "store"
    a = logshelf.open(store)
    try:
        b = logshelf.open(store)
        blocked = workers.spawn(
            "try_write", store=str(store), key="probe", value=1, lock_timeout=0.2
        )
        blocked.expect("ready")
        later = workers.spawn("try_write", store=str(store), key="probe", value=1, lock_timeout=10)
        later.expect("ready")
        with a.transaction():
            a["in_tx"] = 1
            b.close()
            # The shared lock must still be held: another process cannot write.
            blocked.send("go")
            result = blocked.result(timeout=60)
            assert result["written"] is False, result
        a["after"] = 2
        assert a["in_tx"] == 1 and "probe" not in a
        later.send("go")
        assert later.result(timeout=60)["written"] is True
        assert a["probe"] == 1
    finally:
        a.close()


@pytest.mark.timeout(20)
def test_close_from_other_thread_waits_for_transaction(tmp_path: Path) -> None:
    """close() from another thread waits for a transaction; later use raises StoreClosedError."""
    store = tmp_path / "store"
    db = logshelf.open(store)
    try:
        entered = threading.Event()
        calling = threading.Event()
        closed = threading.Event()
        order: list[str] = []

        def closer() -> None:
            assert entered.wait(30)
            calling.set()  # the explicit signal: close() is being called now
            db.close()
            order.append("closed")
            closed.set()

        thread = threading.Thread(target=closer, daemon=True)
        thread.start()
        with db.transaction():
            db["k"] = 1
            entered.set()
            assert calling.wait(30)
            # The closer blocks until the transaction ends: give a close()
            # that did not wait the chance to finish first.
            assert not closed.wait(0.3)
            db["k2"] = 2
            order.append("transaction body done")
        thread.join(30)
        assert order == ["transaction body done", "closed"]
        assert not thread.is_alive()
        assert closed.is_set()
        with pytest.raises(logshelf.StoreClosedError):
            db["k3"] = 3
        with pytest.raises(ValueError):
            db.get("k")
    finally:
        db.close()
    with logshelf.open(store, "r") as again:
        assert dict(again) == {"k": 1, "k2": 2}
