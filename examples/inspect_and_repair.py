"""Inspect a damaged store from the shell, and rescue what is intact.

Run:  python examples/inspect_and_repair.py [FOLDER]

Builds FOLDER/app.db, damages one byte of one value on purpose, then runs
the commands a person would type (default FOLDER: $LOGSHELF_EXAMPLES_DIR,
else the current directory); each run starts from empty. Each command is
printed with "$ " before its output. How-to: docs/how-to/inspect-and-repair.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import logshelf

HERE = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
HERE.mkdir(parents=True, exist_ok=True)
os.chdir(HERE)  # the commands below use short relative paths
shutil.rmtree("app.db", ignore_errors=True)
shutil.rmtree("rescued.db", ignore_errors=True)


def shell(*args: str) -> int:
    """Run ``logshelf ARGS`` as a shell would (``python -m logshelf``
    works where the ``logshelf`` script is not on the PATH)."""
    print("$ logshelf " + " ".join(args), flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "logshelf", *args], stderr=subprocess.STDOUT, check=False
    )
    print(f"(exit code {done.returncode})", flush=True)
    return done.returncode


with logshelf.open("app.db") as db:
    for n in range(1, 6):
        db[f"user:{n}"] = {"name": f"user {n}", "visits": n * 10}
    db["config"] = {"theme": "dark"}
    segment, offset = db.locate("user:3")

# Damage: one flipped bit in the middle of user:3's record, as a failing
# disk or a stray write might leave it.
with open(Path("app.db") / segment, "r+b") as f:
    f.seek(offset + 40)
    byte = f.read(1)
    f.seek(offset + 40)
    f.write(bytes([byte[0] ^ 0x01]))

# --8<-- [start:commands]
shell("verify", "app.db")  # exit code 1: damaged
shell("ls", "app.db", "--long")  # keys, sizes, codecs, and where each record lives
shell("get", "app.db", "user:2")  # an intact value still reads
shell("get", "app.db", "user:3")  # the damaged one is refused, never returned wrong
shell("salvage", "app.db", "rescued.db")  # copy everything intact into a new store
shell("verify", "rescued.db")  # exit code 0
shell("stats", "rescued.db")
# --8<-- [end:commands]
