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
    """A write that fails half-way raises the OSError and leaves the files and the index as before."""
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
    """After an fsync error the handle raises it, then refuses writes until reopened; reads still work."""
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
