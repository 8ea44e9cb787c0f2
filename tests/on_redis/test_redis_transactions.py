"""transaction() on Redis: atomic, isolated from other clients (they wait
for it, or time out), never half-applied; several processes lose nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis

import logshelf
from _redis_server import namespace_of


def _in_thread(target: object) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, errors


def test_another_client_waits_for_an_open_transaction(redis_url: str, raw: redis.Redis) -> None:
    """While A's transaction is open, B's write does not happen and A's
    buffered writes are invisible; B's write lands after A's commit. (If
    B's write were not held back, ``b_done`` would be set and the first
    assertions fail.)"""
    with logshelf.open(redis_url) as a, logshelf.open(redis_url) as b:
        a["n"] = 0
        with a.transaction():
            n = a["n"]
            a["n"] = n + 1
            assert a["n"] == 1  # the transaction reads its own write
            thread, b_done, errors = _in_thread(lambda: b.__setitem__("n", 100))
            time.sleep(0.3)
            assert not b_done.is_set(), "B wrote inside A's transaction"
            with logshelf.open(redis_url, "r") as c:
                assert c["n"] == 0  # A's write is not visible before its commit
        thread.join(10)
        assert errors == [] and b_done.is_set()
        assert a["n"] == 100  # B's write came after A's commit


def test_a_write_waiting_longer_than_lock_timeout_fails_and_writes_nothing(
    redis_url: str,
) -> None:
    with logshelf.open(redis_url) as a, logshelf.open(redis_url, lock_timeout=0.2) as b:
        with a.transaction():
            a["x"] = "from a"
            started = time.monotonic()
            _, done, errors = _in_thread(lambda: b.update({"x": "from b", "y": 1}))
            done.wait(10)
            assert 0.15 < time.monotonic() - started < 5
            assert len(errors) == 1 and isinstance(errors[0], logshelf.LockTimeoutError)
        assert dict(b) == {"x": "from a"}


def test_an_exception_discards_the_transaction_and_releases_the_lock(
    redis_url: str, raw: redis.Redis
) -> None:
    with logshelf.open(redis_url) as a, logshelf.open(redis_url, lock_timeout=1) as b:
        a["kept"] = 1
        with pytest.raises(RuntimeError), a.transaction():
            a["kept"] = 2
            a["new"] = 3
            del a["kept"]
            raise RuntimeError("abandon")
        assert dict(b) == {"kept": 1}
        b["after"] = 4  # the lock is free: no wait
        assert raw.exists(f"logshelf:{{{namespace_of(redis_url)}}}:lock".encode()) == 0


def test_a_transaction_that_lost_its_lock_writes_nothing(redis_url: str, raw: redis.Redis) -> None:
    """The lock's token fences the commit: once the lock expired and another
    client took it, the late commit is refused, not applied."""
    lock = f"logshelf:{{{namespace_of(redis_url)}}}:lock".encode()
    with logshelf.open(redis_url) as a:
        a["n"] = 1
        with pytest.raises(logshelf.StoreError, match="lost its lock"), a.transaction():
            a["n"] = 2
            a["m"] = 2
            raw.set(lock, b"another client's token")  # as if ours expired and was taken
        assert raw.get(lock) == b"another client's token"  # not released by the loser
        raw.delete(lock)
        assert dict(a) == {"n": 1}


def test_two_handles_of_one_thread_do_not_wait_for_each_other(redis_url: str) -> None:
    """As on disk: a handle used by the thread that holds another handle's
    transaction writes at once instead of waiting for itself."""
    with logshelf.open(redis_url) as a, logshelf.open(redis_url, lock_timeout=2) as b:
        with a.transaction():
            a["a"] = 1
            b["b"] = 2  # written directly (the disk engine does the same)
            with b.transaction():
                b["c"] = 3
        assert dict(a) == {"a": 1, "b": 2, "c": 3}


def test_clear_and_bulk_calls_are_single_batches(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.open(redis_url + "&chunk_size=1024") as db:
        db.set_many({f"k{i}": i for i in range(500)} | {"big": b"b" * 5000})
        assert len(db) == 501
        assert db.delete_many([f"k{i}" for i in range(0, 500, 2)] + ["absent"]) == 250
        assert len(db) == 251
        db.clear()
        assert len(db) == 0
    left = set(raw.scan_iter(match=f"logshelf:{{{namespace_of(redis_url)}}}:*".encode()))
    meta = f"logshelf:{{{namespace_of(redis_url)}}}:meta".encode()
    assert meta in left and len(left) == 1 + 5  # the meta hash, the big value's chunks
    assert all(raw.pttl(k) > 0 for k in left - {meta})  # which expire by themselves


_COUNTER = """
import sys, logshelf
with logshelf.open(sys.argv[1]) as db:
    for i in range(int(sys.argv[2])):
        with db.transaction():
            db["n"] = db.get("n", 0) + 1
        db[f"{sys.argv[3]}-{i}"] = i
"""


def test_counters_under_transaction_are_exact_across_processes(redis_url: str) -> None:
    with logshelf.open(redis_url) as db:
        db["n"] = 0
    workers = [
        subprocess.Popen([sys.executable, "-c", _COUNTER, redis_url, "40", f"w{w}"])
        for w in range(4)
    ]
    assert [w.wait(60) for w in workers] == [0, 0, 0, 0]
    with logshelf.open(redis_url, "r") as db:
        assert db["n"] == 160
        assert len(db) == 1 + 160  # no key of any process lost


_HOLDER = """
import sys, time, logshelf
db = logshelf.open(sys.argv[1])
with db.transaction():
    db["half"] = "never committed"
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_client_leaves_no_lock_behind(redis_url: str) -> None:
    url = redis_url + "&lock_ttl=1"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        with logshelf.open(url, lock_timeout=0.2) as db:
            with pytest.raises(logshelf.LockTimeoutError):
                db["x"] = 1  # held (and renewed) while the holder lives
            holder.kill()
            holder.wait()
            started = time.monotonic()
            with logshelf.open(url, lock_timeout=5) as waiting:
                waiting["x"] = 1
            assert time.monotonic() - started < 5  # the lock expired after lock_ttl (1 s)
            assert dict(db) == {"x": 1}  # nothing of the killed transaction
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_forked_child_does_not_borrow_its_parents_lock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same thread in another process (a child forked inside the
    parent's transaction) waits for the lock like any other client."""
    with logshelf.open(redis_url) as a, logshelf.open(redis_url, lock_timeout=0.3) as b:
        with a.transaction():
            a["parent"] = 1
            monkeypatch.setattr("logshelf._redis_store.os.getpid", lambda: -1)
            with pytest.raises(logshelf.LockTimeoutError):
                b["child"] = 1
            monkeypatch.undo()
        assert dict(b) == {"parent": 1}


def test_a_transaction_cannot_end_in_a_forked_child(
    redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving the block in a child forked inside it writes nothing and
    leaves the parent's lock alone (seen here by faking the child's pid)."""
    lock = f"logshelf:{{{namespace_of(redis_url)}}}:lock".encode()
    with logshelf.open(redis_url) as db:
        with pytest.raises(RuntimeError, match="forked"), db.transaction():
            db["x"] = 1
            monkeypatch.setattr("logshelf._redis_store.os.getpid", lambda: -1)
        monkeypatch.undo()
        assert raw.exists(lock) == 1  # still the parent's: it expires by itself
        raw.delete(lock)
        assert "x" not in db
