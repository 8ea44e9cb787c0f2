"""Failing system calls: a failed write leaves nothing, a failed fsync poisons the handle."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import logshelf
from logshelf._fs import FileSystem


class FlakyFS(FileSystem):
    """Fails chosen operations: ``append`` after writing half its data, ``datasync`` outright."""

    def __init__(self) -> None:
        self.fail_append = False
        self.fail_sync = False

    def append(self, fd: int, data: bytes) -> None:
        if self.fail_append:
            os.write(fd, data[: len(data) // 2])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        super().append(fd, data)

    def datasync(self, fd: int) -> None:
        if self.fail_sync:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().datasync(fd)


def _segment_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.glob("seg-*.log")))


@pytest.mark.parametrize("operation", ["put", "update", "transaction", "delete"])
def test_failed_write_leaves_store_unchanged(store_path: Path, operation: str) -> None:
    """A write that fails half-way raises the OSError and leaves the files and
    the index as before."""
    fs = FlakyFS()
    db = logshelf.open(store_path, _fs=fs)
    db.update({"a": 1, "b": 2})
    before = _segment_bytes(store_path)
    fs.fail_append = True
    with pytest.raises(OSError) as info:
        if operation == "put":
            db["c"] = 3
        elif operation == "update":
            db.update({"c": 3, "d": 4})
        elif operation == "transaction":
            with db.transaction():
                db["c"] = 3
                del db["a"]
        else:
            del db["a"]
    assert info.value.errno == errno.ENOSPC
    assert _segment_bytes(store_path) == before
    assert dict(db) == {"a": 1, "b": 2}
    fs.fail_append = False
    db["e"] = 5
    db.close()
    with logshelf.open(store_path, "r") as again:
        assert dict(again) == {"a": 1, "b": 2, "e": 5}
        assert again.verify() == []


def test_failed_sync_poisons_the_handle(store_path: Path) -> None:
    """After an fsync error the handle raises it, then refuses writes until
    reopened; reads still work."""
    fs = FlakyFS()
    db = logshelf.open(store_path, durability="always", _fs=fs)
    db["a"] = 1
    fs.fail_sync = True
    with pytest.raises(OSError) as info:
        db["b"] = 2
    assert info.value.errno == errno.EIO
    fs.fail_sync = False
    with pytest.raises(logshelf.HandlePoisonedError, match="reopen"):
        db["c"] = 3
    assert db["a"] == 1
    db.close()
    with logshelf.open(store_path) as again:
        again["c"] = 3
        assert again["a"] == 1 and again["c"] == 3


class FailingReplaceFS(FileSystem):
    """Fails ``replace`` (the MANIFEST switch of a rollover) or the directory
    sync right after it, once, when armed."""

    def __init__(self) -> None:
        self.fail: str | None = None

    def replace(self, src: str, dst: str) -> None:
        if self.fail == "replace":
            self.fail = None
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().replace(src, dst)

    def sync_directory(self, path: str) -> None:
        if self.fail == "sync_directory" and os.path.exists(os.path.join(path, "MANIFEST")):
            self.fail = None
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().sync_directory(path)


@pytest.mark.parametrize("failing", ["replace", "sync_directory"])
def test_rollover_failing_after_its_seal_never_strands_later_writes(
    store_path: Path, failing: str
) -> None:
    """A rollover whose MANIFEST switch fails has already sealed the old
    segment. A write that follows through the same handle must not go after
    that SEAL (readers stop there, and a switch that did happen would cut
    it off): it finishes the rollover first, or the handle refuses to write."""
    fs = FailingReplaceFS()
    db = logshelf.open(store_path, max_segment_size=4096, auto_compact=None, _fs=fs)
    reader = logshelf.open(store_path, "r")
    try:
        db["filler"] = "f" * 3000
        fs.fail = failing
        with pytest.raises(OSError):
            db["big"] = "b" * 2000  # does not fit: rollover, which fails
        try:
            db["small"] = "s"  # would still fit after the SEAL
        except logshelf.HandlePoisonedError:
            assert failing == "sync_directory"  # a failed directory sync poisons
            db.close()
            db = logshelf.open(store_path, max_segment_size=4096, auto_compact=None)
            db["small"] = "s"
        assert reader["small"] == "s"
        db["small2"] = "t"  # a reader that met the SEAL must still see this
        assert reader["small2"] == "t"
        assert reader["filler"] == "f" * 3000
    finally:
        db.close()
        reader.close()
    with logshelf.open(store_path) as again:
        assert again["small"] == "s" and again["small2"] == "t"
        assert again.verify() == []


class InterruptedFS(FileSystem):
    """``append`` writes part of its data, then raises KeyboardInterrupt (a
    Ctrl-C arriving in the middle of a write), when armed."""

    def __init__(self) -> None:
        self.interrupt = False

    def append(self, fd: int, data: bytes) -> None:
        if self.interrupt:
            self.interrupt = False
            os.write(fd, data[: len(data) // 2])
            raise KeyboardInterrupt
        super().append(fd, data)


@pytest.mark.parametrize("operation", ["put", "update", "transaction"])
def test_write_interrupted_by_keyboard_interrupt_is_cut_back(
    store_path: Path, operation: str
) -> None:
    """docs/durability.md: a write that fails part-way, KeyboardInterrupt
    included, is cut back before the lock is released. The interrupt
    propagates; the handle keeps the previous value and writes on; the
    files hold nothing of the interrupted write, and a reopen finds a clean
    store (no torn tail to cut, verify() empty)."""
    fs = InterruptedFS()
    db = logshelf.open(store_path, _fs=fs)
    db.update({"a": "old a", "b": "old b"})
    before = _segment_bytes(store_path)
    fs.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        if operation == "put":
            db["a"] = "new a"
        elif operation == "update":
            db.update({"a": "new a", "c": "new c"})
        else:
            with db.transaction():
                db["a"] = "new a"
                del db["b"]
    assert _segment_bytes(store_path) == before
    assert dict(db) == {"a": "old a", "b": "old b"}
    db["d"] = "after"
    db.close()
    with logshelf.open(store_path, "r") as again:
        assert dict(again) == {"a": "old a", "b": "old b", "d": "after"}
        assert again.verify() == []
    assert not (store_path / "quarantine").exists()  # nothing was left to cut


READER = """
import sys, logshelf
with logshelf.open(sys.argv[1], "r") as db:
    print(db.get("b"))
"""


def test_a_write_whose_sync_failed_stays_visible_everywhere(store_path: Path) -> None:
    """Issue 19, item 8: under durability="always" a failed fdatasync makes
    the write raise, but the record was committed before the sync: this
    handle, another process and a reopen all see it (docs/durability.md says
    why it is not cut back), and the handle refuses further writes."""
    import subprocess
    import sys

    fs = FlakyFS()
    db = logshelf.open(store_path, durability="always", _fs=fs)
    db["a"] = 1
    fs.fail_sync = True
    with pytest.raises(OSError):
        db["b"] = 2
    fs.fail_sync = False
    assert db["b"] == 2
    other = subprocess.run(
        [sys.executable, "-c", READER, str(store_path)], capture_output=True, text=True, timeout=60
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "2"
    with pytest.raises(logshelf.HandlePoisonedError):
        db["c"] = 3
    db.close()
    with logshelf.open(store_path, "r") as again:
        assert dict(again) == {"a": 1, "b": 2}


class ClockFS(FileSystem):
    """A fake monotonic clock and a count of fdatasyncs (segments only use those)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.syncs = 0

    def monotonic(self) -> float:
        return self.now

    def datasync(self, fd: int) -> None:
        self.syncs += 1
        super().datasync(fd)


@pytest.mark.parametrize("durability", ["none", "always", "interval"])
def test_interval_syncs_by_the_clock_and_close_syncs_in_every_mode(
    store_path: Path, durability: str
) -> None:
    """Issue 19, item 9: "interval" syncs at the first write at least
    ``sync_interval`` after the last sync (on a fake clock, no sleeps);
    "always" at every write, "none" never; close() syncs in every mode."""
    fs = ClockFS()
    db = logshelf.open(store_path, durability=durability, sync_interval=10.0, _fs=fs)
    fs.syncs = 0
    synced = []
    for now in (1.0, 9.9, 10.0, 15.0, 19.9, 20.5, 21.0):
        fs.now = now
        before = fs.syncs
        db[f"k{now}"] = now
        synced.append(fs.syncs - before)
    expected = {
        "none": [0] * 7,
        "always": [1] * 7,
        "interval": [0, 0, 1, 0, 0, 1, 0],
    }[durability]
    assert synced == expected
    before = fs.syncs
    db.close()
    assert fs.syncs == before + 1
    with logshelf.open(store_path, "r") as again:
        assert len(again) == 7
