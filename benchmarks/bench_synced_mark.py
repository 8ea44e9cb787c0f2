#!/usr/bin/env python3
"""What the synced mark (issue 17, docs/format.md §6.2) costs a put.

Run: ``python benchmarks/bench_synced_mark.py`` (about a minute);
``--quick`` for a smoke run; ``--dir PATH`` to measure on another file
system (the default is a temporary directory: where fdatasync is cheap,
such as tmpfs, the mark's pwrite is a larger share).

For each durability mode ("always", "interval" with the default 1 s
interval, "none") it times single-key puts of 100-byte values with the mark
as shipped and with ``MarkWriter.record`` replaced by a no-op (the store as
it was before the mark). The two variants alternate over many short rounds
and the fastest round of each is kept, so that a burst of other work on the
machine hits both alike. Prints microseconds per put and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import logshelf
from logshelf import _synced

MODES = ("always", "interval", "none")


def _round(directory: Path, durability: str, puts: int) -> float:
    """Seconds per put over one round of ``puts`` puts into a fresh store."""
    path = directory / f"store-{durability}-{time.monotonic_ns()}.db"
    value = os.urandom(100)
    with logshelf.open(path, "c", durability=durability) as db:
        db["warm"] = value
        start = time.perf_counter()
        for i in range(puts):
            db[f"k{i % 1000}"] = value
        elapsed = time.perf_counter() - start
    shutil.rmtree(path)
    return elapsed / puts


def _without_mark() -> Callable[[], None]:
    """Make ``MarkWriter.record`` a no-op; return the function that undoes it."""
    original = _synced.MarkWriter.record

    def skip(self: _synced.MarkWriter, segment_id: int, salt: int, end: int) -> None:
        return None

    _synced.MarkWriter.record = skip  # type: ignore[method-assign]

    def restore() -> None:
        _synced.MarkWriter.record = original  # type: ignore[method-assign]

    return restore


def measure(directory: Path, rounds: int, puts: dict[str, int]) -> dict[str, tuple[float, float]]:
    """``mode -> (best s/put with the mark, best s/put without)``."""
    best: dict[str, list[float]] = {mode: [float("inf"), float("inf")] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            best[mode][0] = min(best[mode][0], _round(directory, mode, puts[mode]))
            restore = _without_mark()
            try:
                best[mode][1] = min(best[mode][1], _round(directory, mode, puts[mode]))
            finally:
                restore()
    return {mode: (with_, without) for mode, (with_, without) in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds, not numbers")
    parser.add_argument("--dir", type=Path, help="where to create the stores")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else 15
    puts = {"always": 20, "interval": 200, "none": 200}
    if not args.quick:
        puts = {"always": 500, "interval": 20000, "none": 20000}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = measure(Path(tmp), rounds, puts)
        where = os.path.realpath(tmp)
    print(f"puts of 100-byte values in {where}, best of {rounds} rounds")
    print(f"{'durability':<11} {'with mark':>12} {'without':>12} {'ratio':>7}")
    for mode, (with_, without) in results.items():
        print(f"{mode:<11} {with_ * 1e6:>9.2f} us {without * 1e6:>9.2f} us {with_ / without:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
