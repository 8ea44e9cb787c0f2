#!/usr/bin/env python3
"""Compaction throughput, disk use before and after, and what a concurrent
writer feels while another process compacts.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/bench_compaction.py            # full size
    .venv/bin/python benchmarks/bench_compaction.py --quick    # a few seconds

For each workload a fresh store is filled, every key is overwritten several
times (most of the data is then dead), and ``Shelf.compact()`` is timed.
Reported per workload: disk bytes before and after, live bytes (the records
compaction rewrote), after/live ratio (target <= 1.3), compaction time and
MB/s of live data rewritten. "Payload" is what the user stored (UTF-8 keys
plus the pickled values, without logshelf's 32-byte record headers and hint
entries), and after/payload the ratio issue 4's target is read against in
``docs/compaction.md``. A last run measures the put latency of a writer
process while a compaction runs in this one (its p50, p99 and max), since
compaction takes the writer lock only briefly, at its start and its commit;
and how long the compacting process held the writer lock each time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import logshelf


@dataclass
class Workload:
    name: str
    keys: int
    value_bytes: int
    overwrites: int


@dataclass
class Result:
    workload: str
    keys: int
    disk_before: int
    disk_after: int
    live_bytes: int
    ratio_after_to_live: float
    payload_bytes: int
    ratio_after_to_payload: float
    seconds: float
    mb_per_s: float


def disk_bytes(path: str) -> int:
    """Bytes of every file in the store directory (segments, hints, MANIFEST)."""
    total = 0
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            total += os.path.getsize(full)
    return total


def value(i: int, generation: int, size: int) -> dict[str, Any]:
    # Incompressible enough that the pickle size is about `size`.
    return {"i": i, "gen": generation, "blob": os.urandom(size)}


def fill(path: str, w: Workload) -> None:
    with logshelf.open(path, "n", auto_compact=None, max_segment_size=16 << 20) as db:
        for generation in range(w.overwrites + 1):
            batch: dict[str, Any] = {}
            for i in range(w.keys):
                batch[f"key-{i:010d}"] = value(i, generation, w.value_bytes)
                if len(batch) == 1000:
                    db.update(batch)
                    batch = {}
            if batch:
                db.update(batch)


def run_workload(root: str, w: Workload) -> Result:
    path = os.path.join(root, w.name)
    fill(path, w)
    before = disk_bytes(path)
    with logshelf.open(path, auto_compact=None, max_segment_size=16 << 20) as db:
        result = db.compact()
        assert result.compacted, result
        # Every value must have survived: check a sample against its generation.
        for i in range(0, w.keys, max(1, w.keys // 100)):
            got = db[f"key-{i:010d}"]
            assert got["gen"] == w.overwrites and got["i"] == i, got
    after = disk_bytes(path)
    shutil.rmtree(path)
    # The final generation's values: random bytes of a fixed length pickle to
    # the same size whatever they hold.
    payload = sum(
        len(f"key-{i:010d}".encode()) + len(pickle.dumps(value(i, w.overwrites, w.value_bytes), 5))
        for i in range(w.keys)
    )
    return Result(
        w.name,
        w.keys,
        before,
        after,
        result.bytes_copied,
        after / result.bytes_copied,
        payload,
        after / payload,
        result.seconds,
        result.bytes_copied / result.seconds / 1e6,
    )


def _writer(path: str, seconds: float, queue: Any) -> None:
    latencies: list[float] = []
    # (start, seconds) of the puts over 5 ms, to place them against the
    # compacting process's lock holds (perf_counter is CLOCK_MONOTONIC,
    # shared by the processes of one machine).
    slow: list[tuple[float, float]] = []
    with logshelf.open(path, auto_compact=None, max_segment_size=16 << 20) as db:
        queue.put("ready")
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            db[f"live-{i % 1000}"] = {"i": i}
            took = time.perf_counter() - start
            latencies.append(took)
            if took > 0.005:
                slow.append((start, took))
            i += 1
    queue.put((latencies, slow))


def _time_lock_holds(
    sink: list[float], spans: list[tuple[float, float]] | None = None
) -> Callable[[], None]:
    """Record how long this process holds the writer lock each time (outermost
    acquire to release), by wrapping logshelf's private ``_ProcessLock``
    (``src/`` stays untouched). Must run before the store is opened; returns
    the function that removes the wrappers."""
    from logshelf import _locking

    cls = _locking._ProcessLock
    # Every hold of the OS lock, however it is taken, goes through these two.
    enter, exit_ = cls.enter_held, cls.exit_held
    started: list[float] = []

    def timed_enter(self: Any, *args: Any) -> bytes | None:
        found = enter(self, *args)
        if self.depth == 1:
            started.append(time.perf_counter())
        return found

    def timed_exit(self: Any) -> bytes | None:
        if self.depth == 1 and started:
            began = started.pop()
            sink.append(time.perf_counter() - began)
            if spans is not None:
                spans.append((began, sink[-1]))
        return exit_(self)

    cls.enter_held, cls.exit_held = timed_enter, timed_exit  # type: ignore[method-assign]

    def undo() -> None:
        cls.enter_held, cls.exit_held = enter, exit_  # type: ignore[method-assign]

    return undo


def concurrent_latency(root: str, w: Workload) -> dict[str, Any]:
    """Put latency of another process while this one compacts ``w``'s store,
    and how long this process held the writer lock (open, plan, switch)."""
    path = os.path.join(root, "concurrent")
    fill(path, w)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    # Long enough to cover the whole compaction.
    proc = ctx.Process(target=_writer, args=(path, 4.0, queue))
    proc.start()
    assert queue.get(timeout=60) == "ready"
    holds: list[float] = []
    spans: list[tuple[float, float]] = []
    undo = _time_lock_holds(holds, spans)
    try:
        with logshelf.open(path, auto_compact=None, max_segment_size=16 << 20) as db:
            began = time.perf_counter()
            result = db.compact()
    finally:
        undo()
    latencies, slow = queue.get(timeout=120)
    latencies.sort()
    proc.join(timeout=60)
    shutil.rmtree(path)
    return {
        "compaction_seconds": result.seconds,
        "writes": len(latencies),
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "max_ms": latencies[-1] * 1e3,
        "mean_us": statistics.fmean(latencies) * 1e6,
        "lock_holds_ms": [round(h * 1e3, 1) for h in holds],
        # The writer's slowest puts: when they started (ms after compact()
        # was called) and whether a lock hold of the compacting process
        # overlapped them (else the writer's own work, or the scheduler).
        "slowest_puts": [
            {
                "at_ms": round((start - began) * 1e3, 1),
                "ms": round(took * 1e3, 1),
                "during_compactor_hold": any(s < start + took and start < s + d for s, d in spans),
            }
            for start, took in sorted(slow, key=lambda p: -p[1])[:5]
        ],
    }


def follow_cost(root: str, keys: int, repeats: int = 5) -> dict[str, float]:
    """In one process: what a second writer's operations cost after another
    handle's compaction switch (it saw the plan's rollover, as a busy writer
    does): its first write, and the longest of the following ones until its
    remap is done (private attributes: ``_remap``, issue 15). Medians."""
    from logshelf import _compaction

    path = os.path.join(root, "follow")
    found: dict[str, list[float]] = {"first_ms": [], "longest_next_ms": [], "operations": []}
    for _ in range(repeats):
        fill(path, Workload("follow", keys, 60, 1))
        with (
            logshelf.open(path, auto_compact=None, max_segment_size=16 << 20) as db,
            logshelf.open(path, auto_compact=None, max_segment_size=16 << 20) as other,
        ):
            original = _compaction.copy

            def copy(*args: Any, _copy: Any = original, _other: Any = other, **kwargs: Any) -> Any:
                done = _copy(*args, **kwargs)
                _other["during"] = 1  # follows the plan's rollover
                return done

            _compaction.copy = copy  # type: ignore[assignment]
            try:
                db.compact()
            finally:
                _compaction.copy = original  # type: ignore[assignment]
            start = time.perf_counter()
            other["after"] = 0
            found["first_ms"].append((time.perf_counter() - start) * 1e3)
            view = other._engine._view
            longest, operations = 0.0, 0
            while getattr(view, "pending_remap", None) is not None:
                start = time.perf_counter()
                other["after"] = operations
                longest = max(longest, time.perf_counter() - start)
                operations += 1
            found["longest_next_ms"].append(longest * 1e3)
            found["operations"].append(operations)
        shutil.rmtree(path)
    return {name: statistics.median(values) for name, values in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--dir", help="where the temporary stores go")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="only what a second writer's operations cost after a switch (100,000 keys)",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the concurrent writer's latency during a compaction (100,000 keys)",
    )
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    workloads = [
        Workload("small values (100 B), 5 generations", 100_000 // scale, 100, 4),
        Workload("medium values (4 KiB), 5 generations", 10_000 // scale, 4096, 4),
        Workload("large values (256 KiB), 5 generations", 200 // scale, 256 << 10, 4),
    ]
    root = tempfile.mkdtemp(prefix="bench-compaction-", dir=args.dir)
    try:
        print(f"logshelf {logshelf.__version__}, Python {sys.version.split()[0]}, {root}")
        header = f"{'workload':40} {'before':>10} {'after':>10} {'live':>10} {'after/live':>10}"
        print(header + f" {'payload':>10} {'after/payload':>13} {'seconds':>8} {'MB/s':>7}")
        if args.follow:
            cost = follow_cost(root, workloads[0].keys)
            print(
                "a second writer after a switch: first write "
                f"{cost['first_ms']:.1f} ms, then {cost['operations']:.0f} writes "
                f"until its remap is done, the longest {cost['longest_next_ms']:.1f} ms "
                "(medians of 5)"
            )
            return 0
        results = []
        for w in [] if args.latency_only else workloads:
            r = run_workload(root, w)
            results.append(r)
            print(
                f"{r.workload:40} {r.disk_before / 1e6:9.1f}M {r.disk_after / 1e6:9.1f}M "
                f"{r.live_bytes / 1e6:9.1f}M {r.ratio_after_to_live:10.3f} "
                f"{r.payload_bytes / 1e6:9.1f}M {r.ratio_after_to_payload:13.3f} "
                f"{r.seconds:8.2f} {r.mb_per_s:7.1f}"
            )
        latency = concurrent_latency(root, workloads[0])
        print(
            "a writer process during a compaction of the first store "
            f"({latency['compaction_seconds']:.2f} s): {latency['writes']} puts, "
            f"p50 {latency['p50_us']:.1f} us, p99 {latency['p99_us']:.1f} us, "
            f"max {latency['max_ms']:.1f} ms"
        )
        print(
            "the compacting process held the writer lock, each time in order (ms): "
            + ", ".join(f"{h:g}" for h in latency["lock_holds_ms"])
        )
        print(
            "the writer's slowest puts (ms after compact() began: ms, * = during a hold): "
            + ", ".join(
                f"{p['at_ms']:g}: {p['ms']:g}{'*' if p['during_compactor_hold'] else ''}"
                for p in latency["slowest_puts"]
            )
        )
        if args.json:
            with open(args.json, "w") as f:
                report = {"results": [asdict(r) for r in results], "latency": latency}
                json.dump(report, f, indent=2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
