"""Measure the writer-lock options issue 3 asks us to choose between.

Run: ``python benchmarks/bench_locks.py`` (about 20 s). It prints, for each
option, the uncontended cost of one acquire + release and, with two processes
taking turns on one lock, the hand-off latency and the longest wait.

Options measured:

* ``filelock-per-op``: a new ``filelock.FileLock`` per write (what a naive
  wrapper does): opens and closes the lock file every time.
* ``filelock-held``: one long-lived ``FileLock(thread_local=False)`` per
  handle with a 1 ms poll interval (logshelf's ``lock_backend="filelock"``).
* ``flock-held``: ``fcntl.flock`` on a descriptor kept open for the life of
  the handle, blocking in the kernel when contended (logshelf's default
  ``lock_backend="flock"``).
* ``logshelf``: logshelf's own ``WriterLock`` (flock-held plus the per-process
  re-entrant thread lock it shares between handles).
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import filelock

from logshelf._locking import WriterLock

Factory = Callable[[str], tuple[Callable[[], None], Callable[[], None]]]


def _filelock_per_op(path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    holder: list[filelock.FileLock] = []

    def acquire() -> None:
        lock = filelock.FileLock(path, poll_interval=0.001)
        lock.acquire()
        holder.append(lock)

    def release() -> None:
        holder.pop().release()

    return acquire, release


def _filelock_held(path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    lock = filelock.FileLock(path, thread_local=False, poll_interval=0.001)
    return lock.acquire, lock.release


def _flock_held(path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    return (lambda: fcntl.flock(fd, fcntl.LOCK_EX)), (lambda: fcntl.flock(fd, fcntl.LOCK_UN))


def _logshelf(path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    lock = WriterLock(path, "bench", None, "flock")
    # Closures keep the WriterLock alive (its finalizer releases the shared lock).
    return (lambda: lock.acquire()), (lambda: lock.release())


OPTIONS: dict[str, Factory] = {
    "filelock-per-op": _filelock_per_op,
    "filelock-held": _filelock_held,
    "flock-held": _flock_held,
    "logshelf": _logshelf,
}


def uncontended(name: str, path: str, rounds: int) -> float:
    """Microseconds per acquire + release with nobody else around (best of 3)."""
    acquire, release = OPTIONS[name](path)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            acquire()
            release()
        best = min(best, time.perf_counter() - start)
    return best / rounds * 1e6


def _contender(name: str, path: str, seconds: float, barrier: object, out: object) -> None:
    acquire, release = OPTIONS[name](path)
    waits = []
    barrier.wait()  # type: ignore[attr-defined]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        asked = time.perf_counter()
        acquire()
        waits.append(time.perf_counter() - asked)
        # A small critical section, like appending one record.
        time.sleep(0)
        release()
    out.put(waits)  # type: ignore[attr-defined]


def contended(name: str, path: str, seconds: float, procs: int) -> dict[str, float]:
    """Several processes hammering one lock: acquisitions/s and wait percentiles."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_contender, args=(name, path, seconds, barrier, out))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    waits: list[float] = []
    for _ in workers:
        waits.extend(out.get(timeout=seconds + 60))
    for w in workers:
        w.join()
    waits.sort()
    return {
        "acquisitions_per_s": len(waits) / seconds,
        "p50_us": statistics.median(waits) * 1e6,
        "p99_us": waits[int(len(waits) * 0.99)] * 1e6,
        "max_ms": waits[-1] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{'option':<18}{'uncontended us':>16}{'acq/s (contended)':>20}"
        f"{'p50 us':>10}{'p99 us':>10}{'max ms':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in OPTIONS:
            path = os.path.join(tmp, f"{name}.lock")
            cost = uncontended(
                name, path, args.rounds if name != "filelock-per-op" else args.rounds // 4
            )
            c = contended(name, path, args.seconds, args.procs)
            print(
                f"{name:<18}{cost:>16.2f}{c['acquisitions_per_s']:>20,.0f}"
                f"{c['p50_us']:>10.1f}{c['p99_us']:>10.1f}{c['max_ms']:>9.2f}"
            )


if __name__ == "__main__":
    main()
