"""The change counter (``CHANGES``): handles skip the size check only while
nothing can have changed, and see every write of every other process at once.

Other processes are plain ``python -c`` children: each one opens the store,
does its writes and exits, so that the handles of this process have read an
even counter before each write and must notice that it moved.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._fs import FileSystem
from logshelf._locking import ChangeCounter


def _in_child(
    store: Path, body: str, setup: str = "", check: bool = True, backend: str = "auto"
) -> subprocess.CompletedProcess[str]:
    """Run ``setup``, then ``body`` with ``db`` open writable on ``store``
    (with lock backend ``backend``), in a fresh interpreter."""
    opening = f"db = logshelf.open({str(store)!r}, 'w', lock_backend={backend!r})\n"
    script = "import os, logshelf\n" + setup + opening + body
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=check
    )


def _counter(store: Path) -> int:
    data = (store / fmt.CHANGES_NAME).read_bytes()
    assert data[:8] == fmt.CHANGES_MAGIC
    return fmt.CHANGES.unpack(data)[1]


def test_a_new_store_has_an_even_counter(store_path: Path) -> None:
    logshelf.open(store_path).close()
    assert (store_path / fmt.CHANGES_NAME).stat().st_size == fmt.CHANGES.size
    assert _counter(store_path) % 2 == 0


def test_counter_is_odd_during_a_hold_and_new_after_it(store_path: Path) -> None:
    seen = []
    with logshelf.open(store_path) as db:
        seen.append(_counter(store_path))
        db["a"] = 1
        seen.append(_counter(store_path))
        with db.transaction():
            db["b"] = 2
            inside = _counter(store_path)
        seen.append(_counter(store_path))
        del db["a"]
        seen.append(_counter(store_path))
    assert inside % 2 == 1
    assert all(value % 2 == 0 for value in seen), seen
    assert seen == sorted(set(seen)), f"each hold must end on a new, larger value: {seen}"


@pytest.mark.parametrize("backend", ["flock", "filelock"])
def test_reader_sees_each_write_of_another_process_at_once(store_path: Path, backend: str) -> None:
    """Whichever backend takes the OS lock, every hold moves the counter."""
    with logshelf.open(store_path) as db:
        db["start"] = 0
    reader = logshelf.open(store_path, "r")
    try:
        assert reader["start"] == 0  # the reader has now read an even counter
        for i in range(4):
            _in_child(store_path, f"db['k{i}'] = {i}\ndb.close()\n", backend=backend)
            assert reader[f"k{i}"] == i
            assert len(reader) == i + 2
        _in_child(store_path, "del db['k0']\ndb.close()\n", backend=backend)
        assert "k0" not in reader
    finally:
        reader.close()


def test_a_writer_that_does_not_raise_the_counter_goes_unseen(store_path: Path) -> None:
    """The other side of the previous test: the size check really is skipped
    while the counter stands still. (If it were not, the counter would buy
    nothing; and this is why every writer must raise it.)"""
    with logshelf.open(store_path) as db:
        db["start"] = 0
    reader = logshelf.open(store_path, "r")
    try:
        assert reader["start"] == 0
        _in_child(
            store_path,
            "db['hidden'] = 1\ndb.close()\n",
            setup="from logshelf._locking import ChangeCounter\n"
            "ChangeCounter.begin = ChangeCounter.end = lambda self: None\n",
        )
        assert "hidden" not in reader
        # Any real write moves the counter, and the reader catches up on both.
        _in_child(store_path, "db['shown'] = 2\ndb.close()\n")
        assert reader["hidden"] == 1 and reader["shown"] == 2
    finally:
        reader.close()


def test_writer_killed_inside_its_hold_leaves_readers_checking(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db["start"] = 0
    reader = logshelf.open(store_path, "r")
    try:
        assert reader["start"] == 0
        # The child's record is complete and committed, then the child dies
        # before it can end its hold: the counter stays odd.
        died = _in_child(
            store_path,
            "from logshelf._locking import ChangeCounter\n"
            "ChangeCounter.end = lambda self: os._exit(7)\n"
            "db['orphan'] = 1\n",
            check=False,
        )
        assert died.returncode == 7, died.stderr
        odd = _counter(store_path)
        assert odd % 2 == 1
        assert reader["orphan"] == 1
        assert reader["orphan"] == 1  # asked again while still odd
        # The next writer ends on the next even value; the reader sees it too.
        with logshelf.open(store_path, "w") as db:
            db["next"] = 2
        assert _counter(store_path) > odd and _counter(store_path) % 2 == 0
        assert reader["next"] == 2
        _in_child(store_path, "db['last'] = 3\ndb.close()\n")
        assert reader["last"] == 3
    finally:
        reader.close()


@pytest.mark.parametrize("damage", ["missing", "bad magic", "wrong size"])
def test_store_without_a_valid_counter_checks_sizes(store_path: Path, damage: str) -> None:
    """A store made before the counter existed, or with a damaged one: every
    handle ignores it and checks sizes on every operation, and no writer
    touches it."""
    with logshelf.open(store_path) as db:
        db["start"] = 0
    path = store_path / fmt.CHANGES_NAME
    if damage == "missing":
        path.unlink()
    elif damage == "bad magic":
        path.write_bytes(b"X" * fmt.CHANGES.size)
    else:
        path.write_bytes(fmt.encode_changes(0) + b"\0")
    left = path.read_bytes() if path.exists() else None
    assert ChangeCounter.open(str(store_path), writable=False) is None
    assert ChangeCounter.open(str(store_path), writable=True) is None
    reader = logshelf.open(store_path, "r")
    try:
        assert reader["start"] == 0
        for i in range(3):
            _in_child(store_path, f"db['k{i}'] = {i}\ndb.close()\n")
            assert reader[f"k{i}"] == i
    finally:
        reader.close()
    assert (path.read_bytes() if path.exists() else None) == left


def test_writer_that_cannot_write_the_counter_refuses_to_open(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers may rely on a valid counter, so a writer must not go on
    without raising it (here: a permission problem on CHANGES alone)."""
    logshelf.open(store_path).close()
    real_open = os.open

    def no_write_access(path: str, flags: int, *args: int) -> int:
        if os.path.basename(path) == fmt.CHANGES_NAME and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_write_access)
    with pytest.raises(PermissionError, match=fmt.CHANGES_NAME):
        logshelf.open(store_path, "w")
    with logshelf.open(store_path, "r") as db:
        assert len(db) == 0


def test_handles_in_one_process_follow_each_other(store_path: Path) -> None:
    """Two handles of one process share the writer lock (and so its counter
    mapping), while each has a view of its own to keep up to date."""
    a = logshelf.open(store_path)
    b = logshelf.open(store_path)
    reader = logshelf.open(store_path, "r")
    try:
        for i in range(5):
            a[f"a{i}"] = i
            assert b[f"a{i}"] == i and reader[f"a{i}"] == i
            b[f"b{i}"] = i
            assert a[f"b{i}"] == i and reader[f"b{i}"] == i
        with a.transaction():
            a["t"] = 1
        assert b["t"] == 1 and reader["t"] == 1
    finally:
        for db in (a, b, reader):
            db.close()


def test_an_odd_counter_is_never_remembered(store_path: Path) -> None:
    """A reader that looks while a writer holds the lock (counter odd) must
    look again later, even if that writer dies before it can move the
    counter on: its batch lands after the reader's look."""
    with logshelf.open(store_path) as db:
        db["start"] = 0
    reader = logshelf.open(store_path, "r")
    script = (
        "import os, sys, logshelf\n"
        "from logshelf._locking import ChangeCounter\n"
        f"db = logshelf.open({str(store_path)!r}, 'w')\n"
        "ChangeCounter.end = lambda self: os._exit(7)\n"
        "with db.transaction():\n"
        "    db['late'] = 1\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    try:
        with subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as child:
            try:
                assert child.stdout is not None and child.stdin is not None
                assert child.stdout.readline().strip() == "holding"
                assert _counter(store_path) % 2 == 1
                assert reader["start"] == 0 and "late" not in reader  # looked while odd
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.wait(timeout=120) == 7
            finally:
                if child.poll() is None:
                    child.kill()
        assert reader["late"] == 1
    finally:
        reader.close()


class _TornWrites(FileSystem):
    """Once armed, an append writes half its bytes and fails, and the
    truncate that would undo it fails too: garbage stays at the tail."""

    armed = False

    def append(self, fd: int, data: bytes) -> None:
        if not self.armed:
            return super().append(fd, data)
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.EIO, "simulated write error")

    def truncate(self, fd: int, length: int) -> None:
        if self.armed:
            raise OSError(errno.EIO, "simulated truncate error")
        super().truncate(fd, length)


def test_garbage_left_by_a_failed_undo_is_cut_before_the_next_append(store_path: Path) -> None:
    """A write whose undo fails ends its hold normally, with garbage at the
    tail. Handles must not remember that counter value (writers would then
    skip the size check and append after the garbage)."""
    good = logshelf.open(store_path)
    fs = _TornWrites()
    bad = logshelf.open(store_path, _fs=fs)
    try:
        good["x"] = 1
        fs.armed = True
        with pytest.raises(OSError):
            bad["lost"] = "y" * 1000
        assert good["x"] == 1  # sees the changed counter and the garbage
        good["y"] = 2  # must cut the garbage first
    finally:
        good.close()
        bad.close()
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {"x": 1, "y": 2}
        assert db.verify() == []
