#!/usr/bin/env python3
"""What the argument hasher of the memoizing cache costs (src/logshelf/_hashing.py).

Run: ``python benchmarks/bench_hashing.py`` (about a minute; ``--size-mib 64``
for a quick look). Measures this checkout's ``src``, whatever is installed.

* small arguments: ``hash_arguments({'x': 1, 'y': 'abc'})`` and a few other
  shapes of the cache-hit path, microseconds per call (best of several
  rounds of many calls: the least the code costs, not the scheduler);
* a large float64 array (1 GiB by default): GiB/s of ``hash_value``, next to
  one BLAKE2b over the same bytes in one thread (the ceiling without the
  tree), best of ``--repeats`` runs;
* the same array after ``freeze`` and ``remember``: the second hash reuses
  the first digest, so it costs microseconds whatever the size.

Without numpy the large value is a ``bytes`` object of the same size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from logshelf import _hashing


def per_call_us(fn: Any, number: int, rounds: int) -> float:
    """Best per-call time of ``rounds`` rounds of ``number`` calls, in µs."""
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e6


def small_arguments(number: int, rounds: int) -> None:
    cases: list[tuple[str, dict[str, object], bool]] = [
        ("{'x': 1, 'y': 'abc'}", {"x": 1, "y": "abc"}, False),
        ("{'x': 1, 'y': 'abc'}, typed", {"x": 1, "y": "abc"}, True),
        ("{'x': 1.5}", {"x": 1.5}, False),
        ("10 str args", {f"a{i}": f"value{i}" for i in range(10)}, False),
        ("{'d': dict of 10 ints}", {"d": {f"k{i}": i for i in range(10)}}, False),
        ("{'b': 1 KiB bytes}", {"b": bytes(1024)}, False),
    ]
    print("small arguments (hash_arguments, per call):")
    for label, arguments, typed in cases:
        us = per_call_us(
            lambda a=arguments, t=typed: _hashing.hash_arguments(a, typed=t), number, rounds
        )
        print(f"  {label:<32} {us:8.2f} us")


def large_value(size_mib: int) -> Any:
    try:
        import numpy as np
    except ImportError:
        return bytes(size_mib << 20)
    return np.ones((size_mib << 20) // 8, dtype=np.float64)


def best_seconds(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def large_buffer(size_mib: int, repeats: int) -> None:
    value = large_value(size_mib)
    gib = size_mib / 1024
    kind = type(value).__name__
    print(f"large value ({size_mib} MiB {kind}, best of {repeats}):")
    hashed = best_seconds(lambda: _hashing.hash_value(value), repeats)
    print(f"  hash_value                       {gib / hashed:8.2f} GiB/s  ({hashed:.3f} s)")
    view = memoryview(value).cast("B")
    single = best_seconds(lambda: hashlib.blake2b(view).digest(), repeats)
    print(f"  one blake2b, one thread          {gib / single:8.2f} GiB/s  ({single:.3f} s)")
    if kind == "ndarray":
        frozen = _hashing.remember(_hashing.freeze(value))
        first = best_seconds(lambda: _hashing.hash_value(frozen), 1)
        again = best_seconds(lambda: _hashing.hash_value(frozen), repeats)
        print(f"  frozen + remembered: first hash  {first:8.3f} s, again {again * 1e6:.1f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large array size (1024)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the large hash (3)")
    parser.add_argument("--calls", type=int, default=20000, help="calls per small round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of small calls")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    small_arguments(args.calls, args.rounds)
    large_buffer(args.size_mib, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
