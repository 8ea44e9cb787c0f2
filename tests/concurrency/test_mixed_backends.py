"""A "flock" handle and a "filelock" handle on one store exclude each other.

filelock 3.20.4 to 3.29.4 unlinked the lock file on release on Unix. A
"flock" handle keeps its descriptor open for its whole life, so it then locks
an unlinked inode while the next filelock acquire creates and locks a fresh
LOCK file: both write at once. Lost increments of a shared counter, or a LOCK
file that is gone or replaced, show it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import logshelf

INCREMENTS = 300  # per process; a few hundred contended holds suffice to lose one


@pytest.mark.timeout(60)
def test_flock_and_filelock_handles_never_hold_the_lock_together(
    workers: Any, tmp_path: Path
) -> None:
    """This process increments through "flock", a child through "filelock"; none is lost."""
    store = tmp_path / "store"
    with logshelf.open(store, lock_backend="flock") as db:
        db["n"] = 0
        lock_inode = os.stat(store / "LOCK").st_ino
        child = workers.spawn(
            "increment", store=str(store), key="n", count=INCREMENTS, lock_backend="filelock"
        )
        child.expect("ready")  # its handle is open; it starts on "go"
        child.send("go")
        mine: list[int] = []
        interleaved = False
        # Go on past INCREMENTS until the child's increments fall between two
        # of ours (else the test proves nothing), unless it has already exited.
        while len(mine) < INCREMENTS or not (interleaved or child.proc.poll() is not None):
            with db.transaction():
                n = db["n"] + 1
                db["n"] = n
            mine.append(n)
            interleaved = mine[-1] - mine[0] + 1 > len(mine)
        theirs = child.result(timeout=30)  # reaped by the fixture whatever happens
        assert interleaved, (mine[0], mine[-1], theirs)
        assert theirs["increasing"], theirs
        assert mine == sorted(set(mine))
        total = len(mine) + INCREMENTS
        assert db["n"] == total
    with logshelf.open(store, "r") as db:
        assert db["n"] == total
    # The lock file outlives every release, as the same inode: a "flock"
    # handle opened before any release still locks the file others lock.
    assert os.stat(store / "LOCK").st_ino == lock_inode
