#!/usr/bin/env python3
"""A transaction of large values against the raw baseline, before/after.

One transaction writes 64 values of 1 MiB (random bytes, pickled); the raw
baseline ``os.write``s the same pickles to a file. Timed: the transaction
from its first assignment to the end of its ``with`` block (the default
durability: no fsync), and the 64 writes. ``bench_peers.py --workloads
large`` measures the same thing among many others, but its raw baseline
alone moved 2.5x between runs on the shared 2-core VM; here the trees run in
alternating processes and the minimum and median of many rounds are kept::

    .venv/bin/python benchmarks/bench_large_batch.py                 # this checkout
    .venv/bin/python benchmarks/bench_large_batch.py --against DIR   # DIR/src/logshelf vs this

``--write-sizes`` adds the measurement that looked for a write(2) cliff:
64 MiB written in calls of 1, 4, 16 and 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(rounds: int) -> dict[str, list[float]]:
    """One process's timings in milliseconds."""
    import logshelf

    values = [os.urandom(1 << 20) for _ in range(64)]
    root = tempfile.mkdtemp(prefix="bench-large-batch-")
    found: dict[str, list[float]] = {"raw": [], "transaction": []}
    try:
        for _ in range(rounds):
            path = os.path.join(root, "raw.bin")
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_APPEND)
            start = time.perf_counter()
            for value in values:
                os.write(fd, pickle.dumps(value, 5))
            found["raw"].append((time.perf_counter() - start) * 1e3)
            os.close(fd)
            store = os.path.join(root, "store")
            shutil.rmtree(store, ignore_errors=True)
            with logshelf.open(store, "n") as db:
                start = time.perf_counter()
                with db.transaction():
                    for i, value in enumerate(values):
                        db[f"k{i}"] = value
                found["transaction"].append((time.perf_counter() - start) * 1e3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return found


def write_sizes() -> None:
    data = memoryview(os.urandom(64 << 20))
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "w.bin")
        for mib in (1, 4, 16, 64):
            rates = []
            for _ in range(4):
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
                start = time.perf_counter()
                for offset in range(0, len(data), mib << 20):
                    os.write(fd, data[offset : offset + (mib << 20)])
                rates.append(len(data) / (time.perf_counter() - start) / 1e6)
                os.close(fd)
            print(
                f"64 MiB in write(2) calls of {mib:2} MiB: "
                + ", ".join(f"{r:,.0f}" for r in rates)
                + " MB/s"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="another checkout to compare with")
    parser.add_argument("--runs", type=int, default=4, help="processes per tree (4)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per process (5)")
    parser.add_argument("--write-sizes", action="store_true", help="look for a write(2) cliff")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return 0
    if args.write_sizes:
        write_sizes()
    trees = {"this checkout": os.path.join(HERE, "..", "src")}
    if args.against:
        trees = {args.against: os.path.join(args.against, "src"), **trees}
    results: dict[str, dict[str, list[float]]] = {t: {"raw": [], "transaction": []} for t in trees}
    for _ in range(args.runs):
        for tree, src in trees.items():
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--rounds", str(args.rounds)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for key, times in json.loads(out).items():
                results[tree][key] += times
    print("a transaction of 64 values of 1 MiB against os.write of the same pickles (ms)")
    for tree, found in results.items():
        raw, tx = found["raw"], found["transaction"]
        print(
            f"  raw min {min(raw):6.1f} median {statistics.median(raw):6.1f}   "
            f"transaction min {min(tx):6.1f} median {statistics.median(tx):6.1f}   "
            f"ratio of medians {statistics.median(tx) / statistics.median(raw):4.2f}   {tree}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
