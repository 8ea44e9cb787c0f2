"""logshelf on a three-master Redis Cluster: a namespace lives in one hash
slot, listings SCAN every master, several processes lose nothing, and a
failover gives clear errors, then the promoted replica's data."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import logshelf
from _redis_server import RedisClusterServers, namespace_of

_COUNTER = """
import sys, logshelf
with logshelf.open(sys.argv[1]) as db:
    for i in range(int(sys.argv[2])):
        with db.transaction():
            db["n"] = db.get("n", 0) + 1
        db.set_many({f"{sys.argv[3]}-{i}-{j}": j for j in range(3)})
"""


def _slot(cluster: RedisClusterServers, namespace: str) -> int:
    client = redis.Redis(port=cluster.nodes[0].port)
    try:
        return int(client.cluster("KEYSLOT", f"logshelf:{{{namespace}}}:meta"))
    finally:
        client.close()


def test_namespaces_spread_over_masters_and_each_lists_only_its_keys(
    redis_cluster: RedisClusterServers,
) -> None:
    """Namespaces hash to different masters; listing one SCANs every master
    and finds exactly its keys, all in the namespace's one slot."""
    by_master: dict[int, str] = {}
    for i in range(200):
        name = f"spread{i}"
        by_master.setdefault(redis_cluster.master_of(_slot(redis_cluster, name)).port, name)
        if len(by_master) == 3:
            break
    assert len(by_master) == 3
    handles = [logshelf.open(f"{redis_cluster.url}?namespace={n}", "n") for n in by_master.values()]
    try:
        for size, db in enumerate(handles, 1):
            db.update({f"{db.path[-8:]}-{k}": k for k in range(size * 50)})
        for size, db in enumerate(handles, 1):
            assert len(db) == size * 50 and len(set(db)) == size * 50
    finally:
        for db in handles:
            db.close()


def test_processes_writing_one_namespace_lose_nothing(redis_cluster_url: str) -> None:
    with logshelf.open(redis_cluster_url) as db:
        db["n"] = 0
    workers = [
        subprocess.Popen([sys.executable, "-c", _COUNTER, redis_cluster_url, "25", f"w{w}"])
        for w in range(4)
    ]
    assert [w.wait(120) for w in workers] == [0, 0, 0, 0]
    with logshelf.open(redis_cluster_url, "r") as db:
        assert db["n"] == 100  # transactions exact
        assert len(db) == 1 + 4 * 25 * 3  # no batch lost


def test_durability_always_needs_a_cluster_that_fsyncs_every_write(redis_cluster_url: str) -> None:
    """The session's Cluster keeps no append-only file: "always" cannot be
    promised there, and open() says what to configure."""
    with pytest.raises(ValueError, match="appendfsync always"):
        logshelf.open(redis_cluster_url, durability="always")


@pytest.mark.timeout(180)
def test_durability_always_on_a_cluster_waits_and_follows_a_failover(tmp_path: Path) -> None:
    """With every node fsyncing each write and replicas=1, a write returns
    once the slot's master has it on disk and a replica acknowledged it (WAIT
    on the master's own connection); when that master dies, writes resume on
    the promoted replica, and nothing acknowledged is lost."""
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    cluster = RedisClusterServers(tmp_path / "cluster", extra=aof).start()
    try:
        url = f"{cluster.url}?namespace=durable&replicas=1"
        with logshelf.open(url, durability="always") as db:
            db.update({f"k{i}": i for i in range(50)})
            for i in range(50, 60):
                db[f"k{i}"] = i
            with db.transaction():
                db["tx"] = "committed"
            slot = _slot(cluster, namespace_of(url))
            master = cluster.master_of(slot)
            master.kill()
            # The write follows the failover to the promoted replica, which
            # has no replica of its own yet: applied, but not confirmed.
            with pytest.raises(logshelf.StoreError, match=r"unavailable|of 1 replicas"):
                db["during"] = "the failover"
            deadline = time.monotonic() + 90
            while True:  # the replica takes over ...
                try:
                    if cluster.master_of(slot) is not master:
                        break
                except RuntimeError:
                    pass
                assert time.monotonic() < deadline, "no failover"
                time.sleep(0.2)
            master.start()  # ... and the old master comes back as its replica
            cluster.wait_ok()
            errors: list[BaseException] = []
            while True:
                try:
                    db["after"] = "failover"
                    break
                except logshelf.StoreError as exc:  # unavailable, or no replica synced yet
                    errors.append(exc)
                    assert time.monotonic() < deadline, errors[-1]
                    time.sleep(0.2)
            assert db.get_many([f"k{i}" for i in range(60)]) == {f"k{i}": i for i in range(60)}
            assert db["tx"] == "committed" and db["after"] == "failover"
    finally:
        cluster.stop()


@pytest.mark.timeout(120)
def test_a_failover_gives_clear_errors_then_the_replicated_data(tmp_path: Path) -> None:
    cluster = RedisClusterServers(tmp_path / "cluster").start()
    try:
        url = f"{cluster.url}?namespace=failover"
        master = cluster.master_of(_slot(cluster, namespace_of(url)))
        with logshelf.open(url) as db:
            db.update({f"k{i}": i for i in range(100)})
            raw = redis.Redis(port=master.port)
            assert raw.wait(1, 5000) == 1  # replicated before the crash
            raw.close()
            master.kill()
            errors: list[BaseException] = []
            deadline = time.monotonic() + 60
            while True:
                try:
                    db["after"] = "failover"
                    break
                except logshelf.BackendUnavailableError as exc:
                    errors.append(exc)
                    assert time.monotonic() < deadline, errors[-1]
                    time.sleep(0.2)
            assert db.get_many([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
            assert db["after"] == "failover" and len(db) == 101
            assert all("unavailable" in str(e) for e in errors)
    finally:
        cluster.stop()
