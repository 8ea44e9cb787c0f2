"""A process killed between a compaction's switch (or a rollover) and the
in-memory work that follows it: the remap of ``_remap`` and the hint a
rollover writes after the writer lock. Both are optimisations of what the
MANIFEST already committed; a fresh handle must find every write, exactly.
And one killed between the appends of a large batch written in pieces
(``_pieces``): all of the batch or none of it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import logshelf
from logshelf import _compaction, _writer
from logshelf._fs import FileSystem

SEG = 8192


def _model(rounds: int) -> dict[str, Any]:
    model: dict[str, Any] = {}
    for r in range(rounds):
        for i in range(300):
            model[f"k{i:03d}"] = (r, i, "x" * (i % 40))
    return model


def _killed_child(store: Path, work: Callable[[logshelf.Shelf], None], **options: Any) -> None:
    """Run ``work`` in a forked child that must die of SIGKILL inside it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            with logshelf.open(store, max_segment_size=SEG, auto_compact=None, **options) as db:
                work(db)
        finally:
            os._exit(3)  # not killed: the parent's assertion fails
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _kill_self(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_right_after_the_switch(store_path: Path) -> None:
    """Killed after the MANIFEST switch, before any handle remapped, before
    the inputs were deleted and before the sealed segment's hint: a reopen
    has everything, the leftover inputs go at the next writer's open."""
    model = _model(4)
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        for r in range(4):
            db.update({k: v for k, v in _model(r + 1).items()})
    reader = logshelf.open(store_path, "r")
    assert dict(reader.items()) == model

    def work(db: logshelf.Shelf) -> None:
        original = _compaction.switch

        def switch(*args: Any) -> bool:
            assert original(*args)
            _kill_self()
            return True

        _compaction.switch = switch  # type: ignore[assignment]
        db.compact()

    _killed_child(store_path, work)
    # A handle opened before follows the switch the dead process committed.
    assert dict(reader.items()) == model
    reader.close()
    with logshelf.open(store_path) as db:
        assert dict(db.items()) == model
        assert db.verify() == []
        db["after"] = 1
    with logshelf.open(store_path, "r") as db:
        assert dict(db.items()) == {**model, "after": 1}


def test_killed_before_a_rollovers_hint(store_path: Path) -> None:
    """Killed after a write that rolled over returned its lock, before the
    sealed segment's hint was written: the reopen scans that segment."""

    def work(db: logshelf.Shelf) -> None:
        original = _writer.Writer.write_deferred
        calls = []

        def write_deferred(self: Any) -> None:
            if self.sealed_hint is not None:
                calls.append(1)
                if len(calls) == 3:
                    _kill_self()
            original(self)

        _writer.Writer.write_deferred = write_deferred  # type: ignore[method-assign]
        i = 0
        while True:
            db[f"k{i % 200}"] = i
            i += 1

    _killed_child(store_path, work)
    with logshelf.open(store_path) as db:
        got = dict(db.items())
        assert db.verify() == []
    # The last write that reached the log is the largest value; every one
    # before it (each was acknowledged before the next began) is there.
    last = max(got.values())
    assert last >= 200  # three rollovers of 8 KiB segments: every key written
    assert got == {f"k{j}": last - (last - j) % 200 for j in range(200)}


class _DieOnPiece(FileSystem):
    """Kills its process at the ``n``-th append of a batch written in pieces."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.appends = 0
        self.armed = False

    def append(self, fd: int, data: bytes) -> None:
        if self.armed:
            self.appends += 1
            if self.appends == self.n:
                super().append(fd, memoryview(data)[: len(data) // 2])  # torn, too
                _kill_self()
        super().append(fd, data)


def test_killed_in_the_middle_of_a_batch_written_in_pieces(store_path: Path) -> None:
    """A transaction of large values is written in several appends (_pieces);
    killed after some of them (one torn), the store holds all of it or none,
    and the writer that opens next cuts the partial batch away."""
    big = [bytes([i]) * (1 << 20) for i in range(12)]  # 12 MiB: several pieces
    with logshelf.open(store_path) as db, db.transaction():
        for i in range(12):
            db[f"v{i}"] = (0, big[i])
    for n in (1, 2, 5, 11, 20):

        def work(db: logshelf.Shelf, n: int = n) -> None:
            fs = db._engine._fs
            assert isinstance(fs, _DieOnPiece)
            fs.armed = True
            with db.transaction():
                for i in range(12):
                    db[f"v{i}"] = (n, big[i])

        _killed_child(store_path, work, _fs=_DieOnPiece(n))
        with logshelf.open(store_path, "r") as db:
            generations = {db[f"v{i}"][0] for i in range(12)}
            assert generations == {0}, (n, generations)  # the commit record never landed
            assert all(db[f"v{i}"][1] == big[i] for i in range(12))
        with logshelf.open(store_path) as db:  # a writer cuts the torn tail
            assert db.verify() == []
            db["after"] = n
    with logshelf.open(store_path, "r") as db:
        assert db["after"] == 20
