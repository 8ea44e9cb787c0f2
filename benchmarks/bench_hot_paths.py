#!/usr/bin/env python3
"""Before/after of logshelf's three hot paths, precise enough for small changes.

``bench_floor.py`` and ``bench_store.py`` time 100,000 operations once per
repeat; on a shared 2-core VM their run-to-run spread is 20-30 %, more than a
refactoring of the engine moves. This script times short rounds (2,000
operations) many times and keeps the minimum, which noise can only raise, and
alternates the trees it compares in separate processes::

    .venv/bin/python benchmarks/bench_hot_paths.py                 # this checkout
    .venv/bin/python benchmarks/bench_hot_paths.py --against DIR   # DIR/src/logshelf vs this

``--against`` takes another checkout (``git worktree add build/old <commit>``).
Printed per tree: the median over ``--runs`` processes of each process's
minimum, in microseconds per operation, for ``db[k] = v`` (one key per
write), ``db[k]`` (random reads in a mapped segment) and writes inside
transactions of 100.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = 25
PER_ROUND = 2_000
HERE = os.path.dirname(os.path.abspath(__file__))


def measure() -> dict[str, float]:
    """One process's minimum time per operation of each hot path (us)."""
    import logshelf

    value = {"i": 1, "name": "x" * 20}
    times: dict[str, list[float]] = {"insert": [], "read": [], "tx": []}
    with tempfile.TemporaryDirectory() as tmp:
        db = logshelf.open(os.path.join(tmp, "s"), auto_compact=None)
        for i in range(PER_ROUND):
            db[f"warm{i}"] = i
        for round_ in range(ROUNDS):
            keys = [f"key{round_}_{i}" for i in range(PER_ROUND)]
            start = time.perf_counter()
            for key in keys:
                db[key] = value
            times["insert"].append(time.perf_counter() - start)
            random.shuffle(keys)
            start = time.perf_counter()
            for key in keys:
                db[key]
            times["read"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for first in range(0, PER_ROUND, 100):
                with db.transaction():
                    for key in keys[first : first + 100]:
                        db[key] = value
            times["tx"].append(time.perf_counter() - start)
        db.close()
    return {name: min(t) / PER_ROUND * 1e6 for name, t in times.items()}


def _run(src: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, check=True, capture_output=True, text=True
    ).stdout
    return {k: float(v) for k, v in (part.split("=") for part in out.split())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="another checkout to compare with")
    parser.add_argument("--runs", type=int, default=5, help="processes per tree (5)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(" ".join(f"{k}={v:.4f}" for k, v in measure().items()))
        return 0
    trees = {"this checkout": os.path.join(HERE, "..", "src")}
    if args.against:
        trees = {args.against: os.path.join(args.against, "src"), **trees}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, src in trees.items():  # alternate, so drift hits both alike
            results[name].append(_run(src))
    print(f"us per operation: median over {args.runs} processes of the min of {ROUNDS} rounds")
    for name, runs in results.items():
        cells = "  ".join(
            f"{k} {statistics.median(r[k] for r in runs):5.2f}" for k in ("insert", "read", "tx")
        )
        print(f"  {cells}   {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
