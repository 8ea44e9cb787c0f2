"""How long a write waits before ``LockTimeoutError``, against ``lock_timeout``.

Run: ``python benchmarks/bench_lock_wait.py`` (a few seconds). A child
process holds the writer lock in a transaction; this process then writes
with several ``lock_timeout`` values, under both lock backends, and prints
how long each write took to give up. The test suite asserts only the
outcome (the error, naming the store, and nothing written); the figures
live here, with no assertion, because a loaded machine stretches them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import logshelf


def _hold(store: str, ready: Connection, release: Connection) -> None:
    """Hold the writer lock (inside a transaction) until told to let go."""
    with logshelf.open(store) as db, db.transaction():
        db["held"] = True
        ready.send("locked")
        release.recv()


def _waits(db: logshelf.Shelf, repeats: int) -> list[float]:
    waits = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            db["blocked"] = 1
        except logshelf.LockTimeoutError:
            waits.append(time.perf_counter() - start)
        else:
            raise SystemExit("the write got the lock: the holder is not holding it")
    return waits


def _measure(store: str, backend: str, repeats: int) -> None:
    ctx = mp.get_context("spawn")
    # Writable handles take the lock briefly when they open: open them all
    # before the holder takes it.
    handles = {
        timeout: logshelf.open(store, lock_timeout=timeout, lock_backend=backend)
        for timeout in (0.0, 0.05, 0.2, 1.0)
    }
    ready_recv, ready_send = ctx.Pipe(duplex=False)
    release_recv, release_send = ctx.Pipe(duplex=False)
    holder = ctx.Process(target=_hold, args=(store, ready_send, release_recv))
    holder.start()
    try:
        if ready_recv.recv() != "locked":
            raise SystemExit("the holder did not take the lock")
        for timeout, db in handles.items():
            waits = _waits(db, repeats)
            print(
                f"{backend:<9} {timeout:>10.2f} s {statistics.median(waits):>10.3f} s "
                f"{max(waits):>7.3f} s"
            )
    finally:
        release_send.send("go")
        holder.join(30)
        if holder.is_alive():
            holder.kill()
            holder.join()
        for db in handles.values():
            db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="writes per timeout (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logshelf-lockwait-") as tmp:
        store = str(Path(tmp) / "store")
        logshelf.open(store).close()
        print(f"{'backend':<9} {'lock_timeout':>12} {'median wait':>12} {'max wait':>9}")
        for backend in ("flock", "filelock"):
            _measure(store, backend, args.repeats)


if __name__ == "__main__":
    main()
