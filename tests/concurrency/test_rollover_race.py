"""A writer that opened during another writer's rollover must not redo that rollover."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf._fs import FileSystem

OPENER = """
import logshelf, sys
with logshelf.open(sys.argv[1], max_segment_size=4096) as db:
    db["from_b"] = "b"
"""


class SlowManifest(FileSystem):
    """Starts a second writer process just before the MANIFEST switch of a
    rollover and waits until it has opened the store (it sees the SEAL) and
    blocks on the writer lock this process holds: the explicit sign is its
    blocked flock in /proc/locks (the child opens without a lock timeout, so
    it waits in the kernel)."""

    def __init__(self, store: Path, await_lock_waiter: Any) -> None:
        self.store = store
        self.armed = False
        self.await_lock_waiter = await_lock_waiter
        self.child: subprocess.Popen[bytes] | None = None

    def write_file_atomic(
        self, path: str, data: bytes, *, sync_dir: bool = True, mode: int = 0o666
    ) -> None:
        if self.armed and path.endswith("MANIFEST"):
            self.armed = False
            self.child = child = subprocess.Popen([sys.executable, "-c", OPENER, str(self.store)])
            self.await_lock_waiter(child.pid, lambda: child.poll() is None)
        super().write_file_atomic(path, data, sync_dir=sync_dir, mode=mode)


@pytest.mark.timeout(20)
def test_writer_opened_mid_rollover_keeps_the_successor(
    store_path: Path, await_lock_waiter: Any
) -> None:
    """The record written into the new segment in the same lock hold as the
    rollover survives a second writer that saw the SEAL before the MANIFEST switch."""
    fs = SlowManifest(store_path, await_lock_waiter)
    db = logshelf.open(store_path, max_segment_size=4096, _fs=fs)
    try:
        i = 0
        while len(list(store_path.glob("seg-*.log"))) == 1:
            db[f"k{i}"] = "x" * 100
            i += 1
        fs.armed = True
        while fs.child is None:
            db[f"k{i}"] = "x" * 100  # the write that triggers the rollover lands in the new segment
            i += 1
        assert fs.child.wait(timeout=30) == 0
        db[f"k{i}"] = "after"
    finally:
        db.close()
        if fs.child is not None and fs.child.poll() is None:
            fs.child.kill()  # reaped here even when the test failed early
        if fs.child is not None:
            fs.child.wait(timeout=30)
    with logshelf.open(store_path, "r") as check:
        assert check["from_b"] == "b"
        assert {k for k in check if k.startswith("k")} == {f"k{j}" for j in range(i + 1)}
        assert check.verify() == []
