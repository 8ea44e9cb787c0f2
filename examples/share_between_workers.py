"""Share one store, and one cache, between worker processes.

Run:  python examples/share_between_workers.py [FOLDER]

Writes FOLDER/shared.db and FOLDER/shared-cache (default FOLDER:
$LOGSHELF_EXAMPLES_DIR, else the current directory); each run starts from
empty. How-to: docs/how-to/share-between-workers.md.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import logshelf

WORKERS = 4
INCREMENTS = 50


# --8<-- [start:worker]
def count(path: Path, worker: int) -> None:
    """One worker: its own handle, opened in the worker process."""
    with logshelf.open(path) as db:
        for i in range(INCREMENTS):
            with db.transaction():  # read-modify-write, atomic across processes
                db["counter"] = db.get("counter", 0) + 1
            db[f"result:{worker}:{i}"] = i * i  # plain writes need no transaction


# --8<-- [end:worker]


# --8<-- [start:flight]
def features(shard: int, log_path: Path) -> list[int]:
    """A slow computation; every actual run is logged in a store."""
    with logshelf.open(log_path) as log, log.transaction():
        log["runs"] = log.get("runs", 0) + 1
    time.sleep(0.5)
    return [shard] * 3


def ask(cache_path: Path, log_path: Path, barrier: Any) -> None:
    cache = logshelf.Cache(cache_path)
    cached = cache.memoize(ignore=("log_path",))(features)
    barrier.wait()  # every worker asks for the same cold key at once
    assert cached(7, log_path) == [7, 7, 7]
    cache.close()


# --8<-- [end:flight]


def main() -> None:
    here = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
    here.mkdir(parents=True, exist_ok=True)
    store, cache, log = here / "shared.db", here / "shared-cache", here / "runs.db"
    for path in (store, cache, log):
        logshelf.open(path, "n").close()  # start empty (a Cache is a store too)

    # --8<-- [start:main]
    # "spawn" starts clean interpreters: each worker opens its own handle.
    # (A handle opened before a fork also works in the child.)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=count, args=(store, n)) for n in range(WORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with logshelf.open(store, "r") as db:
        print(f"counter: {db['counter']} (expected {WORKERS * INCREMENTS})")
        print(f"results: {len(db.keys('result:'))} keys; verify: {db.verify() or 'no problem'}")
    # --8<-- [end:main]

    barrier = ctx.Barrier(WORKERS)
    askers = [ctx.Process(target=ask, args=(cache, log, barrier)) for _ in range(WORKERS)]
    for w in askers:
        w.start()
    for w in askers:
        w.join()
    with logshelf.open(log, "r") as db:
        print(f"{WORKERS} workers asked for one cold key; it was computed {db['runs']} time(s)")
    if any(w.exitcode for w in workers + askers):
        sys.exit("a worker failed")


if __name__ == "__main__":
    main()
