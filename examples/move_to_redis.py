"""Write code today that can move to Redis when one machine is not enough.

Run:  python examples/move_to_redis.py [FOLDER]

The Redis backend is being built (issue 16) and is not in this version of
logshelf; this script runs on a local store in FOLDER (default:
$LOGSHELF_EXAMPLES_DIR, else the current directory). It shows the two things
that make the later move a one-line change: the location is a setting, and
the code uses only the mapping API and transactions. How-to:
docs/how-to/move-to-redis.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import logshelf

HERE = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
HERE.mkdir(parents=True, exist_ok=True)

# --8<-- [start:setting]
# Today a path; once the backend lands, "redis://host:6379/0?namespace=app".
LOCATION = os.environ.get("APP_STORE", str(HERE / "app.db"))
if LOCATION.startswith("redis://"):
    sys.exit("this version of logshelf has no Redis backend yet (issue 16)")
# --8<-- [end:setting]


# --8<-- [start:portable]
def record_visit(db: logshelf.Shelf, user: str) -> int:
    """Only the mapping API and a transaction: nothing tied to files."""
    with db.transaction():
        visits: int = db.get(f"visits:{user}", 0) + 1
        db[f"visits:{user}"] = visits
    return visits


with logshelf.open(LOCATION) as db:
    for user in ("ada", "bob", "ada"):
        record_visit(db, user)
    print("visits:", {key: db[key] for key in sorted(db.keys("visits:"))})
# --8<-- [end:portable]

# --8<-- [start:export]
# A portable copy of the data, readable by any tool (and by import_from).
dump = HERE / "app.jsonl"
dump.unlink(missing_ok=True)
print("exported", logshelf.export(LOCATION, dump), "keys to", dump.name)
# --8<-- [end:export]
