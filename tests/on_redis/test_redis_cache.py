"""logshelf.Cache on Redis: the server expires entries, one computation per
cold key across processes, fencing tokens stop a late holder, and the size
bound is the server's maxmemory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import logshelf
from _redis_server import RedisServer, namespace_of, value_key
from logshelf._redis_cache import RedisFlights


def test_entries_expire_on_the_server(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.Cache(redis_url, ttl=0.5) as cache:
        cache["short"] = 1
        cache.set("forever", 2, ttl=None)
        assert 0 < raw.pttl(value_key(redis_url, "short")) <= 500
        assert raw.pttl(value_key(redis_url, "forever")) == -1
        assert cache["short"] == 1 and len(cache) == 2
        time.sleep(0.7)
        assert "short" not in cache and cache.get("short") is None
        assert raw.exists(value_key(redis_url, "short")) == 0  # freed by the server


def test_a_large_entry_expires_with_its_chunks(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.Cache(redis_url + "&chunk_size=1024") as cache:
        cache.set("big", b"x" * 10_000, ttl=30)
        assert cache["big"] == b"x" * 10_000
        chunks = list(raw.scan_iter(match=f"logshelf:{{{namespace_of(redis_url)}}}:c:*".encode()))
        assert len(chunks) >= 10 and all(0 < raw.pttl(k) <= 30_000 for k in chunks)


def test_max_bytes_and_evict_point_at_maxmemory(redis_url: str) -> None:
    with pytest.raises(ValueError, match="maxmemory"):
        logshelf.Cache(redis_url, max_bytes=10**6)
    with logshelf.Cache(redis_url) as cache, pytest.raises(ValueError, match="maxmemory"):
        cache.evict(0)


def test_a_stalled_holder_cannot_overwrite_a_newer_value(redis_url: str, raw: redis.Redis) -> None:
    """A's flight lock expires while A stalls; B takes the key with a newer
    fencing token and stores its value; A's late store is refused."""
    with logshelf.Cache(redis_url) as a, logshelf.Cache(redis_url) as b:
        assert isinstance(a.flights, RedisFlights) and isinstance(b.flights, RedisFlights)
        ticket_a = a.flights.acquire("k")
        assert b.flights.try_acquire("k") is None  # A holds it
        raw.delete(f"logshelf:{{{namespace_of(redis_url)}}}:flight:k".encode())  # A's lease ran out
        ticket_b = b.flights.acquire("k")
        assert b.flights.token("k") > a.flights.token("k")  # type: ignore[operator]
        b.set("k", "newer")
        b.flights.release(ticket_b)
        a.set("k", "older, computed by the stalled holder")
        a.flights.release(ticket_a)
        assert b["k"] == "newer"
        a.set("k", "a plain set, outside any flight, still writes")
        assert b["k"].startswith("a plain set")


_MEMO = """
import sys, time, redis, logshelf
url, port = sys.argv[1], int(sys.argv[2])
counter = redis.Redis(port=port)
cache = logshelf.Cache(url)

@cache.memoize(ttl=60)
def slow(x):
    counter.incr("computations")
    time.sleep(0.5)
    return x * 10

print(slow(4), flush=True)
cache.close()
counter.close()
"""


def test_one_computation_per_cold_key_across_processes(
    redis_url: str, raw: redis.Redis, redis_server: RedisServer
) -> None:
    raw.delete("computations")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MEMO, redis_url, str(redis_server.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outputs == ["40\n"] * 4
    assert raw.get("computations") == b"1"


_DIES = """
import os, sys, logshelf
cache = logshelf.Cache(sys.argv[1])
cache.flights.acquire("cold")
print("holding", flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_killed_holders_flight_lock_expires(redis_url: str) -> None:
    url = redis_url + "&lock_ttl=1"
    out = subprocess.run([sys.executable, "-c", _DIES, url], capture_output=True, text=True)
    assert out.stdout == "holding\n"
    with logshelf.Cache(url) as cache:
        assert cache.flights is not None
        started = time.monotonic()
        ticket = cache.flights.acquire("cold")
        assert ticket.held and ticket.waited and time.monotonic() - started < 5
        cache.flights.release(ticket)


def test_maxmemory_bounds_the_cache_without_errors(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "r", "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"
    ).start()
    try:
        url = server.url + "?namespace=bounded&chunk_size=16384"
        with logshelf.Cache(url) as cache:
            for i in range(400):
                cache.set(f"k{i}", bytes([i % 256]) * 50_000)  # 20 MB through a 4 MB server
            present = [cache.get(f"k{i}") for i in range(400)]
            kept = [v for v in present if v is not None]
            assert 0 < len(kept) < 400  # some evicted, and no error for it
            assert all(v == v[:1] * 50_000 for v in kept)  # never a wrong value
        client = redis.Redis(port=server.port)
        assert int(client.info("memory")["used_memory"]) < 8 << 20
        client.close()
    finally:
        server.stop()
