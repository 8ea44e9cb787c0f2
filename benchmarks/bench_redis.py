"""logshelf on Redis against plain redis-py on the same server (issue 16).

Starts its own servers (``redis-server`` on free ports of 127.0.0.1, with
the test suite's launcher) unless ``--url`` names one, then measures:

* per operation: ``db[k] = v`` and ``db[k]`` against redis-py ``SET`` /
  ``GET`` of the same pickled bytes (many short rounds, alternated, the
  minimum of each kept: the machine is shared);
* bulk: ``set_many`` / ``get_many`` of 1,000 keys against the per-key loop;
* 4 processes writing: one node against a three-master Cluster, into one
  namespace and into one namespace per process.

    .venv/bin/python benchmarks/bench_redis.py            # ~1 min
    .venv/bin/python benchmarks/bench_redis.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

import logshelf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _redis_server import RedisClusterServers, RedisServer

VALUE = {"user": 123, "name": "x" * 50, "tags": list(range(10))}

_WRITER = """
import sys, time, logshelf
url, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with logshelf.open(url) as db:
    db["warm"] = 0
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        db[f"{name}-{i}"] = {"i": i, "payload": "x" * 80}
"""


def best(rounds: int, step: Callable[[], Any], n: int) -> float:
    """Microseconds per operation: the fastest of ``rounds`` runs of ``step``."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times) / n * 1e6


def per_operation(url: str, n: int, rounds: int) -> dict[str, float]:
    parts = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = parts.partition(":")
    raw = redis.Redis(host=host, port=int(port or 6379))
    keys = [f"k{i}" for i in range(n)]
    results = {"set_raw": 1e9, "set_logshelf": 1e9, "get_raw": 1e9, "get_logshelf": 1e9}
    with logshelf.open(f"{url}?namespace=bench-ops", "n") as db:
        for _ in range(rounds):  # alternated: a slow moment hits both sides
            results["set_raw"] = min(
                results["set_raw"],
                best(1, lambda: [raw.set(k, pickle.dumps(VALUE, 5)) for k in keys], n),
            )
            results["set_logshelf"] = min(
                results["set_logshelf"],
                best(1, lambda: [db.__setitem__(k, VALUE) for k in keys], n),
            )
            results["get_raw"] = min(
                results["get_raw"],
                best(1, lambda: [pickle.loads(raw.get(k)) for k in keys], n),  # type: ignore[arg-type]
            )
            results["get_logshelf"] = min(
                results["get_logshelf"], best(1, lambda: [db[k] for k in keys], n)
            )
        batch = {f"b{i}": VALUE for i in range(1000)}
        names = list(batch)
        results["loop_set_1000"] = best(
            rounds, lambda: [db.__setitem__(k, VALUE) for k in names], 1
        )
        results["set_many_1000"] = best(rounds, lambda: db.set_many(batch), 1)
        results["loop_get_1000"] = best(rounds, lambda: [db[k] for k in names], 1)
        results["get_many_1000"] = best(rounds, lambda: db.get_many(names), 1)
    raw.close()
    return results


def writers(url_of: Callable[[int], str], n: int) -> float:
    """Writes per second of 4 processes writing ``n`` keys each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url_of(w), str(n), f"w{w}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=600)
        assert proc.returncode == 0
    return 4 * n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", help="an existing server (redis://host:port/0); default: start one"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    n, rounds, per_writer = (200, 2, 200) if args.quick else (2000, 9, 5000)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.url
        if url is None:
            server = RedisServer(Path(tmp) / "single").start()
            url = server.url
        try:
            ops = per_operation(url, n, rounds)
            single_one = writers(lambda w: f"{url}?namespace=bench-mp", per_writer)
            single_own = writers(lambda w: f"{url}?namespace=bench-mp{w}", per_writer)
        finally:
            if server is not None:
                server.stop()
        cluster = RedisClusterServers(Path(tmp) / "cluster").start()
        try:
            cluster_one = writers(lambda w: f"{cluster.url}?namespace=bench-mp", per_writer)
            cluster_own = writers(lambda w: f"{cluster.url}?namespace=bench-mp{w}", per_writer)
        finally:
            cluster.stop()
    print("| measure | plain redis-py | logshelf | ratio |")
    print("|---|---:|---:|---:|")
    for op in ("set", "get"):
        raw, ours = ops[f"{op}_raw"], ops[f"{op}_logshelf"]
        print(f"| {op}, µs per key | {raw:.1f} | {ours:.1f} | {ours / raw:.2f}x |")
    print()
    print("| 1,000 keys | per-key loop, ms | bulk call, ms | speed-up |")
    print("|---|---:|---:|---:|")
    for loop, bulk, what in (
        ("loop_set_1000", "set_many_1000", "set_many"),
        ("loop_get_1000", "get_many_1000", "get_many"),
    ):
        print(
            f"| {what} | {ops[loop] / 1e3:.1f} | {ops[bulk] / 1e3:.1f} "
            f"| {ops[loop] / ops[bulk]:.1f}x |"
        )
    print()
    print("| 4 processes writing | one node, writes/s | 3-master Cluster, writes/s |")
    print("|---|---:|---:|")
    print(f"| one namespace | {single_one:,.0f} | {cluster_one:,.0f} |")
    print(f"| a namespace per process | {single_own:,.0f} | {cluster_own:,.0f} |")


if __name__ == "__main__":
    main()
