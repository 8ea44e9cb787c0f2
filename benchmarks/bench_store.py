#!/usr/bin/env python3
"""Benchmark logshelf against a raw append-only baseline, stdlib shelve and diskcache.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/bench_store.py             # N = 100,000, 3 repeats
    .venv/bin/python benchmarks/bench_store.py --multi     # plus the multi-process section
    .venv/bin/python benchmarks/bench_store.py --quick     # N = 10,000, no 1M reopen

``benchmarks/README.md`` describes the method. In short: every system is
measured in this one process (fresh store directory per system and repeat),
the median of ``--repeats`` runs is reported, and anything that must not reuse
Python state (reopen time, index memory, persistence checks) or needs several
writers runs in a freshly spawned interpreter. A persistence check (reopen in a
fresh process, read 100 keys back, compare) runs after every timed write
workload; a mismatch aborts the run.
"""

from __future__ import annotations

import argparse
import dbm
import gc
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import platform
import random
import shelve
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Barrier
from typing import Any, Protocol, TypeVar

import logshelf

try:
    import diskcache
except ImportError:  # only the --multi section needs it
    diskcache = None

T = TypeVar("T")

RAW = "raw"
LOGSHELF = "logshelf"
LOGSHELF_LZ4 = "logshelf-lz4"
SHELVE = "shelve"
DISKCACHE = "diskcache"

#: Systems of the single-process section, in table order (the baseline first).
SINGLE_SYSTEMS = (RAW, LOGSHELF, LOGSHELF_LZ4, SHELVE)
#: Reopen sizes at or below this also measure lz4 and shelve; larger ones only raw and logshelf.
REOPEN_ALL_SYSTEMS_MAX = 100_000
#: Keys read back by every persistence check.
VERIFY_SAMPLE = 100
#: Records per write batch when building (untimed) stores for the reopen/memory section.
BUILD_CHUNK = 10_000
#: Writes per ``with db.transaction():`` in the transaction workload.
TRANSACTION_SIZE = 100
# Workload names of the single-process rows of the multi-process section.
REFERENCE_INSERT = "insert, single process (reference)"
TRANSACTION_INSERT = f"insert in transactions of {TRANSACTION_SIZE} writes"
SAFE_INSERT = "insert, single process (writer lock taken per write)"

# Targets from the product card; checked against the logshelf rows.
TARGET_INSERT_RATIO = 2.0
TARGET_READ_RATIO = 1.3
TARGET_REOPEN_MS = 100.0
TARGET_REOPEN_KEYS = 100_000
TARGET_INDEX_BYTES = 150.0
TARGET_MULTI_SPEEDUP = 3.0
TARGET_LOCK_WAIT_MS = 5.0
TARGET_TRANSACTION_RATIO = 1.2

_SPAWN = multiprocessing.get_context("spawn")


# ----------------------------------------------------------------------------
# records


def make_key(i: int) -> str:
    """The i-th key: 15 ASCII characters."""
    return f"user:{i:010d}"


def make_value(i: int, generation: int = 0) -> dict[str, Any]:
    """The i-th value; ``generation`` distinguishes an overwrite from the original
    (about 80 bytes pickled, so below logshelf's default ``compress_min``)."""
    return {
        "id": i,
        "name": f"user{i}",
        "email": f"u{i}@example.com",
        "score": i * 0.5 + generation,
    }


def make_items(indices: Sequence[int] | range, generation: int = 0) -> list[tuple[str, Any]]:
    return [(make_key(i), make_value(i, generation)) for i in indices]


# ----------------------------------------------------------------------------
# the systems


class Store(Protocol):
    """What every measured system offers: item access and close."""

    def __setitem__(self, key: str, value: Any) -> None: ...

    def __getitem__(self, key: str) -> Any: ...

    def close(self) -> None: ...


class RawLog:
    """The baseline: the least work a pickling append-only log can do.

    A write is ``pickle.dumps(value, 5)``, one append to a buffered file and an
    ``(offset, length)`` entry in a dict. A read is a dict lookup, one
    ``os.pread`` and ``pickle.loads``. Nothing is checksummed, locked or synced,
    and reads only see flushed writes (each timed write workload ends with
    :meth:`flush`, and that flush is part of its time). :meth:`close` saves the
    index as one pickle of the dict; opening loads it back.
    """

    DATA = "data.log"
    INDEX = "index.pickle"

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._directory = directory
        data_path = os.path.join(directory, self.DATA)
        index_path = os.path.join(directory, self.INDEX)
        self._index: dict[str, tuple[int, int]] = {}
        if os.path.exists(index_path):
            with open(index_path, "rb") as f:
                self._index = pickle.load(f)
        self._file = open(data_path, "ab")  # noqa: SIM115 - lives as long as the store
        self._offset = self._file.tell()
        self._fd = os.open(data_path, os.O_RDONLY)

    def __setitem__(self, key: str, value: Any) -> None:
        data = pickle.dumps(value, 5)
        self._file.write(data)
        self._index[key] = (self._offset, len(data))
        self._offset += len(data)

    def __getitem__(self, key: str) -> Any:
        offset, length = self._index[key]
        return pickle.loads(os.pread(self._fd, length, offset))

    def flush(self) -> None:
        """Hand buffered writes to the kernel."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        os.close(self._fd)
        tmp = os.path.join(self._directory, self.INDEX + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self._index, f, 5)
        os.replace(tmp, os.path.join(self._directory, self.INDEX))


def open_store(system: str, path: str) -> Any:
    """Open (creating if needed) the store of ``system`` in directory ``path``.

    Every system gets its own directory; shelve's files use the prefix
    ``path/shelf``. Returns a :class:`Store` (typed ``Any`` because the
    systems' own classes are wider).
    """
    if system == RAW:
        return RawLog(path)
    if system == LOGSHELF:
        return logshelf.open(path)
    if system == LOGSHELF_LZ4:
        return logshelf.open(path, compression="lz4")
    if system == SHELVE:
        os.makedirs(path, exist_ok=True)
        return shelve.open(os.path.join(path, "shelf"), "c", protocol=5)
    if system == DISKCACHE:
        if diskcache is None:
            raise RuntimeError("diskcache is not installed: pip install diskcache")
        return diskcache.Cache(path)
    raise ValueError(f"unknown system {system!r}")


def build_store(system: str, path: str, n: int) -> None:
    """Fill a store with keys 0..n-1 (untimed). logshelf stores are written with
    ``set_many`` batches of ``BUILD_CHUNK`` records to save time; the layout on
    disk is the same as after single writes except for batch boundaries."""
    db = open_store(system, path)
    try:
        for start in range(0, n, BUILD_CHUNK):
            items = make_items(range(start, min(n, start + BUILD_CHUNK)))
            if system in (LOGSHELF, LOGSHELF_LZ4):
                db.set_many(items)
            else:
                for key, value in items:
                    db[key] = value
    finally:
        db.close()


def shelve_backend() -> str:
    """Name of the dbm module ``shelve.open`` picks on this Python."""
    directory = tempfile.mkdtemp(prefix="logshelf-bench-probe-")
    try:
        with shelve.open(os.path.join(directory, "probe"), "c") as db:
            db["probe"] = 1
        return dbm.whichdb(os.path.join(directory, "probe")) or "unknown"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def system_label(system: str, dbm_name: str) -> str:
    if system == SHELVE:
        return f"shelve ({dbm_name})"
    if system == LOGSHELF:
        return "logshelf (default)"
    return system


# ----------------------------------------------------------------------------
# fresh processes


class BenchmarkFailure(RuntimeError):
    """A system returned wrong data or lost data: no number of this run counts."""


def run_fresh(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in a freshly spawned interpreter and return its result.

    The child imports this module (and so logshelf) before ``func`` runs, so
    import time is never part of a measurement.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as pool:
        return pool.submit(func, *args).result()


def _verify_child(system: str, path: str, indices: list[int], generation: int) -> str | None:
    """Child: read ``indices`` back; return a description of the first mismatch, or None."""
    db = open_store(system, path)
    try:
        for i in indices:
            key, expected = make_key(i), make_value(i, generation)
            try:
                got = db[key]
            except KeyError:
                return f"key {key!r} is missing"
            if got != expected:
                return f"key {key!r}: expected {expected!r}, got {got!r}"
    finally:
        db.close()
    return None


def verify_persistence(
    system: str, path: str, n: int, generation: int, rng: random.Random, sample: int | None
) -> None:
    """Reopen the store in a fresh process and compare ``sample`` random keys
    (all ``n`` when ``sample`` is None). Raises :class:`BenchmarkFailure`."""
    indices = list(range(n)) if sample is None else rng.sample(range(n), min(sample, n))
    problem = run_fresh(_verify_child, system, path, indices, generation)
    if problem is not None:
        raise BenchmarkFailure(f"{system}: persistence check failed in {path}: {problem}")


# ----------------------------------------------------------------------------
# statistics and results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Result:
    """One measured quantity of one system, with every repeat kept for --json."""

    section: str
    workload: str
    system: str
    unit: str  # "s" (elapsed for ``ops`` operations), "ms", "B/key"
    samples: list[float]
    ops: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return median(self.samples)

    @property
    def per_op(self) -> float:
        """Median seconds per operation (``unit == "s"`` only)."""
        return self.value / self.ops

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.value


@dataclass
class Row:
    """One line of the summary table."""

    workload: str
    system: str
    result: str
    ratio: str
    target: str = ""
    met: bool | None = None


def fmt_rate(ops_per_s: float) -> str:
    return f"{ops_per_s:,.0f} ops/s"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()


# ----------------------------------------------------------------------------
# single-process workloads


def time_writes(db: Any, items: Sequence[tuple[str, Any]]) -> float:
    """Seconds to write ``items`` one ``db[key] = value`` at a time (the raw
    baseline's final flush of its buffer included)."""
    flush = db.flush if isinstance(db, RawLog) else None
    gc.collect()
    start = time.perf_counter()
    for key, value in items:
        db[key] = value
    if flush is not None:
        flush()
    return time.perf_counter() - start


def time_reads(db: Any, keys: Sequence[str]) -> float:
    """Seconds to read every key of ``keys`` in that order."""
    gc.collect()
    start = time.perf_counter()
    for key in keys:
        db[key]
    return time.perf_counter() - start


def time_transactions(db: Any, batches: Sequence[Sequence[tuple[str, Any]]]) -> float:
    """Seconds to write every batch as one ``with db.transaction():`` of single writes."""
    gc.collect()
    start = time.perf_counter()
    for batch in batches:
        with db.transaction():
            for key, value in batch:
                db[key] = value
    return time.perf_counter() - start


@dataclass
class Context:
    """Settings and shared state of one benchmark run."""

    n: int
    repeats: int
    root: str
    rng: random.Random
    counter: int = 0

    def fresh_dir(self, system: str) -> str:
        """A new, not yet existing store path under the run's temp root."""
        self.counter += 1
        return os.path.join(self.root, f"{self.counter:03d}-{system}")


SINGLE_WORKLOADS = ("insert", "random read", "overwrite")


def single_round(
    ctx: Context,
    system: str,
    inserts: Sequence[tuple[str, Any]],
    overwrites: Sequence[tuple[str, Any]],
    read_order: Sequence[str],
) -> dict[str, float]:
    """One repeat of insert, random read and overwrite on a fresh store of ``system``.

    The store is closed and reopened between the insert and the reads (the
    reopen is not timed), and a fresh process checks the data after each
    write workload.
    """
    n = len(inserts)
    path = ctx.fresh_dir(system)
    db = open_store(system, path)
    insert = time_writes(db, inserts)
    db.close()
    verify_persistence(system, path, n, 0, ctx.rng, VERIFY_SAMPLE)

    db = open_store(system, path)
    read = time_reads(db, read_order)
    overwrite = time_writes(db, overwrites)
    db.close()
    verify_persistence(system, path, n, 1, ctx.rng, VERIFY_SAMPLE)
    shutil.rmtree(path)
    return dict(zip(SINGLE_WORKLOADS, (insert, read, overwrite), strict=True))


def run_single(ctx: Context) -> list[Result]:
    """Insert, random read and overwrite of ``ctx.n`` keys for every system.

    Systems take turns within each repeat, so that a disturbance (another
    process wanting the CPU) hits all of them alike rather than one system's
    every repeat.
    """
    n = ctx.n
    inserts = make_items(range(n))
    overwrites = make_items(range(n), generation=1)
    read_order = [key for key, _ in inserts]
    ctx.rng.shuffle(read_order)
    timings = {system: {w: list[float]() for w in SINGLE_WORKLOADS} for system in SINGLE_SYSTEMS}
    for repeat in range(ctx.repeats):
        for system in SINGLE_SYSTEMS:
            measured = single_round(ctx, system, inserts, overwrites, read_order)
            for workload, elapsed in measured.items():
                timings[system][workload].append(elapsed)
            print(
                f"  {system:13} repeat {repeat + 1}: "
                + ", ".join(f"{w} {n / t[-1]:,.0f}/s" for w, t in timings[system].items()),
                flush=True,
            )
    return [
        Result("single", workload, system, "s", samples, ops=n)
        for system in SINGLE_SYSTEMS
        for workload, samples in timings[system].items()
    ]


# ----------------------------------------------------------------------------
# reopen time and index memory (fresh processes)


def _reopen_child(system: str, path: str, index: int) -> float:
    """Child: seconds to open the store and read one key (checked)."""
    gc.collect()
    start = time.perf_counter()
    db = open_store(system, path)
    value = db[make_key(index)]
    elapsed = time.perf_counter() - start
    db.close()
    if value != make_value(index):
        raise BenchmarkFailure(f"{system}: {make_key(index)!r} read back as {value!r}")
    return elapsed


def _memory_child(system: str, path: str) -> tuple[int, int]:
    """Child: bytes (retained, peak) that tracemalloc sees allocated by opening the store."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    db = open_store(system, path)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    db.close()
    return current - before, peak - before


def reopen_sizes(n: int, quick: bool) -> list[int]:
    return [n] if quick else sorted({n, 100_000, 1_000_000})


def run_reopen(ctx: Context, sizes: Sequence[int]) -> list[Result]:
    """Reopen + first read (ms) and index memory (B/key) for stores of each size."""
    results = []
    for size in sizes:
        systems = SINGLE_SYSTEMS if size <= REOPEN_ALL_SYSTEMS_MAX else (RAW, LOGSHELF)
        for system in systems:
            path = ctx.fresh_dir(system)
            build_store(system, path, size)
            probes = [ctx.rng.randrange(size) for _ in range(ctx.repeats + 1)]
            run_fresh(_reopen_child, system, path, probes[0])  # warm the page cache
            samples = [run_fresh(_reopen_child, system, path, p) * 1e3 for p in probes[1:]]
            workload = f"reopen + first read, {size:,} keys"
            results.append(Result("reopen", workload, system, "ms", samples, ops=size))
            retained, peak = run_fresh(_memory_child, system, path)
            results.append(
                Result(
                    "memory",
                    f"index memory, {size:,} keys",
                    system,
                    "B/key",
                    [retained / size],
                    ops=size,
                    extra={"retained_bytes": retained, "peak_bytes": peak},
                )
            )
            print(
                f"  {system:13} {size:>9,} keys: reopen {median(samples):8.1f} ms, "
                f"index {retained / size:6.1f} B/key (peak during open {peak / size:6.1f} B/key)",
                flush=True,
            )
            shutil.rmtree(path)
    return results


# ----------------------------------------------------------------------------
# multi-process workloads (issue 3)


@dataclass
class WorkerReport:
    """What one writer process sends back."""

    start: float  # time.monotonic() after the barrier
    end: float  # time.monotonic() after its last write
    write_ns: list[int]  # per-write latency (instrumented runs only)
    lock_ns: list[int]  # writer-lock acquisition times (instrumented logshelf runs only)


def _install_lock_timer(sink: list[int]) -> None:
    """Time every writer-lock acquisition of this process, without editing src/:
    wrap ``logshelf._locking._ProcessLock.acquire`` and ``enter_held`` (the
    single-write path's entry, taken while the handle's mutex is held). Must
    run before the store is opened: handles bind these methods at open."""
    from logshelf import _locking

    def timed(original: Callable[..., None]) -> Callable[..., None]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter_ns()
            try:
                original(self, *args, **kwargs)
            finally:
                sink.append(time.perf_counter_ns() - start)

        return wrapper

    for name in ("acquire", "enter_held"):
        setattr(_locking._ProcessLock, name, timed(getattr(_locking._ProcessLock, name)))


def _multi_worker(
    system: str,
    path: str,
    worker: int,
    count: int,
    instrument: bool,
    barrier: Barrier,
    queue: Any,
) -> None:
    """Child: write ``count`` distinct records once every writer is ready."""
    write_ns: list[int] = []
    lock_ns: list[int] = []
    if instrument and system == LOGSHELF:
        _install_lock_timer(lock_ns)
    items = make_items(range(worker * count, (worker + 1) * count))
    db = open_store(system, path)
    barrier.wait()
    lock_ns.clear()  # acquisitions while opening are not part of the workload
    start = time.monotonic()
    if instrument:
        clock = time.perf_counter_ns
        for key, value in items:
            t0 = clock()
            db[key] = value
            write_ns.append(clock() - t0)
    else:
        for key, value in items:
            db[key] = value
    end = time.monotonic()
    lock_ns = list(lock_ns)  # nor are those of close()
    db.close()
    queue.put(WorkerReport(start, end, write_ns, lock_ns))


def run_writers(
    system: str, path: str, procs: int, count: int, instrument: bool
) -> list[WorkerReport]:
    """Start ``procs`` writer processes together (barrier) and collect their reports."""
    open_store(system, path).close()  # create the store up front: creation is not measured
    barrier = _SPAWN.Barrier(procs)
    queue = _SPAWN.Queue()
    workers = [
        _SPAWN.Process(
            target=_multi_worker, args=(system, path, w, count, instrument, barrier, queue)
        )
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    reports = [queue.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
        if p.exitcode != 0:
            raise BenchmarkFailure(f"{system}: a writer process exited with code {p.exitcode}")
    return reports


def run_multi(ctx: Context, procs: int) -> list[Result]:
    """Issue-3 workloads: concurrent writers, writer-lock waits, transactions, insert."""
    count = ctx.n // procs
    total = count * procs
    results = []

    # (a) aggregate throughput, uninstrumented, systems taking turns; every key checked after.
    spans: dict[str, list[float]] = {LOGSHELF: [], DISKCACHE: []}
    for repeat in range(ctx.repeats):
        for system, samples in spans.items():
            path = ctx.fresh_dir(system)
            reports = run_writers(system, path, procs, count, instrument=False)
            samples.append(max(r.end for r in reports) - min(r.start for r in reports))
            verify_persistence(system, path, total, 0, ctx.rng, sample=None)
            shutil.rmtree(path)
            print(
                f"  {system:13} {procs} writers, repeat {repeat + 1}: "
                f"{total / samples[-1]:,.0f} records/s",
                flush=True,
            )
    for system, samples in spans.items():
        workload = f"{procs}-process insert, aggregate"
        results.append(Result("multi", workload, system, "s", samples, ops=total))

    # (a') latency distributions, from separate instrumented runs (pooled over repeats).
    write_ns: list[int] = []
    lock_ns: list[int] = []
    for _ in range(ctx.repeats):
        path = ctx.fresh_dir(LOGSHELF)
        for report in run_writers(LOGSHELF, path, procs, count, instrument=True):
            write_ns.extend(report.write_ns)
            lock_ns.extend(report.lock_ns)
        verify_persistence(LOGSHELF, path, total, 0, ctx.rng, sample=None)
        shutil.rmtree(path)
    for name, values in (("write latency", write_ns), ("writer-lock wait", lock_ns)):
        values.sort()
        ms = [v / 1e6 for v in values]
        extra = {
            "count": len(ms),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "p99.9_ms": percentile(ms, 99.9),
            "max_ms": ms[-1],
            "over_target": sum(v > TARGET_LOCK_WAIT_MS for v in ms),
        }
        results.append(
            Result("multi", f"{procs}-process {name}", LOGSHELF, "ms", [ms[-1]], extra=extra)
        )
        print(
            f"  logshelf      {name}: p50 {extra['p50_ms']:.3f} ms, p99 {extra['p99_ms']:.3f} ms, "
            f"p99.9 {extra['p99.9_ms']:.3f} ms, max {extra['max_ms']:.3f} ms; "
            f"{extra['over_target']} of {len(ms):,} over {TARGET_LOCK_WAIT_MS:.0f} ms",
            flush=True,
        )

    # (b) transactions of TRANSACTION_SIZE writes and (c) plain single-process inserts,
    # each compared with a raw-baseline insert measured in the same round.
    items = make_items(range(ctx.n))
    batches = [items[i : i + TRANSACTION_SIZE] for i in range(0, len(items), TRANSACTION_SIZE)]
    rounds: list[tuple[str, str, Callable[[Any], float]]] = [
        (RAW, REFERENCE_INSERT, lambda db: time_writes(db, items)),
        (LOGSHELF, TRANSACTION_INSERT, lambda db: time_transactions(db, batches)),
        (LOGSHELF, SAFE_INSERT, lambda db: time_writes(db, items)),
    ]
    timings: dict[tuple[str, str], list[float]] = {(s, w): [] for s, w, _ in rounds}
    for _ in range(ctx.repeats):
        for system, workload, timed in rounds:
            path = ctx.fresh_dir(system)
            db = open_store(system, path)
            timings[system, workload].append(timed(db))
            db.close()
            verify_persistence(system, path, ctx.n, 0, ctx.rng, VERIFY_SAMPLE)
            shutil.rmtree(path)
    for (system, workload), samples in timings.items():
        results.append(Result("multi", workload, system, "s", samples, ops=ctx.n))
        print(f"  {system:13} {workload}: {ctx.n / median(samples):,.0f} records/s", flush=True)
    return results


# ----------------------------------------------------------------------------
# summary


def find(results: Sequence[Result], section: str, workload: str, system: str) -> Result | None:
    for r in results:
        if (r.section, r.workload, r.system) == (section, workload, system):
            return r
    return None


def check(value: float, limit: float, higher_is_better: bool = False) -> bool:
    return value >= limit if higher_is_better else value <= limit


def summarize(results: Sequence[Result], dbm_name: str) -> list[Row]:
    """Turn results into table rows with ratios and target checks."""
    rows: list[Row] = []
    is_logshelf = (LOGSHELF, LOGSHELF_LZ4)

    def label(system: str) -> str:
        return system_label(system, dbm_name)

    raw_insert = find(results, "multi", REFERENCE_INSERT, RAW)
    targets = {"insert": TARGET_INSERT_RATIO, "random read": TARGET_READ_RATIO}
    for r in results:
        if r.section == "single":
            base = find(results, "single", r.workload, RAW)
            assert base is not None
            ratio = r.per_op / base.per_op
            row = Row(r.workload, label(r.system), fmt_rate(r.ops_per_s), fmt_ratio(ratio))
            if r.system in is_logshelf and r.workload in targets:
                row.target = f"<= {targets[r.workload]:.1f}x"
                row.met = check(ratio, targets[r.workload])
            rows.append(row)
        elif r.section in ("reopen", "memory"):
            base = find(results, r.section, r.workload, RAW)
            assert base is not None
            ratio = r.value / base.value
            unit = "ms" if r.section == "reopen" else "B/key"
            row = Row(r.workload, label(r.system), f"{r.value:,.1f} {unit}", fmt_ratio(ratio))
            if r.system in is_logshelf and r.section == "memory":
                row.target = f"<= {TARGET_INDEX_BYTES:.0f} B/key"
                row.met = check(r.value, TARGET_INDEX_BYTES)
            if r.system in is_logshelf and r.section == "reopen" and r.ops == TARGET_REOPEN_KEYS:
                row.target = f"<= {TARGET_REOPEN_MS:.0f} ms"
                row.met = check(r.value, TARGET_REOPEN_MS)
            rows.append(row)
        elif r.section == "multi":
            if r.unit == "ms":
                e = r.extra
                result = (
                    f"p50 {e['p50_ms']:.3f} / p99 {e['p99_ms']:.3f} / max {e['max_ms']:.1f} ms "
                    f"({e['over_target']} > {TARGET_LOCK_WAIT_MS:.0f} ms)"
                )
                row = Row(r.workload, label(r.system), result, "")
                if "lock" in r.workload:
                    row.target = f"max <= {TARGET_LOCK_WAIT_MS:.0f} ms"
                    row.met = check(e["max_ms"], TARGET_LOCK_WAIT_MS)
                rows.append(row)
            elif "aggregate" in r.workload:
                other = find(results, "multi", r.workload, DISKCACHE)
                row = Row(r.workload, label(r.system), f"{r.ops_per_s:,.0f} records/s", "")
                if r.system == LOGSHELF and other is not None:
                    speedup = r.ops_per_s / other.ops_per_s
                    row.ratio = f"{speedup:.2f}x diskcache's rate"
                    row.target = f">= {TARGET_MULTI_SPEEDUP:.0f}x diskcache"
                    row.met = check(speedup, TARGET_MULTI_SPEEDUP, higher_is_better=True)
                rows.append(row)
            else:
                assert raw_insert is not None
                ratio = r.per_op / raw_insert.per_op
                row = Row(r.workload, label(r.system), fmt_rate(r.ops_per_s), fmt_ratio(ratio))
                if r.system == LOGSHELF:
                    is_tx = r.workload == TRANSACTION_INSERT
                    limit = TARGET_TRANSACTION_RATIO if is_tx else TARGET_INSERT_RATIO
                    row.target = f"<= {limit:.1f}x"
                    row.met = check(ratio, limit)
                rows.append(row)
    return rows


def print_summary(rows: Sequence[Row]) -> None:
    headers = ("workload", "system", "ops/s (or value)", "ratio to baseline", "target", "met?")
    met = {True: "yes", False: "NO", None: ""}
    cells = [(r.workload, r.system, r.result, r.ratio, r.target, met[r.met]) for r in rows]
    print_table(headers, cells)


def package_dir() -> str:
    """Directory of the logshelf package being measured."""
    return os.path.dirname(os.path.abspath(logshelf.__file__))


def git_state() -> str | None:
    """Short commit of the checkout logshelf is imported from, marked when the
    package has uncommitted changes; None outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package_dir(), capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except OSError:
        return None
    return f"{commit}+uncommitted" if commit and dirty else commit or None


def source_fingerprint() -> str:
    """Hash of the logshelf package's source files, to notice edits during a run."""
    package = package_dir()
    digest = hashlib.sha256()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def environment(dbm_name: str) -> dict[str, Any]:
    """Facts about the machine and versions, for --json and the header line."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "logshelf": logshelf.__version__,
        "logshelf_path": package_dir(),
        "git": git_state(),
        "source_sha256": source_fingerprint(),
        "shelve_backend": dbm_name,
        "diskcache": getattr(diskcache, "__version__", None),
    }


# ----------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("-n", type=int, default=None, help="records (default 100,000; 10,000 with --quick)")
    add("--repeats", type=int, default=3, help="runs per measurement, median reported (3)")
    add("--quick", action="store_true", help="N=10,000 and no 1,000,000-key reopen")
    add("--multi", action="store_true", help="also run the multi-process (issue 3) section")
    add("--procs", type=int, default=4, help="writer processes for --multi (4)")
    add("--json", metavar="PATH", help="write every raw sample and the summary to PATH")
    add("--dir", metavar="DIR", help="where to create temporary stores (system temp dir)")
    add("--seed", type=int, default=12345, help="seed for read order and sampled keys")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 10_000 if args.quick else 100_000
    if args.n < args.procs or args.repeats < 1:
        parser.error("need -n >= --procs and --repeats >= 1")
    if args.multi and diskcache is None:
        parser.error("--multi compares with diskcache: pip install diskcache")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dbm_name = shelve_backend()
    env = environment(dbm_name)
    print(
        f"logshelf benchmark: N={args.n:,}, median of {args.repeats}, "
        f"Python {env['python']}, "
        f"{env['cpus']} CPUs, shelve backend {dbm_name}, "
        f"logshelf {env['logshelf']} from {env['logshelf_path']} "
        f"(git {env['git']}, source sha256 {env['source_sha256']})"
    )
    root = tempfile.mkdtemp(prefix="logshelf-bench-", dir=args.dir)
    ctx = Context(args.n, args.repeats, root, random.Random(args.seed))
    started = time.perf_counter()
    results: list[Result] = []
    try:
        print("\n== single process: insert, random read, overwrite ==", flush=True)
        results += run_single(ctx)
        print("\n== reopen and index memory (each in a fresh process) ==", flush=True)
        results += run_reopen(ctx, reopen_sizes(args.n, args.quick))
        if args.multi:
            print(f"\n== issue 3: {args.procs} writer processes, transactions ==", flush=True)
            results += run_multi(ctx, args.procs)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if source_fingerprint() != env["source_sha256"]:
        print(
            "\nWARNING: logshelf's source changed during this run; the numbers mix "
            "versions. Run again.",
            file=sys.stderr,
        )
    rows = summarize(results, dbm_name)
    elapsed = time.perf_counter() - started
    print(f"\n== summary ({elapsed:.0f} s; ratio = time per op / raw baseline's, lower is better)")
    print_summary(rows)
    print(
        "notes: values pickle to ~80 bytes, below logshelf's compress_min (256), so the lz4 row\n"
        "stores them uncompressed and measures the option's overhead only. Every logshelf write\n"
        "takes the multi-process writer lock; there is no way to turn it off."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "environment": env,
                    "results": [asdict(r) | {"median": r.value} for r in results],
                    "summary": [asdict(r) for r in rows],
                },
                f,
                indent=2,
            )
        print(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
