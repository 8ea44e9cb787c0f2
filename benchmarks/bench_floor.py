#!/usr/bin/env python3
"""How close can any design get to the raw baseline? The floors under issue 2 and 3's targets.

Run: ``python benchmarks/bench_floor.py`` (under a minute; ``--quick``: 10 s).

The raw baseline of ``bench_peers.py`` pickles each value into a
Python-buffered file: a write costs no system call at all. logshelf's
single-key write must do more, whatever its code looks like, because the
issues require it:

* the write must reach the kernel before ``db[k] = v`` returns (another
  process sees it on its next access; a ``kill -9`` right after loses
  nothing acknowledged): at least one ``write(2)`` per write;
* writers serialize on a lock, and the writer learns the end of the log from
  the file (other processes may have appended): a lock and an unlock, and a
  size check, per write;
* every record is checksummed (header + key, value).

Part 1 builds that pipeline up one step at a time, in plain straight-line
Python with no engine around it, and prints each step's time per write and
its ratio to the raw baseline, next to logshelf itself (one key per write and
in transactions of 100). The "floor" line is the least a design with a
lock system call per write can cost. The two "lease" lines are the least
without one (logshelf's writer lease, ``docs/concurrency.md``): with a
write(2) per record, and with a copy into a preallocated shared memory map
instead, the design issue 15's 2.0x insert target would need.

Part 1b does the same for a random read: a slice of a memory-mapped
record, then both checksums and the key comparison, then the check that
notices other processes' writes, next to logshelf's ``db[key]``. That check
is shown both ways: the size check (``lseek``) every read used to make, and
the comparison with a shared change counter (a memory map, no system call)
that logshelf makes now (docs/format.md §6.1).

Part 2 is about the 5 ms ceiling on lock waits with 4 writer processes on
this 2-core machine. It runs the 4 processes twice: once taking turns on a
``flock`` for every write (the lock waits), and once *without any lock*,
each process measuring how long the same few microseconds of work take.
The second run's maximum is pure scheduling: a process that is preempted
waits for a time slice, lock or no lock, so no lock design can bring the
measured maximum wait below it.
"""

from __future__ import annotations

import argparse
import fcntl
import mmap
import multiprocessing as mp
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

import adapters
import benchlib

import logshelf
from logshelf import _format as fmt
from logshelf import _writer

# A step writes ``items`` into a new store in ``directory`` and returns the
# seconds its write loop took (opening and closing are not timed, as in
# bench_peers.py's insert workload).
Step = Callable[[str, list[tuple[str, Any]]], float]


def _raw(directory: str, items: list[tuple[str, Any]]) -> float:
    log = benchlib.RawLog(directory)
    start = time.perf_counter()
    for key, value in items:
        log[key] = value
    log.flush()
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed


def _pipeline(lock: bool, size_check: bool, header: bool, batch: int = 1) -> Step:
    """One write(2) per ``batch`` records (and one lock, one size check), with
    the chosen extra steps, as lean as straight-line Python allows."""

    def run(directory: str, items: list[tuple[str, Any]]) -> float:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        lock_fd = os.open(os.path.join(directory, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        index: dict[str, int] = {}
        end = 0
        dumps, write, crc32 = pickle.dumps, os.write, zlib.crc32
        flock, lseek = fcntl.flock, os.lseek
        ex, un = fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN
        pack = fmt.pack_record
        start = time.perf_counter()
        try:
            if batch == 1:
                for key, value in items:
                    data = dumps(value, 5)
                    if header:
                        data = pack(7, 1, fmt.KIND_PUT, True, 0, key.encode(), data, crc32(data), 0)
                    if lock:
                        flock(lock_fd, ex)
                    if size_check:
                        end = lseek(fd, 0, os.SEEK_END)
                    write(fd, data)
                    index[key] = end
                    end += len(data)
                    if lock:
                        flock(lock_fd, un)
                return time.perf_counter() - start
            for first in range(0, len(items), batch):
                if lock:
                    flock(lock_fd, ex)
                if size_check:
                    end = lseek(fd, 0, os.SEEK_END)
                parts = []
                for key, value in items[first : first + batch]:
                    data = dumps(value, 5)
                    if header:
                        data = pack(7, 1, fmt.KIND_PUT, True, 0, key.encode(), data, crc32(data), 0)
                    parts.append(data)
                    index[key] = end
                    end += len(data)
                write(fd, b"".join(parts))
                if lock:
                    flock(lock_fd, un)
            return time.perf_counter() - start
        finally:
            os.close(fd)
            os.close(lock_fd)

    return run


def _lease_floor(mapped: bool) -> Step:
    """What a writer holding a lease must still do per record: pickle, the
    checksummed header, the change counter's two one-byte stores, and the
    append: one write(2), or (``mapped``) a copy into a file that is
    preallocated and mapped shared, so no system call at all. A copy into a
    shared map is in the page cache when it returns: it survives ``kill -9``
    and other processes see it, as a write(2) does."""

    def run(directory: str, items: list[tuple[str, Any]]) -> float:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, "log"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        counter = mmap.mmap(-1, 16)
        size = 64 << 20
        if mapped:
            os.ftruncate(fd, size)
            log = mmap.mmap(fd, size)
        index: dict[str, int] = {}
        end = 0
        dumps, write, crc32, pack = pickle.dumps, os.write, zlib.crc32, fmt.pack_record
        start = time.perf_counter()
        try:
            for key, value in items:
                data = dumps(value, 5)
                data = pack(7, 1, fmt.KIND_PUT, True, 0, key.encode(), data, crc32(data), 0)
                counter[8] = counter[8] | 1
                if mapped:
                    if end + len(data) > size:
                        raise RuntimeError("preallocate more for this many records")
                    log[end : end + len(data)] = data
                else:
                    write(fd, data)
                index[key] = end
                end += len(data)
                counter[8] = (counter[8] + 1) & 0xFE
            return time.perf_counter() - start
        finally:
            if mapped:
                log.close()
            counter.close()
            os.close(fd)

    return run


def _logshelf(tx: int) -> Step:
    def run(directory: str, items: list[tuple[str, Any]]) -> float:
        with logshelf.open(directory) as db:
            start = time.perf_counter()
            if tx <= 1:
                for key, value in items:
                    db[key] = value
            else:
                for first in range(0, len(items), tx):
                    with db.transaction():
                        for key, value in items[first : first + tx]:
                            db[key] = value
            return time.perf_counter() - start

    return run


class _MappedAppends:
    """A stand-in for the ``os.write`` of logshelf's single-key write path
    (``_writer._os_write``): each record is copied into the segment,
    preallocated and mapped shared, at the end the stand-in keeps. A
    prototype to measure, not a design: no other process learns that end,
    and the file is cut back to it before the store closes."""

    SIZE = 64 << 20

    def __init__(self) -> None:
        self.maps: dict[int, tuple[mmap.mmap, list[int]]] = {}

    def __call__(self, fd: int, data: bytes) -> int:
        entry = self.maps.get(fd)
        if entry is None:
            end = os.fstat(fd).st_size
            os.posix_fallocate(fd, 0, self.SIZE)
            entry = self.maps[fd] = (mmap.mmap(fd, self.SIZE), [end])
        log, ends = entry
        at = ends[0]
        if at + len(data) > self.SIZE:
            raise RuntimeError("preallocate more for this many records")
        log[at : at + len(data)] = data
        ends[0] = at + len(data)
        return len(data)

    def close(self) -> None:
        for fd, (log, ends) in self.maps.items():
            log.close()
            os.ftruncate(fd, ends[0])
        self.maps.clear()


def _logshelf_mapped(directory: str, items: list[tuple[str, Any]]) -> float:
    """logshelf's own write path, one key per write, its ``write(2)``
    replaced by :class:`_MappedAppends`: how far the mapped append alone
    takes the product's path (every other step of it unchanged)."""
    appends = _MappedAppends()
    with logshelf.open(directory, max_segment_size=_MappedAppends.SIZE - (1 << 20)) as db:
        real = _writer._os_write
        _writer._os_write = appends
        try:
            start = time.perf_counter()
            for key, value in items:
                db[key] = value
            seconds = time.perf_counter() - start
        finally:
            _writer._os_write = real
            appends.close()
    with logshelf.open(directory, "r") as db:  # the records really are where they belong
        if len(db) != len(dict(items)) or any(db[key] != value for key, value in items):
            raise RuntimeError("the mapped appends did not write every record")
    return seconds


def _semidbm(directory: str, items: list[tuple[str, Any]]) -> float:
    """semidbm, the fastest peer at single-key writes, through the adapter
    ``bench_peers.py`` measures it with (nan when it is not installed)."""
    try:
        handle = adapters.SemidbmHandle(directory)
    except ImportError:
        return float("nan")
    m = handle.mapping
    try:
        start = time.perf_counter()
        for key, value in items:
            m[key] = value
        return time.perf_counter() - start
    finally:
        handle.close()


STEPS: list[tuple[str, Step]] = [
    ("raw baseline (buffered file, no system call per write)", _raw),
    ("+ one write(2) per record", _pipeline(lock=False, size_check=False, header=False)),
    ("+ checksummed 32-byte header", _pipeline(lock=False, size_check=False, header=True)),
    ("+ flock / unlock per write", _pipeline(lock=True, size_check=False, header=True)),
    ("+ size check (lseek): the floor", _pipeline(lock=True, size_check=True, header=True)),
    ("a lease instead of the lock: header, counter, write(2)", _lease_floor(mapped=False)),
    ("lease, and a copy into a shared map instead of write(2)", _lease_floor(mapped=True)),
    ("logshelf, one key per write", _logshelf(1)),
    ("logshelf, write(2) replaced by a shared-map copy", _logshelf_mapped),
    ("semidbm, one key per write", _semidbm),
    (
        "batches of 100: header, lock, size check, one write(2)",
        _pipeline(lock=True, size_check=True, header=True, batch=100),
    ),
    ("logshelf, transactions of 100", _logshelf(100)),
]


def _report(title: str, unit: str, labels: list[str], times: list[float], note: str) -> None:
    """Print one part's steps with their times and ratios to the first (the raw baseline)."""
    print(title)
    print(f"  {'step':56} {unit:>9} {'x raw':>7}")
    for label, us in zip(labels, times, strict=True):
        print(f"  {label:56} {us:9.2f} {us / times[0]:6.2f}x")
    print(f"  ({note})")


def part1(n: int, repeats: int) -> None:
    items = benchlib.make_items(range(n))
    base = tempfile.mkdtemp(prefix="logshelf-floor-")
    try:
        times: list[float] = []
        for _, step in STEPS:
            samples = []
            for r in range(repeats):
                directory = os.path.join(base, f"{len(times)}-{r}")
                benchlib.collect()
                samples.append(step(directory, items) / n * 1e6)
                shutil.rmtree(directory, ignore_errors=True)
            times.append(benchlib.median(samples))
        _report(
            f"Part 1: time per write, {n:,} small records, median of {repeats}",
            "us/write",
            [label for label, _ in STEPS],
            times,
            "targets: 2.0x for one key per write, issue 2; 1.2x in transactions, issue 3",
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def part1b(n: int, repeats: int) -> None:
    """The read side: random reads of every key, built up the same way."""
    items = benchlib.make_items(range(n))
    order = [items[i][0] for i in random.Random(12345).sample(range(n), n)]
    base = tempfile.mkdtemp(prefix="logshelf-floor-")
    try:
        raw = benchlib.RawLog(os.path.join(base, "raw"))
        for key, value in items:
            raw[key] = value
        raw.flush()
        # The same records logshelf writes, in one file, read through a map.
        log = os.path.join(base, "log")
        offsets: dict[str, int] = {}
        with open(log, "wb") as f:
            for key, value in items:
                data = pickle.dumps(value, 5)
                offsets[key] = f.tell()
                kb = key.encode()
                f.write(fmt.pack_record(7, 1, fmt.KIND_PUT, True, 0, kb, data, zlib.crc32(data), 0))
        fd = os.open(log, os.O_RDONLY)
        m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        # A change counter like logshelf's: 16 bytes mapped shared.
        counter_path = os.path.join(base, "counter")
        with open(counter_path, "wb") as f:
            f.write(bytes(16))
        counter_fd = os.open(counter_path, os.O_RDONLY)
        counter = mmap.mmap(counter_fd, 16, access=mmap.ACCESS_READ)
        os.close(counter_fd)
        db = logshelf.open(os.path.join(base, "db"))
        db.update(dict(items))

        def raw_reads() -> None:
            for key in order:
                raw[key]

        def mapped(checks: bool, fresh: str) -> Callable[[], None]:
            def run() -> None:
                unpack, crc32, loads, lseek = (
                    fmt.RECORD_HEADER.unpack_from,
                    zlib.crc32,
                    pickle.loads,
                    os.lseek,
                )
                seen = counter[8:16]
                for key in order:
                    if fresh == "lseek":
                        lseek(fd, 0, os.SEEK_END)
                    elif fresh == "counter" and counter[8:16] != seen:
                        raise AssertionError("nobody writes the counter here")
                    at = offsets[key]
                    hcrc, vcrc, _, vlen, _, klen, _, _ = unpack(m, at)
                    keyend = at + 32 + klen
                    value = m[keyend : keyend + vlen]
                    if checks and (
                        crc32(m[at + 4 : keyend], 7) != hcrc
                        or crc32(value) != vcrc
                        or m[at + 32 : keyend] != key.encode()
                    ):
                        raise AssertionError(f"record of {key!r} does not verify")
                    loads(value)

            return run

        def logshelf_reads() -> None:
            for key in order:
                db[key]

        steps: list[tuple[str, Callable[[], None]]] = [
            ("raw baseline (dict, pread, pickle.loads)", raw_reads),
            ("slice from a memory map, pickle.loads", mapped(False, "")),
            ("+ both checksums and the key comparison", mapped(True, "")),
            ("+ size check (lseek)", mapped(True, "lseek")),
            ("+ change counter instead of lseek: the floor", mapped(True, "counter")),
            ("logshelf, db[key]", logshelf_reads),
        ]
        times = []
        for _, step in steps:
            samples = []
            for _ in range(repeats):
                benchlib.collect()
                start = time.perf_counter()
                step()
                samples.append((time.perf_counter() - start) / n * 1e6)
            times.append(benchlib.median(samples))
        _report(
            f"\nPart 1b: time per random read, {n:,} small records, median of {repeats}",
            "us/read",
            [label for label, _ in steps],
            times,
            "target: 1.3x for random reads, issue 2",
        )
        db.close()
        raw.close()
        m.close()
        counter.close()
        os.close(fd)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _worker(path: str, locked: bool, seconds: float, queue: Any) -> None:
    """Write small records for ``seconds``; report the slowest lock wait (or,
    unlocked, the slowest stretch of the same work) and the median."""
    log = path + (".log" if locked else f".{os.getpid()}.log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lock_fd = os.open(path + ".LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    value = benchlib.make_value(1)
    clock = time.perf_counter_ns
    waits: list[int] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = pickle.dumps(value, 5)
            start = clock()
            if locked:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                waits.append(clock() - start)
                os.write(fd, data)
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
            else:
                # The same step a lock wait would time, without a lock: any
                # long sample is the scheduler taking the CPU away.
                os.write(fd, data)
                waits.append(clock() - start)
    finally:
        os.close(fd)
        os.close(lock_fd)
    waits.sort()
    n = len(waits)
    queue.put((n, waits[n // 2], waits[int(n * 0.99)], waits[int(n * 0.999)], waits[-1]))


def part2(procs: int, seconds: float) -> None:
    ctx = mp.get_context("fork")
    base = tempfile.mkdtemp(prefix="logshelf-floor-")
    print(f"\nPart 2: {procs} processes writing for {seconds:g} s on {os.cpu_count()} cores")
    print(f"  {'run':36} {'samples':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    try:
        for label, locked in (
            ("flock per write: lock waits", True),
            ("no lock: the same step, timed", False),
        ):
            queue = ctx.Queue()
            workers = [
                ctx.Process(target=_worker, args=(os.path.join(base, "w"), locked, seconds, queue))
                for _ in range(procs)
            ]
            for w in workers:
                w.start()
            results = [queue.get() for _ in workers]
            for w in workers:
                w.join()
            count = sum(r[0] for r in results)
            p50 = max(r[1] for r in results) / 1e6
            p99 = max(r[2] for r in results) / 1e6
            p999 = max(r[3] for r in results) / 1e6
            worst = max(r[4] for r in results) / 1e6
            print(f"  {label:36} {count:9,} {p50:8.3f} {p99:8.3f} {p999:9.3f} {worst:8.2f}")
        print(
            "  (percentiles: the worst process's; issue 15's ceiling on p99.9 is 5 ms,"
            " issue 3's on the maximum)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="records in part 1 (100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per step, median (3)")
    parser.add_argument("--procs", type=int, default=4, help="processes in part 2 (4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of part 2's runs (5)")
    parser.add_argument("--quick", action="store_true", help="10,000 records, 1 repeat, 1 s runs")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.seconds = 10_000, 1, 1.0
    part1(args.n, args.repeats)
    part1b(args.n, args.repeats)
    part2(args.procs, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
