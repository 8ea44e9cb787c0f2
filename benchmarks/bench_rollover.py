#!/usr/bin/env python3
"""A writer's own rollover: how long the put that seals a full segment waits.

Run: ``python benchmarks/bench_rollover.py`` (about 10 s; ``--quick``: 1 s).
To compare with another tree, run it again with that tree first on the path:
``PYTHONPATH=build/head/src python benchmarks/bench_rollover.py``.

A writer with ``durability="none"`` appends values into a fresh store until
it has rolled over several times. A rollover seals the active segment, and
a sealed segment must be durable, so the put that triggers it syncs
everything the segment holds that the kernel has not written yet: up to
the whole segment (128 MiB by default) when nothing else started the
writeback. ``close()`` syncs the active segment the same way. Each run
reports the slowest puts (the rollovers among them), the 99.9th percentile,
and how long ``close()`` took.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import benchlib

import logshelf


def run(directory: str, total: int, segment: int, value: int) -> tuple[list[float], float, int]:
    """Put ``total`` bytes of ``value``-byte values into a fresh store with
    ``segment``-byte segments; return the sorted put latencies (ms), the
    close time (ms) and the number of segments written."""
    payload = os.urandom(value)
    count = total // value
    clock = time.perf_counter
    times = []
    db = logshelf.open(directory, durability="none", max_segment_size=segment)
    try:
        for i in range(count):
            start = clock()
            db[f"k{i:08d}"] = payload
            times.append((clock() - start) * 1e3)
        segments = db.stats()["segments"]
        benchlib.collect()
    finally:
        start = clock()
        db.close()
        closing = (clock() - start) * 1e3
    with logshelf.open(directory, "r") as db:  # every value is there
        if len(db) != count or db[f"k{count - 1:08d}"] != payload:
            raise RuntimeError("the store does not hold what was written")
    return sorted(times), closing, segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=400, help="MiB written per run (400)")
    parser.add_argument("--segment-mib", type=int, default=128, help="max_segment_size (128)")
    parser.add_argument("--value-kib", type=int, default=4, help="size of each value (4)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--quick", action="store_true", help="16 MiB, 4 MiB segments, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.segment_mib, args.runs = 16, 4, 1
    print(
        f"logshelf {logshelf.__file__}\n{args.mib} MiB of {args.value_kib} KiB values, "
        f"segments of {args.segment_mib} MiB, durability='none'"
    )
    print(f"  {'run':>3} {'slowest puts, ms':>32} {'p99.9 ms':>9} {'close ms':>9} {'segments':>9}")
    base = tempfile.mkdtemp(prefix="logshelf-rollover-")
    try:
        for r in range(args.runs):
            directory = os.path.join(base, str(r))
            times, closing, segments = run(
                directory, args.mib << 20, args.segment_mib << 20, args.value_kib << 10
            )
            slowest = ", ".join(f"{t:.1f}" for t in times[:-5:-1])
            p999 = times[int(len(times) * 0.999)]
            print(f"  {r:>3} {slowest:>32} {p999:9.3f} {closing:9.1f} {segments:9}")
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
