"""Keep an application's state between runs, and resume after a crash.

Run:  python examples/persist_state.py [FOLDER] [--crash-at STEP]

The state lives in FOLDER/state.db (default FOLDER: $LOGSHELF_EXAMPLES_DIR,
else the current directory). Each run counts itself, then works through a
job of 10 steps, saving progress after each one. With --crash-at STEP the
process kills itself (os._exit, no cleanup, as kill -9 or a power cut
would) after saving that step; the next run resumes where it stopped.
How-to: docs/how-to/persist-state.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import logshelf

STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", default=os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
    parser.add_argument("--crash-at", type=int, default=None)
    args = parser.parse_args()
    Path(args.folder).mkdir(parents=True, exist_ok=True)
    path = Path(args.folder) / "state.db"

    # --8<-- [start:state]
    with logshelf.open(path) as db:
        # Read-modify-write inside a transaction: safe even if two copies
        # of the program start at once.
        with db.transaction():
            db["runs"] = db.get("runs", 0) + 1
        settings = db.setdefault("settings", {"theme": "dark", "page_size": 50})
        print(f"run {db['runs']}; settings {settings}")

        job = db.get("job", {"done": 0, "results": []})
        if 0 < job["done"] < STEPS:
            print(f"resuming at step {job['done'] + 1}")
        for step in range(job["done"] + 1, STEPS + 1):
            job["results"].append(step * step)  # the work of one step
            job["done"] = step
            db["job"] = job  # on disk when this returns: a crash keeps it
            if step == args.crash_at:
                print(f"crashing after step {step}", flush=True)
                os._exit(1)  # no close(), no flush: the hard way
        print(f"job complete: {job['done']} steps, sum {sum(job['results'])}")
    # --8<-- [end:state]


if __name__ == "__main__":
    main()
