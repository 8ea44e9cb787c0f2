"""Move a store to Redis when one machine is not enough.

Run:  python examples/move_to_redis.py [FOLDER]
      APP_STORE=redis://127.0.0.1:6379/0?namespace=app python examples/move_to_redis.py

The location is a setting: a path (default: FOLDER/app.db, FOLDER being
$LOGSHELF_EXAMPLES_DIR or the current directory) or a Redis URL, and the
code uses only the mapping API and transactions, so it runs unchanged on
either. With a Redis URL, the script also copies a local store into Redis:
the move itself. Needs ``pip install "logshelf[redis]"`` for a URL.
How-to: docs/how-to/move-to-redis.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import logshelf

HERE = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
HERE.mkdir(parents=True, exist_ok=True)

# --8<-- [start:setting]
# A path on one machine, "redis://host:6379/0?namespace=app" on many.
LOCATION = os.environ.get("APP_STORE", str(HERE / "app.db"))
# --8<-- [end:setting]


# --8<-- [start:portable]
def record_visit(db: logshelf.Shelf, user: str) -> int:
    """Only the mapping API and a transaction: nothing tied to files."""
    with db.transaction():
        visits: int = db.get(f"visits:{user}", 0) + 1
        db[f"visits:{user}"] = visits
    return visits


with logshelf.open(LOCATION, "n") as db:
    for user in ("ada", "bob", "ada"):
        record_visit(db, user)
    print("visits:", {key: db[key] for key in sorted(db.keys("visits:"))})
# --8<-- [end:portable]

if LOCATION.startswith(("redis://", "rediss://")):
    # --8<-- [start:move]
    local = HERE / "local.db"
    with logshelf.open(local, "n") as db:
        db.update({"user:ada": {"name": "Ada"}, "user:bob": {"name": "Bob"}})
    # The move: every key of the local store, written to Redis as one batch.
    with logshelf.open(local, "r") as source, logshelf.open(LOCATION, "w") as target:
        target.update(source.items())
        print("moved:", sorted(target.keys("user:")))
    # --8<-- [end:move]
else:
    # --8<-- [start:export]
    # A portable copy of the data, readable by any tool (and by import_from).
    dump = HERE / "app.jsonl"
    dump.unlink(missing_ok=True)
    print("exported", logshelf.export(LOCATION, dump), "keys to", dump.name)
    # --8<-- [end:export]
