#!/usr/bin/env python3
"""Benchmark logshelf side by side with every peer, in one run.

Run from the repository root with a virtualenv that has the ``bench`` extra::

    .venv/bin/python benchmarks/bench_peers.py --json results.json   # full run
    .venv/bin/python benchmarks/bench_peers.py --quick                # < 1 minute
    .venv/bin/python benchmarks/plot.py results.json docs/img/        # charts

``benchmarks/README.md`` describes the method. In short: every workload runs
for every installed adapter in one run, on a fresh store directory per
adapter and repeat, adapters taking turns within each repeat; the median of
``--repeats`` is reported, with every sample in ``--json``. A store's numbers
count only after a new process (which never had it open) has reopened it and read a
sample of keys back (all acknowledged keys after the multi-process
workload). Peers that are not installed are reported as such and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing.synchronize import Barrier
from typing import Any

import report
from adapters import ADAPTERS, BY_NAME, Adapter, Handle, adapter
from benchlib import (
    CHILDREN,
    BenchmarkFailure,
    Spec,
    chunked,
    collect,
    disk_usage,
    environment,
    large_key,
    large_value,
    live_bytes,
    make_items,
    make_key,
    make_value,
    median,
    percentile,
    preload,
    resident_bytes,
    run_fresh,
    source_fingerprint,
    spec_key,
    spec_value,
    values_equal,
)

#: Operations per ``with handle.batch():`` group (and per logshelf transaction).
GROUP = 100
#: Keys read back by the persistence check after insert; the final check
#: reads this many from each of its three strata.
VERIFY_SAMPLE = 100
#: Large values read back by their persistence check.
VERIFY_LARGE = 5
#: A reopen child slower than this ends the reopen samples of that store.
REOPEN_PATIENCE_S = 20.0
#: Records per build call when filling stores for the reopen workload.
BUILD_SLICE = 100_000

GROUPS = ("basic", "large", "durability", "multiprocess", "lockwait", "reopen")
#: Results a failing basic round marks failed.
BASIC_WORKLOADS = ("insert", "read", "overwrite", "mix", "delete", "compact")
_ABSENT = object()


# ----------------------------------------------------------------------------
# settings and results


@dataclass
class Settings:
    """What one run measures."""

    n: int
    repeats: int
    quick: bool
    budget: float
    large_count: int
    durability_n: int
    procs: int
    reopen_sizes: list[int]
    seed: int
    groups: list[str]
    adapters: list[str]


@dataclass
class Result:
    """One workload of one adapter, every repeat kept.

    ``unit`` "s": each sample is the seconds ``ops[i]`` operations took;
    otherwise samples are in ``unit`` ("ms", "B/key", "bytes") and ``ops``
    is empty. ``status``: "ok", "failed" (the persistence check or the
    system failed; no number counts), "lost" (acknowledged writes missing),
    "skipped".
    """

    workload: str
    adapter: str
    unit: str
    samples: list[float] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    planned: int = 0
    status: str = "ok"
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, seconds: float, done: int) -> None:
        """Record one timed sample of ``done`` operations."""
        self.samples.append(seconds)
        self.ops.append(done)
        if done < self.planned:
            self.extra["truncated"] = True

    def fail(self, detail: str, status: str = "failed") -> None:
        """Mark the result as not counting, keeping the first reason."""
        if self.status == "ok":
            self.status, self.detail = status, detail


class Run:
    """State of one benchmark run: settings, temp root, results, checks."""

    def __init__(self, settings: Settings, root: str) -> None:
        self.s = settings
        self.root = root
        self.rng = random.Random(settings.seed)
        self.results: dict[tuple[str, str], Result] = {}
        self.checks: dict[str, dict[str, Any]] = {
            name: {"passed": 0, "failed": [], "errors": []} for name in settings.adapters
        }
        self._counter = 0

    def result(self, workload: str, name: str, unit: str = "s", planned: int = 0) -> Result:
        """The result of ``name`` in ``workload``, created on first use."""
        key = (workload, name)
        if key not in self.results:
            self.results[key] = Result(workload, name, unit, planned=planned)
        return self.results[key]

    def fresh_dir(self, name: str) -> str:
        """A new, not yet existing store path under the run's temp root."""
        self._counter += 1
        return os.path.join(self.root, f"{self._counter:04d}-{name}")

    def adapters_for(self, group: str) -> list[Adapter]:
        """Selected adapters that take part in ``group``."""
        out = []
        for name in self.s.adapters:
            a = BY_NAME[name]
            if group not in a.workloads or a.missing():
                continue
            if group in ("multiprocess", "lockwait") and a.multiprocess is None:
                continue
            out.append(a)
        return out

    def verify(self, a: Adapter, path: str, specs: list[Spec]) -> dict[str, Any]:
        """Reopen the store in a fresh process and compare ``specs``; record
        the outcome under the adapter. Returns the child's counts."""
        try:
            outcome = run_fresh(_verify_child, a.name, path, specs)
        except Exception as exc:  # the child could not even open the store
            outcome = {
                "checked": 0,
                "missing": 0,
                "wrong": 0,
                "unexpected": 0,
                "errors": 1,
                "examples": [f"{type(exc).__name__}: {exc}"],
            }
        bad = outcome["missing"] + outcome["wrong"] + outcome["unexpected"] + outcome["errors"]
        if bad:
            self.checks[a.name]["failed"].append(f"{path}: {outcome}")
        else:
            self.checks[a.name]["passed"] += 1
        return outcome


def describe_problem(outcome: dict[str, Any]) -> str:
    """One line about a failed persistence check."""
    parts = [
        f"{outcome[k]} {k}" for k in ("missing", "wrong", "unexpected", "errors") if outcome[k]
    ]
    example = outcome["examples"][0] if outcome["examples"] else ""
    return f"persistence check: {', '.join(parts)} of {outcome['checked']}; {example}"


def problems(outcome: dict[str, Any]) -> int:
    """How many keys a persistence check found missing, wrong or resurrected."""
    return int(outcome["missing"] + outcome["wrong"] + outcome["unexpected"] + outcome["errors"])


# ----------------------------------------------------------------------------
# children (run in new processes, see benchlib.CHILDREN)


def _verify_child(name: str, path: str, specs: list[Spec]) -> dict[str, Any]:
    """Child: open the store and compare every spec; counts and a few examples."""
    out: dict[str, Any] = {
        "checked": len(specs),
        "missing": 0,
        "wrong": 0,
        "unexpected": 0,
        "errors": 0,
        "examples": [],
    }
    handle = adapter(name).open(path)
    m = handle.mapping
    try:
        for group in chunked(specs, GROUP):
            with handle.batch(False):
                for spec in group:
                    key = spec_key(spec)
                    try:
                        got = m[key]
                    except KeyError:
                        got = _ABSENT
                    except Exception as exc:  # damaged data, reported not raised
                        out["errors"] += 1
                        out["examples"].append(f"{key!r}: {type(exc).__name__}: {exc}")
                        continue
                    if spec[0] == "absent":
                        if got is not _ABSENT:
                            out["unexpected"] += 1
                            out["examples"].append(f"{key!r} was deleted but is present")
                    elif got is _ABSENT:
                        out["missing"] += 1
                        out["examples"].append(f"{key!r} is missing")
                    elif not values_equal(got, spec_value(spec)):
                        out["wrong"] += 1
                        out["examples"].append(f"{key!r} has a wrong value")
    finally:
        handle.close()
    del out["examples"][5:]
    return out


def _reopen_child(name: str, path: str, spec: Spec) -> tuple[float, int]:
    """Child: seconds to open the store and read one key (checked), and the
    growth of the resident set over that."""
    collect()
    rss = resident_bytes()
    start = time.perf_counter()
    handle = adapter(name).open(path)
    with handle.batch(False):
        got = handle.mapping[spec_key(spec)]
    elapsed = time.perf_counter() - start
    grown = resident_bytes() - rss
    handle.close()
    if not values_equal(got, spec_value(spec)):
        raise BenchmarkFailure(f"{name}: {spec_key(spec)!r} read back wrong after reopen")
    return elapsed, grown


def _memory_child(name: str, path: str) -> tuple[int, int]:
    """Child: bytes (retained, peak) that tracemalloc sees allocated by opening."""
    collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    handle = adapter(name).open(path)
    collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    handle.close()
    return current - before, peak - before


@dataclass
class WriterReport:
    """What one writer process sends back."""

    worker: int
    start: float  # time.monotonic() after the barrier
    end: float  # time.monotonic() after its last acknowledged write
    done: int  # writes acknowledged (returned without an error)
    error: str = ""
    write_ns: list[int] = field(default_factory=list)
    lock_ns: list[int] = field(default_factory=list)


def _install_lock_timer(sink: list[int]) -> str | None:
    """Time every writer-lock acquisition of this process without editing
    ``src/``: wrap ``logshelf._locking._ProcessLock.enter_held``, which
    every hold of the OS lock goes through. Must run before the store is
    opened. Returns why it cannot, if logshelf's internals moved."""
    try:
        from logshelf import _locking

        cls = _locking._ProcessLock
        originals = {name: getattr(cls, name) for name in ("enter_held",)}
    except (ImportError, AttributeError) as exc:
        return f"cannot instrument the writer lock: {exc}"

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return original(self, *args, **kwargs)
            finally:
                sink.append(time.perf_counter_ns() - start)

        return wrapper

    for name, original in originals.items():
        setattr(cls, name, timed(original))
    return None


def _writer_child(
    name: str,
    path: str,
    worker: int,
    count: int,
    budget: float,
    instrument: bool,
    barrier: Barrier,
    queue: Any,
) -> None:
    """Child: write ``count`` distinct records once every writer is ready,
    stopping early when ``budget`` seconds have passed."""
    write_ns: list[int] = []
    lock_ns: list[int] = []
    report_ = WriterReport(worker, 0.0, 0.0, 0)
    try:
        if instrument:
            problem = _install_lock_timer(lock_ns)
            if problem:
                raise RuntimeError(problem)
        items = make_items(range(worker * count, (worker + 1) * count))
        handle = adapter(name).open(path)
        m, batch = handle.mapping, handle.batch
        barrier.wait()
        lock_ns.clear()  # acquisitions while opening are not part of the workload
        clock = time.perf_counter_ns
        start = time.monotonic()
        done = 0
        for group in chunked(items, GROUP):
            with batch(True):
                if instrument:
                    for key, value in group:
                        t0 = clock()
                        m[key] = value
                        write_ns.append(clock() - t0)
                else:
                    for key, value in group:
                        m[key] = value
            done += len(group)
            if time.monotonic() - start > budget:
                break
        handle.flush()
        report_ = WriterReport(worker, start, time.monotonic(), done, "", write_ns, list(lock_ns))
        handle.close()
    except BaseException as exc:  # report it: the parent must not wait forever
        report_.error = f"{type(exc).__name__}: {exc}"
    finally:
        queue.put(report_)


def run_writers(
    name: str, path: str, procs: int, count: int, budget: float, instrument: bool
) -> list[WriterReport]:
    """Start ``procs`` writer processes together (barrier); collect their reports."""
    adapter(name).open(path).close()  # create the store first: creation is not measured
    barrier = CHILDREN.Barrier(procs)
    queue = CHILDREN.Queue()
    workers = [
        CHILDREN.Process(
            target=_writer_child,
            args=(name, path, w, count, budget, instrument, barrier, queue),
        )
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    reports = [queue.get(timeout=budget + 600) for _ in workers]
    for p in workers:
        p.join()
    return sorted(reports, key=lambda r: r.worker)


# ----------------------------------------------------------------------------
# timed loops


def timed_writes(
    handle: Handle, items: Sequence[tuple[str, Any]], budget: float
) -> tuple[float, int]:
    """Seconds to write ``items`` one ``m[key] = value`` at a time, in groups
    of ``GROUP`` inside ``handle.batch(True)``, ending with ``flush()``; and
    how many were written before ``budget`` seconds ran out."""
    m, batch = handle.mapping, handle.batch
    groups = chunked(items, GROUP)
    done = 0
    collect()
    start = time.perf_counter()
    for group in groups:
        with batch(True):
            for key, value in group:
                m[key] = value
        done += len(group)
        if time.perf_counter() - start > budget:
            break
    handle.flush()
    return time.perf_counter() - start, done


def timed_reads(handle: Handle, keys: Sequence[str], budget: float) -> tuple[float, int]:
    """Seconds to read ``keys`` in that order (groups in ``batch(False)``)."""
    m, batch = handle.mapping, handle.batch
    groups = chunked(keys, GROUP)
    done = 0
    collect()
    start = time.perf_counter()
    for group in groups:
        with batch(False):
            for key in group:
                m[key]
        done += len(group)
        if time.perf_counter() - start > budget:
            break
    return time.perf_counter() - start, done


def timed_mix(handle: Handle, ops: Sequence[tuple[str, Any]], budget: float) -> tuple[float, int]:
    """Seconds to run ``ops``: a read where the value is None, else a write."""
    m, batch = handle.mapping, handle.batch
    groups = chunked(ops, GROUP)
    done = 0
    collect()
    start = time.perf_counter()
    for group in groups:
        with batch(True):
            for key, value in group:
                if value is None:
                    m[key]
                else:
                    m[key] = value
        done += len(group)
        if time.perf_counter() - start > budget:
            break
    handle.flush()
    return time.perf_counter() - start, done


def timed_deletes(handle: Handle, keys: Sequence[str], budget: float) -> tuple[float, int]:
    """Seconds to ``del m[key]`` every key of ``keys``."""
    m, batch = handle.mapping, handle.batch
    groups = chunked(keys, GROUP)
    done = 0
    collect()
    start = time.perf_counter()
    for group in groups:
        with batch(True):
            for key in group:
                del m[key]
        done += len(group)
        if time.perf_counter() - start > budget:
            break
    handle.flush()
    return time.perf_counter() - start, done


def timed_close(handle: Handle) -> float:
    """Seconds ``close()`` took (recorded, never part of a rate)."""
    start = time.perf_counter()
    handle.close()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------
# workloads


@dataclass
class BasicData:
    """Everything the basic workloads write and read, built before timing."""

    inserts: list[tuple[str, Any]]
    read_order: list[str]
    overwrites: list[tuple[str, Any]]
    mix_ops: list[tuple[str, Any]]
    deletes: list[str]  # the keys 0, 2, 4, ... in that order
    deleted_bytes: list[int]  # live bytes the first k deletes remove, for every k
    generation: list[int]  # each key's generation after the mix
    live: dict[str, int]  # live bytes after each write phase


def basic_data(run: Run) -> BasicData:
    """Records and operation orders shared by every adapter."""
    n, rng = run.s.n, run.rng
    inserts = make_items(range(n))
    read_order = [key for key, _ in inserts]
    rng.shuffle(read_order)
    overwrites = make_items(range(n), generation=1)
    generation = [1] * n
    mix_ops: list[tuple[str, Any]] = []
    for _ in range(n):
        i = rng.randrange(n)
        if rng.random() < 0.1:
            mix_ops.append((make_key(i), make_value(i, 2)))
            generation[i] = 2
        else:
            mix_ops.append((make_key(i), None))
    deletes = [make_key(i) for i in range(0, n, 2)]
    deleted_bytes = [0]
    for i in range(0, n, 2):
        deleted_bytes.append(deleted_bytes[-1] + live_bytes([("small", i, generation[i])]))
    live = {
        "disk-insert": live_bytes(("small", i, 0) for i in range(n)),
        "disk-overwrite": live_bytes(("small", i, 1) for i in range(n)),
        "disk-mix": live_bytes(("small", i, generation[i]) for i in range(n)),
    }
    return BasicData(
        inserts,
        read_order,
        overwrites,
        mix_ops,
        deletes,
        deleted_bytes,
        generation,
        live,
    )


def final_sample(run: Run, data: BasicData, deleted: int) -> list[Spec]:
    """Keys that show every write phase's effect after the last one: keys
    the delete phase removed (the first ``deleted`` of its list; they must be
    absent), and live keys last written by the mix (generation 2) and by the
    overwrite (generation 1)."""
    n = run.s.n
    gone = set(range(0, 2 * deleted, 2))
    live = [i for i in range(n) if i not in gone]
    mixed = [i for i in live if data.generation[i] == 2]
    overwritten = [i for i in live if data.generation[i] == 1]
    specs: list[Spec] = []
    for i in run.rng.sample(sorted(gone), min(VERIFY_SAMPLE, len(gone))):
        specs.append(("absent", i, 0))
    for pool in (mixed, overwritten):
        for i in run.rng.sample(pool, min(VERIFY_SAMPLE, len(pool))):
            specs.append(("small", i, data.generation[i]))
    return specs


def record_disk(run: Run, name: str, workload: str, path: str, live: int) -> None:
    """Record the allocated size of the store after a phase."""
    allocated, apparent = disk_usage(path)
    r = run.result(workload, name, unit="bytes")
    r.samples.append(allocated)
    r.extra["live_bytes"] = live
    r.extra.setdefault("apparent_bytes", []).append(apparent)


def basic_round(run: Run, a: Adapter, data: BasicData) -> str:
    """One repeat of insert, random read, overwrite, 90/10 mix and delete-half
    on a fresh store of ``a``; returns a progress line.

    The store is closed after each write phase (to measure its size on disk)
    and reopened untimed. Systems with a compaction API then compact (timed
    on its own). A fresh process checks a sample after the insert and, at
    the end, a sample showing every later phase's effect.
    """
    n, budget, name = run.s.n, run.s.budget, a.name
    path = run.fresh_dir(name)
    res = {
        w: run.result(w, name, planned=p)
        for w, p in (
            ("insert", n),
            ("read", n),
            ("overwrite", n),
            ("mix", n),
            ("delete", len(data.deletes)),
        )
    }
    closes: dict[str, float] = {}
    timings: dict[str, tuple[float, int]] = {}

    h = a.open(path)
    timings["insert"] = timed_writes(h, data.inserts, budget)
    h.bulk_set(data.inserts[timings["insert"][1] :])
    closes["insert"] = timed_close(h)
    record_disk(run, name, "disk-insert", path, data.live["disk-insert"])
    sample = run.rng.sample(range(n), min(VERIFY_SAMPLE, n))
    first = run.verify(a, path, [("small", i, 0) for i in sample])

    h = a.open(path)
    timings["read"] = timed_reads(h, data.read_order, budget)
    timings["overwrite"] = timed_writes(h, data.overwrites, budget)
    h.bulk_set(data.overwrites[timings["overwrite"][1] :])
    closes["overwrite"] = timed_close(h)
    record_disk(run, name, "disk-overwrite", path, data.live["disk-overwrite"])

    h = a.open(path)
    timings["mix"] = timed_mix(h, data.mix_ops, budget)
    h.bulk_set([(k, v) for k, v in data.mix_ops[timings["mix"][1] :] if v is not None])
    closes["mix"] = timed_close(h)
    record_disk(run, name, "disk-mix", path, data.live["disk-mix"])

    h = a.open(path)
    # A delete phase cut short by the budget is not completed (dbm.dumb, for
    # one, rewrites its whole index on every delete): what was deleted is
    # what the final check expects, and the disk figures are marked.
    timings["delete"] = timed_deletes(h, data.deletes, budget)
    deleted = timings["delete"][1]
    live_after = data.live["disk-mix"] - data.deleted_bytes[deleted]
    closes["delete"] = timed_close(h)
    record_disk(run, name, "disk-delete", path, live_after)

    h = a.open(path)
    start = time.perf_counter()
    compacted = h.compact()
    compact_s = time.perf_counter() - start
    h.close()
    if compacted:
        record_disk(run, name, "disk-compact", path, live_after)
        r = run.result("compact", name, planned=1)
        r.add(compact_s, 1)
        r.extra["live_bytes"] = live_after
    if deleted < len(data.deletes):
        for w in ("disk-delete", "disk-compact"):
            if (w, name) in run.results:
                run.result(w, name).extra["truncated"] = True
    final = run.verify(a, path, final_sample(run, data, deleted))
    shutil.rmtree(path, ignore_errors=True)

    for workload, (seconds, done) in timings.items():
        r = res[workload]
        r.add(seconds, done)
        if workload in closes:
            r.extra.setdefault("close_s", []).append(closes[workload])
    if problems(first):
        for w in ("insert", "read", "disk-insert"):
            run.result(w, name).fail(describe_problem(first))
    if problems(final):
        later = [
            "overwrite",
            "mix",
            "delete",
            "disk-overwrite",
            "disk-mix",
            "disk-delete",
        ]
        if compacted:
            later += ["compact", "disk-compact"]
        for w in later:
            run.result(w, name).fail(describe_problem(final))
    return ", ".join(f"{w} {done / s:,.0f}/s" for w, (s, done) in timings.items())


def large_round(run: Run, a: Adapter, keys: list[str], values: list[Any]) -> str:
    """One repeat of writing and then reading (in random order) the large values."""
    name, budget, count = a.name, run.s.budget, len(keys)
    path = run.fresh_dir(name)
    items = list(zip(keys, values, strict=True))
    h = a.open(path)
    write = timed_writes(h, items, budget)
    h.bulk_set(items[write[1] :])
    h.close()
    live = sum(len(k.encode()) + len(pickle.dumps(v, 5)) for k, v in items)
    record_disk(run, name, "disk-large", path, live)
    sample = run.rng.sample(range(count), min(VERIFY_LARGE, count))
    outcome = run.verify(a, path, [("large", i, 0) for i in sample])
    order = keys[:]
    run.rng.shuffle(order)
    h = a.open(path)
    read = timed_reads(h, order, budget)
    h.close()
    shutil.rmtree(path, ignore_errors=True)
    for workload, timing in (("large-write", write), ("large-read", read)):
        r = run.result(workload, name, planned=count)
        r.add(*timing)
        if problems(outcome):
            r.fail(describe_problem(outcome))
    if problems(outcome):
        run.result("disk-large", name).fail(describe_problem(outcome))
    return f"write {write[1] / write[0]:,.1f}/s, read {read[1] / read[0]:,.1f}/s"


def durability_round(run: Run, a: Adapter, items: list[tuple[str, Any]]) -> str:
    """One repeat of single writes on a fresh store under one durability mode."""
    path = run.fresh_dir(a.name)
    h = a.open(path)
    seconds, done = timed_writes(h, items, run.s.budget)
    h.bulk_set(items[done:])
    h.close()
    sample = run.rng.sample(range(len(items)), min(VERIFY_SAMPLE, len(items)))
    outcome = run.verify(a, path, [("small", i, 0) for i in sample])
    shutil.rmtree(path, ignore_errors=True)
    r = run.result("durability", a.name, planned=len(items))
    r.add(seconds, done)
    if problems(outcome):
        r.fail(describe_problem(outcome))
    return f"{done / seconds:,.0f} writes/s ({seconds / done * 1e6:,.1f} µs each)"


def multiprocess_round(run: Run, a: Adapter) -> str:
    """One repeat of ``procs`` processes writing distinct keys at once; then
    every acknowledged write is read back in a fresh process."""
    procs = run.s.procs
    count = run.s.n // procs
    path = run.fresh_dir(a.name)
    r = run.result("multiprocess", a.name, planned=count * procs)
    reports = run_writers(a.name, path, procs, count, run.s.budget, instrument=False)
    errors = [rep.error for rep in reports if rep.error]
    acknowledged = [
        ("small", rep.worker * count + j, 0) for rep in reports for j in range(rep.done)
    ]
    outcome = run.verify(a, path, acknowledged)
    shutil.rmtree(path, ignore_errors=True)
    e = r.extra
    e["acknowledged"] = e.get("acknowledged", 0) + len(acknowledged)
    e["lost"] = e.get("lost", 0) + outcome["missing"]
    e["wrong"] = e.get("wrong", 0) + outcome["wrong"] + outcome["errors"]
    e.setdefault("writer_errors", []).extend(errors)
    if errors and not acknowledged:
        r.fail("writers failed: " + errors[0])
        return "writers failed: " + errors[0]
    span = max(rep.end for rep in reports if not rep.error) - min(
        rep.start for rep in reports if not rep.error
    )
    r.add(span, len(acknowledged))
    if outcome["missing"] or outcome["wrong"]:
        r.fail(describe_problem(outcome), status="lost")
    elif problems(outcome) or errors:
        r.fail(describe_problem(outcome) if problems(outcome) else "writer error: " + errors[0])
    line = f"{len(acknowledged) / span:,.0f} records/s, {len(acknowledged):,} acknowledged"
    if problems(outcome):
        line += f", {outcome['missing']} missing, {outcome['wrong']} wrong afterwards"
    if errors:
        line += f"; writer errors: {errors[0]}"
    return line


def lockwait_runs(run: Run, a: Adapter) -> None:
    """Instrumented logshelf writer runs: per-write latency and writer-lock
    waits, pooled over the repeats (``bench_store.py --multi`` of issue 3)."""
    procs = run.s.procs
    count = run.s.n // procs
    write_ns: list[int] = []
    lock_ns: list[int] = []
    failure = ""
    for _ in range(run.s.repeats):
        path = run.fresh_dir(a.name)
        reports = run_writers(a.name, path, procs, count, run.s.budget, instrument=True)
        failure = failure or next((rep.error for rep in reports if rep.error), "")
        for rep in reports:
            write_ns.extend(rep.write_ns)
            lock_ns.extend(rep.lock_ns)
        acknowledged = [
            ("small", rep.worker * count + j, 0) for rep in reports for j in range(rep.done)
        ]
        outcome = run.verify(a, path, acknowledged)
        if problems(outcome):
            failure = failure or describe_problem(outcome)
        shutil.rmtree(path, ignore_errors=True)
    for workload, values in (("write-latency", write_ns), ("lock-wait", lock_ns)):
        r = run.result(workload, a.name, unit="ms")
        if failure or not values:
            r.fail(failure or "no samples")
            print(f"  {a.name:17} {workload}: {r.detail}", flush=True)
            continue
        ms = sorted(v / 1e6 for v in values)
        r.samples = [ms[-1]]
        r.extra = {
            "count": len(ms),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "p99.9_ms": percentile(ms, 99.9),
            "max_ms": ms[-1],
            "over_target": sum(v > report.TARGET_LOCK_WAIT_MS for v in ms),
        }
        e = r.extra
        print(
            f"  {a.name:17} {workload}: p50 {e['p50_ms']:.3f} ms, p99 {e['p99_ms']:.3f} ms, "
            f"p99.9 {e['p99.9_ms']:.3f} ms, max {e['max_ms']:.1f} ms; "
            f"{e['over_target']} of {len(ms):,} over {report.TARGET_LOCK_WAIT_MS:g} ms",
            flush=True,
        )


def build_store(a: Adapter, path: str, size: int) -> None:
    """Fill a store with small keys 0..size-1 through its bulk path (untimed)."""
    h = a.open(path)
    try:
        for start in range(0, size, BUILD_SLICE):
            h.bulk_set(make_items(range(start, min(size, start + BUILD_SLICE))))
    finally:
        h.close()


def reopen_size(run: Run, size: int) -> None:
    """Reopen + first read and memory, each in new processes, for stores of
    ``size`` keys. Adapters of one family share one built store."""
    built: dict[str, str] = {}
    for a in run.adapters_for("reopen"):
        if a.max_reopen_keys is not None and size > a.max_reopen_keys:
            r = run.result(f"reopen-{size}", a.name, unit="ms")
            r.status, r.detail = "skipped", a.reopen_note
            print(f"  {a.name:17} {size:>9,} keys: skipped ({a.reopen_note})", flush=True)
            continue
        workloads = (f"reopen-{size}", f"memory-{size}", f"rss-{size}")
        line = guarded(run, a, workloads, partial(reopen_one, run, a, size, built))
        print(f"  {a.name:17} {size:>9,} keys: {line}", flush=True)
    for path in built.values():
        shutil.rmtree(path, ignore_errors=True)


def reopen_one(run: Run, a: Adapter, size: int, built: dict[str, str]) -> str:
    """Build (once per family) and measure one adapter's store of ``size`` keys."""
    family = a.family or a.name
    note = ""
    if family not in built:
        path = run.fresh_dir(family)
        built[family] = path
        started = time.perf_counter()
        build_store(a, path, size)
        note = f"built in {time.perf_counter() - started:.1f} s; "
    path = built[family]
    retained, peak = run_fresh(_memory_child, a.name, path)  # also warms the page cache
    timings: list[float] = []
    grown: list[int] = []
    for _ in range(run.s.repeats):
        i = run.rng.randrange(size)
        seconds, rss = run_fresh(_reopen_child, a.name, path, ("small", i, 0))
        timings.append(seconds * 1e3)
        grown.append(rss)
        if seconds > REOPEN_PATIENCE_S:
            break
    r = run.result(f"reopen-{size}", a.name, unit="ms")
    r.samples = timings
    r.extra["slow_reopen_cut"] = len(timings) < run.s.repeats
    mem = run.result(f"memory-{size}", a.name, unit="B/key")
    mem.samples = [retained / size]
    mem.extra = {"retained_bytes": retained, "peak_bytes": peak}
    rss_r = run.result(f"rss-{size}", a.name, unit="B/key")
    rss_r.samples = [g / size for g in grown]
    disk = disk_usage(path)[0]
    return (
        f"{note}reopen {median(timings):,.1f} ms, heap {retained / size:,.1f} B/key, "
        f"RSS {median(grown) / size:,.1f} B/key, disk {disk / size:,.1f} B/key"
    )


# ----------------------------------------------------------------------------
# the run


def guarded(run: Run, a: Adapter, workloads: Sequence[str], body: Callable[[], str]) -> str:
    """Run one adapter's round; if the system raises, mark ``workloads`` as
    failed for it (no number counts) and go on with the others."""
    try:
        return body()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        for workload in workloads:
            run.result(workload, a.name).fail(reason)
        run.checks[a.name]["errors"].append(reason)
        return f"FAILED: {reason}"


def run_all(run: Run) -> None:
    """Every selected workload group, in order; adapters take turns per repeat."""
    s = run.s
    sections: list[tuple[str, str, Callable[[], None]]] = [
        (
            "basic",
            f"insert, random read, overwrite, 90/10 mix, delete half: N={s.n:,}",
            lambda: basic_section(run),
        ),
        (
            "large",
            f"{s.large_count} values of 1 MiB: write, then read",
            lambda: large_section(run),
        ),
        (
            "durability",
            f"logshelf durability modes: {s.durability_n:,} single writes",
            lambda: durability_section(run),
        ),
        (
            "multiprocess",
            f"{s.procs} processes writing {s.n // s.procs:,} records each",
            lambda: multiprocess_section(run),
        ),
        (
            "lockwait",
            f"logshelf write latency and writer-lock waits, {s.procs} writers",
            lambda: lockwait_section(run),
        ),
        (
            "reopen",
            "reopen + first read, memory (fresh processes)",
            lambda: reopen_section(run),
        ),
    ]
    for group, title, body in sections:
        if group not in s.groups:
            continue
        print(f"\n== {title} ==", flush=True)
        started = time.perf_counter()
        body()
        print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def basic_section(run: Run) -> None:
    """The basic workloads, adapters taking turns within each repeat."""
    adapters = run.adapters_for("basic")
    data = basic_data(run)
    for repeat in range(run.s.repeats):
        for a in adapters:
            line = guarded(run, a, BASIC_WORKLOADS, partial(basic_round, run, a, data))
            print(f"  {a.name:17} repeat {repeat + 1}: {line}", flush=True)


def large_section(run: Run) -> None:
    """Large values, adapters taking turns within each repeat."""
    count = run.s.large_count
    if not count:
        return
    keys = [large_key(i) for i in range(count)]
    values = [large_value(i) for i in range(count)]
    for repeat in range(run.s.repeats):
        for a in run.adapters_for("large"):
            line = guarded(
                run,
                a,
                ("large-write", "large-read"),
                partial(large_round, run, a, keys, values),
            )
            print(f"  {a.name:17} repeat {repeat + 1}: {line}", flush=True)


def durability_section(run: Run) -> None:
    """logshelf's durability modes (and the raw baseline), taking turns."""
    items = make_items(range(run.s.durability_n))
    for repeat in range(run.s.repeats):
        for a in run.adapters_for("durability"):
            line = guarded(run, a, ("durability",), partial(durability_round, run, a, items))
            print(f"  {a.name:17} repeat {repeat + 1}: {line}", flush=True)


def multiprocess_section(run: Run) -> None:
    """Concurrent writers for every adapter that claims to support them."""
    for repeat in range(run.s.repeats):
        for a in run.adapters_for("multiprocess"):
            line = guarded(run, a, ("multiprocess",), partial(multiprocess_round, run, a))
            print(f"  {a.name:17} repeat {repeat + 1}: {line}", flush=True)


def lockwait_section(run: Run) -> None:
    """Instrumented logshelf writers."""
    for a in run.adapters_for("lockwait"):
        lockwait_runs(run, a)


def reopen_section(run: Run) -> None:
    """Reopen and memory at every size."""
    for size in run.s.reopen_sizes:
        reopen_size(run, size)


def document(run: Run, env: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The results document (what ``--json`` writes and ``report`` reads)."""
    adapters = {}
    for name in run.s.adapters:
        a = BY_NAME[name]
        adapters[name] = {
            "label": a.label,
            "note": a.note,
            "version": a.version(),
            "missing": a.missing(),
            "multiprocess": a.multiprocess,
            "workloads": sorted(a.workloads),
            "persistence": run.checks[name],
        }
    return {
        "suite": "benchmarks/bench_peers.py",
        "settings": asdict(run.s),
        "environment": env,
        "adapters": adapters,
        "results": [asdict(r) for r in run.results.values()],
        "elapsed_s": elapsed,
    }


def parse_args(
    argv: Sequence[str] | None,
) -> tuple[Settings, argparse.Namespace] | None:
    """Command line -> settings and the raw arguments (None after ``--list``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add(
        "-n",
        type=int,
        default=None,
        help="small records (default 100,000; 2,000 with --quick)",
    )
    add(
        "--repeats",
        type=int,
        default=None,
        help="runs per measurement, median reported (3; 1 with --quick)",
    )
    add(
        "--quick",
        action="store_true",
        help="small sizes, one repeat, no 100k/1M reopen: < 1 minute",
    )
    add(
        "--budget",
        type=float,
        default=None,
        help="seconds after which a timed loop stops early (10; 0.25 with --quick)",
    )
    add(
        "--large",
        type=int,
        default=None,
        help="1 MiB values per large-value run (64; 8 with --quick)",
    )
    add(
        "--durability-n",
        type=int,
        default=None,
        help="writes per durability mode (min(N, 10,000))",
    )
    add("--procs", type=int, default=4, help="writer processes (4)")
    add(
        "--reopen-sizes",
        default=None,
        help="comma-separated key counts for reopen (100000,1000000; N with --quick)",
    )
    add("--adapters", default=None, help="comma-separated adapters (default: all)")
    add("--skip", default="", help="comma-separated adapters to leave out")
    add(
        "--workloads",
        default=",".join(GROUPS),
        help=f"comma-separated groups of {GROUPS}",
    )
    add("--json", metavar="PATH", help="write every sample and the environment to PATH")
    add(
        "--dir",
        metavar="DIR",
        help="where to create temporary stores (system temp dir)",
    )
    add("--seed", type=int, default=12345, help="seed of orders and samples (12345)")
    add(
        "--list",
        action="store_true",
        help="list the adapters and whether they can run here",
    )
    args = parser.parse_args(argv)
    if args.list:
        for a in ADAPTERS:
            print(f"{a.name:18} {a.missing() or 'ok':40} {a.note}")
        return None
    quick = args.quick
    n = args.n if args.n is not None else (2_000 if quick else 100_000)
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    if args.reopen_sizes:
        sizes = sorted({int(x) for x in args.reopen_sizes.split(",") if x})
    else:
        sizes = [n] if quick else sorted({100_000, 1_000_000})
    names = args.adapters.split(",") if args.adapters else [a.name for a in ADAPTERS]
    skip = {x for x in args.skip.split(",") if x}
    unknown = [x for x in [*names, *skip] if x not in BY_NAME]
    groups = [g for g in args.workloads.split(",") if g]
    bad_groups = [g for g in groups if g not in GROUPS]
    if unknown or bad_groups:
        parser.error(f"unknown adapters {unknown} or workloads {bad_groups}")
    if n < max(args.procs, 2) or repeats < 1 or args.procs < 1:
        parser.error("need -n >= --procs >= 1 and --repeats >= 1")
    return Settings(
        n=n,
        repeats=repeats,
        quick=quick,
        budget=args.budget if args.budget is not None else (0.25 if quick else 10.0),
        large_count=args.large if args.large is not None else (8 if quick else 64),
        durability_n=args.durability_n if args.durability_n is not None else min(n, 10_000),
        procs=args.procs,
        reopen_sizes=sizes,
        seed=args.seed,
        groups=groups,
        adapters=[x for x in names if x not in skip],
    ), args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; print the tables; write ``--json``."""
    parsed = parse_args(argv)
    if parsed is None:
        return 0
    settings, args = parsed
    env = environment()
    import logshelf

    env["has_compact"] = hasattr(logshelf.Shelf, "compact")
    env["shelve_dbm"] = shelve_backend()
    print(
        f"logshelf side-by-side benchmark: N={settings.n:,}, median of {settings.repeats}, "
        f"budget {settings.budget:g} s per timed loop; Python {env['python']}, {env['cpus']} CPUs "
        f"({env['cpu_model']}); shelve uses {env['shelve_dbm']}; logshelf {env['logshelf']} from "
        f"{env['logshelf_path']} (git {env['git']}, source sha256 {env['source_sha256']})"
    )
    for name in settings.adapters:
        missing = BY_NAME[name].missing()
        if missing:
            print(f"  {name}: {missing}; skipped")
    preload(["logshelf", "benchlib", "adapters", "report"])
    root = tempfile.mkdtemp(prefix="logshelf-peers-", dir=args.dir)
    run = Run(settings, root)
    started = time.perf_counter()
    try:
        run_all(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if source_fingerprint() != env["source_sha256"]:
        print(
            "\nWARNING: logshelf's source changed during this run; the numbers mix "
            "versions. Run again.",
            file=sys.stderr,
        )
    doc = document(run, env, elapsed)
    print(f"\n== summary ({elapsed:.0f} s) ==\n")
    for table in report.all_tables(doc):
        print(table.text())
    noisy = report.noisy(doc)
    if noisy:
        print("repeats spread by more than 25% of their median: " + ", ".join(noisy))
    failures = {n: c["failed"] for n, c in run.checks.items() if c["failed"]}
    for name, failed in failures.items():
        print(f"PERSISTENCE CHECK FAILED for {name}: {failed[0]}")
    for name, checks in run.checks.items():
        for error in checks["errors"]:
            print(f"ERROR: {name} raised {error}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"raw results written to {args.json}")
    return 0


def shelve_backend() -> str:
    """Name of the dbm module ``shelve.open`` picks on this Python."""
    import dbm
    import shelve

    directory = tempfile.mkdtemp(prefix="logshelf-bench-probe-")
    try:
        with shelve.open(os.path.join(directory, "probe"), "c") as db:
            db["probe"] = 1
        return dbm.whichdb(os.path.join(directory, "probe")) or "unknown"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
