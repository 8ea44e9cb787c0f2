"""Large values appear all at once; a killed server gives a clear error and
never half a batch; durability="always" survives a killed server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

import logshelf
from _redis_server import RedisServer, namespace_of
from logshelf._records import put_record


def _chunk_keys(raw: redis.Redis, url: str) -> set[bytes]:
    return set(raw.scan_iter(match=f"logshelf:{{{namespace_of(url)}}}:c:*".encode()))


def test_a_chunked_value_is_seen_whole_or_not_at_all(redis_url: str) -> None:
    """A reader racing a writer that keeps replacing a 24-chunk value only
    ever sees one of the two whole values."""
    url = redis_url + "&chunk_size=4096"
    values = [b"A" * 100_000, b"B" * 100_000]
    stop = threading.Event()
    with logshelf.open(url, serializer="raw") as writer, logshelf.open(url, "r") as reader:
        writer["big"] = values[0]

        def overwrite() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                writer["big"] = values[i % 2]

        thread = threading.Thread(target=overwrite, daemon=True)
        thread.start()
        try:
            seen = {reader["big"] for _ in range(200)}
        finally:
            stop.set()
            thread.join(10)
        assert seen <= set(values) and seen


def test_chunks_expire_unless_committed_and_old_chunks_are_let_go(
    redis_url: str, raw: redis.Redis
) -> None:
    url = redis_url + "&chunk_size=1024"
    with logshelf.open(url, serializer="raw") as db:
        store = db._engine
        # A writer that dies after its chunks and before its pointer leaves
        # only chunks that expire by themselves (and nothing visible).
        store._encode(put_record("ghost", 0, b"g" * 5000, 0))  # type: ignore[attr-defined]
        ghost = _chunk_keys(raw, url)
        assert len(ghost) == 5 and all(raw.pttl(k) > 0 for k in ghost)
        assert "ghost" not in db
        db["big"] = b"1" * 5000
        first = _chunk_keys(raw, url) - ghost
        assert len(first) == 5 and all(raw.pttl(k) == -1 for k in first)  # claimed
        db["big"] = b"2" * 3000
        assert all(0 < raw.pttl(k) <= 60_000 for k in first)  # replaced: expiring
        del db["big"]
        assert all(raw.pttl(k) > 0 for k in _chunk_keys(raw, url))
        assert "big" not in db


def test_a_killed_server_raises_backend_unavailable_then_recovers(own_redis: RedisServer) -> None:
    url = own_redis.url + "?namespace=app"
    with logshelf.open(url) as db:
        db["k"] = 1
        own_redis.kill()
        with pytest.raises(logshelf.BackendUnavailableError, match="unavailable"):
            db["k"]
        with pytest.raises(logshelf.BackendUnavailableError, match="wholly or not at all"):
            db["k"] = 2
        with pytest.raises(logshelf.BackendUnavailableError):
            len(db)
        with pytest.raises(logshelf.BackendUnavailableError), db.transaction():
            pass
        own_redis.restart()  # saves nothing: it comes back empty
        db["k"] = 3  # the handle reconnects by itself
        assert db["k"] == 3
    with pytest.raises(logshelf.BackendUnavailableError):
        own_redis.kill()
        logshelf.open(url)


def test_a_server_killed_mid_transaction_applies_nothing(own_redis: RedisServer) -> None:
    url = own_redis.url + "?namespace=app"
    with logshelf.open(url) as db:
        db["n"] = 1
        with (
            pytest.raises(logshelf.BackendUnavailableError, match="wholly or not"),
            db.transaction(),
        ):
            db["n"] = 2
            db["m"] = 2
            own_redis.kill()
        own_redis.restart()
        assert "m" not in db and "n" not in db  # an empty server: nothing half-done


@pytest.mark.timeout(60)
def test_batches_are_whole_after_a_server_killed_while_writing(tmp_path: Path) -> None:
    """With an append-only file, a server killed while batches of 20 keys
    are being written restarts with every batch wholly present or absent."""
    server = RedisServer(tmp_path / "r", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    url = server.url + "?namespace=app"
    written = []
    try:
        with logshelf.open(url) as db:
            killer = threading.Timer(0.5, server.kill)
            killer.start()
            with pytest.raises(logshelf.BackendUnavailableError):
                for batch in range(100_000):
                    db.set_many({f"b{batch}-{i}": batch for i in range(20)})
                    written.append(batch)
            killer.join()
            server.restart()
            keys = list(db)
        batches: dict[int, int] = {}
        for key in keys:
            batch = int(key[1:].split("-")[0])
            batches[batch] = batches.get(batch, 0) + 1
        assert set(batches.values()) == {20}  # never part of a batch
        assert set(written) <= set(batches)  # every acknowledged batch survived
        assert len(batches) <= len(written) + 1  # and at most the one in flight
    finally:
        server.stop()


def test_durability_always_survives_a_killed_server(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        url = server.url + "?namespace=app"
        with logshelf.open(url, durability="always") as db:
            db["acknowledged"] = "kept"
            server.kill()
            server.restart()
            assert db["acknowledged"] == "kept"
    finally:
        server.stop()


def test_durability_always_refuses_a_server_that_does_not_fsync(redis_url: str) -> None:
    with pytest.raises(ValueError, match="appendfsync always"):
        logshelf.open(redis_url, durability="always")


def test_a_small_overwrite_lets_a_chunked_values_chunks_go(
    redis_url: str, raw: redis.Redis
) -> None:
    """The one-key fast path (PUT_ONE) gives replaced chunks their grace too,
    and survives a server that forgot its scripts."""
    url = redis_url + "&chunk_size=1024"
    with logshelf.open(url, serializer="raw") as db:
        db["v"] = b"c" * 5000
        chunks = _chunk_keys(raw, url)
        assert len(chunks) == 5 and all(raw.pttl(k) == -1 for k in chunks)
        raw.script_flush()
        db["v"] = b"small"  # inline: one PUT_ONE, loaded again after the flush
        assert all(0 < raw.pttl(k) <= 60_000 for k in chunks)
        assert db["v"] == b"small"


def test_durability_always_waits_for_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """replicas=1: a write returns once a replica acknowledged it; without a
    live replica it is applied but raises, saying it reached none."""
    master = RedisServer(tmp_path / "m", "--appendonly", "yes", "--appendfsync", "always")
    master.start()
    replica = RedisServer(tmp_path / "r", "--replicaof", "127.0.0.1", str(master.port))
    try:
        replica.start()
        url = master.url + "?namespace=app&replicas=1"
        with logshelf.open(url, durability="always") as db:
            deadline = time.monotonic() + 20
            while True:  # the replica's first sync takes a moment
                try:
                    db["first"] = 1
                    break
                except logshelf.StoreError:
                    assert time.monotonic() < deadline
            db["acknowledged"] = "by the replica"
            replica_client = redis.Redis(port=replica.port)
            assert replica_client.exists(b"logshelf:{app}:v:acknowledged") == 1
            replica_client.close()
            replica.kill()
            monkeypatch.setattr("logshelf._redis_durability.WAIT_MS", 200)
            with pytest.raises(logshelf.StoreError, match="reached 0 of 1 replicas"):
                db["late"] = 1
    finally:
        replica.stop()
        master.stop()
