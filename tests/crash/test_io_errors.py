"""I/O-error injection in the style of SQLite's: fail the Nth file-system
operation, for N = 1, 2, 3, ... until the workload gets through, and check
that every failure left the store consistent."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import HandlePoisonedError
from logshelf._fs import FileSystem

# Operations a fault can hit (reads are not failed: a failed read just raises).
FAULTABLE = (
    "open",
    "append",
    "truncate",
    "datasync",
    "fsync",
    "sync_directory",
    "write_file_atomic",
    "replace",
    "rename",
    "unlink",
    "mkdir",
)


class Faulty(FileSystem):
    """Counts faultable operations once armed, and makes number ``fail_at`` raise.

    ``mode="once"`` fails that one operation with EIO (a transient device
    error); ``"forever"`` fails it and every later one with ENOSPC (a disk
    that stays full). An ``append`` fails after writing half its data, like a
    short write followed by the error.
    """

    def __init__(self, fail_at: int, mode: str) -> None:
        self.fail_at = fail_at
        self.mode = mode
        self.count = 0
        self.armed = False
        self.fired = False
        #: Every error this layer raised, in order.
        self.injected: list[OSError] = []

    def _hit(self) -> bool:
        if not self.armed:
            return False
        self.count += 1
        if self.count == self.fail_at or (self.mode == "forever" and self.count > self.fail_at):
            self.fired = True
            return True
        return False


def _wrap(name: str) -> Any:
    original = getattr(FileSystem, name)

    def method(self: Faulty, *args: Any, **kwargs: Any) -> Any:
        if self._hit():
            if name == "append":
                os.write(args[0], args[1][: len(args[1]) // 2])
            code = errno.ENOSPC if self.mode == "forever" else errno.EIO
            error = OSError(code, f"{os.strerror(code)} (injected into {name})")
            self.injected.append(error)
            raise error
        return original(self, *args, **kwargs)

    return method


for _name in FAULTABLE:
    setattr(Faulty, _name, _wrap(_name))


def _workload(db: logshelf.Shelf, acked: dict[str, Any], step: int) -> None:
    """Writes of every kind; each acknowledged write is recorded in ``acked``."""
    db[f"single{step}"] = step
    acked[f"single{step}"] = step
    batch = {f"batch{step}.{j}": (step, j) for j in range(3)}
    db.update(batch)
    acked.update(batch)
    with db.transaction():
        db[f"tx{step}"] = "x" * 700  # several of these fill a segment: rollovers
        if f"single{step - 1}" in acked:
            del db[f"single{step - 1}"]
    acked[f"tx{step}"] = "x" * 700
    acked.pop(f"single{step - 1}", None)
    db["hot"] = ("h" * 900, step)  # overwritten every step: dead data for compaction
    acked["hot"] = ("h" * 900, step)
    if step % 3 == 0:
        db.compact()


def _check_after_failure(path: Path, acked: dict[str, Any], failed_step: int) -> None:
    """Reopen without faults: every acknowledged write is there, the failed
    step is all-or-nothing per batch, nothing else appears, and writing goes on."""
    with logshelf.open(path, max_segment_size=4096) as db:
        assert db.verify() == []
        state = dict(db)
        for key, value in acked.items():
            if key == "hot" and state.get(key) == ("h" * 900, failed_step):
                continue  # the overwrite in flight landed
            assert state.get(key) == value, (key, failed_step)
        extra = {k: v for k, v in state.items() if k not in acked}
        # Only writes of the step in flight may or may not be there, whole batches only.
        batch = {k for k in extra if k.startswith(f"batch{failed_step}.")}
        assert batch in (set(), {f"batch{failed_step}.{j}" for j in range(3)}), extra
        allowed = {f"single{failed_step}", f"tx{failed_step}"} | batch
        assert set(extra) <= allowed, extra
        db["after"] = "ok"
    with logshelf.open(path, "r") as db:
        assert db["after"] == "ok"


@pytest.mark.parametrize("mode", ["once", "forever", "resume"])
def test_io_error_at_every_operation_leaves_store_consistent(tmp_path: Path, mode: str) -> None:
    """Failing the Nth file operation (N = 1, 2, ...) of puts, batches,
    transactions, rollovers and compactions (explicit, and automatic ones
    the overwrites trigger) raises OSError, loses nothing acknowledged,
    and leaves a store that reopens consistent and writable.

    ``resume`` keeps writing through the same handle after the failure (a
    program that catches the error and goes on): those later writes must
    land too, unless the handle refuses them as poisoned. That is what
    catches a handle that appends after a SEAL whose rollover failed.
    """
    template = tmp_path / "template.db"
    with logshelf.open(template, max_segment_size=4096) as db:
        db.update({f"base{i}": i for i in range(20)})
    # Bounded: the workload makes a few hundred faultable operations.
    for n in range(1, 500):
        path = tmp_path / f"run{n}.db"
        shutil.copytree(template, path)
        fs = Faulty(n, "forever" if mode == "forever" else "once")
        acked: dict[str, Any] = {f"base{i}": i for i in range(20)}
        failed_step = 0
        db = logshelf.open(path, max_segment_size=4096, _fs=fs)
        # A reader in the same process, opened before the failure: it must
        # keep seeing acknowledged writes (never stuck behind a SEAL whose
        # rollover failed).
        reader = logshelf.open(path, "r")
        fs.armed = True
        try:
            for step in range(1, 8):
                injected_before = len(fs.injected)
                try:
                    _workload(db, acked, step)
                except HandlePoisonedError:
                    break  # refusing every later write is a correct answer
                except OSError as exc:
                    # The error is one this step's fault raised, passed on as
                    # it is. In "once" and "resume" modes a single fault
                    # fires: a handle that raises a plain OSError again in a
                    # later step (a remembered error, instead of
                    # HandlePoisonedError or a write that works) fails here.
                    fresh = fs.injected[injected_before:]
                    assert any(exc is error for error in fresh), (n, step, exc)
                    failed_step = step
                    if mode != "resume":
                        break
        finally:
            fs.armed = False
            try:
                db.close()
            except OSError:
                pass  # closing syncs; a poisoned or failing handle may refuse
        seen = dict(reader.items())
        reader.close()
        for key, value in acked.items():
            if key != "hot" or seen.get(key) != ("h" * 900, failed_step):
                assert seen.get(key) == value, ("reader", key, failed_step)
        _check_after_failure(path, acked, failed_step)
        shutil.rmtree(path)
        if not fs.fired:
            break
    else:
        raise AssertionError("the workload never got through 500 faults")
    assert n > 20  # the workload does many operations: the loop really iterated
