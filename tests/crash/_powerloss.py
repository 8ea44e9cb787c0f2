"""A simulated disk for power-loss tests: what would survive if the power went now?

:class:`SimulatedDisk` is a :class:`logshelf._fs.FileSystem` that performs
every operation on the real files (they stand for the page cache: what a
running process sees) and keeps, beside them, a model of what is *durable*:

* per file (inode): its contents as of its last ``fsync``/``datasync``, and
  the list of changes made since (appends and truncations, in order);
* per directory: its ``name -> inode`` map as of its last ``sync_directory``,
  and the entry changes made since (creations, renames, unlinks, in order).

Syncs are only modelled, never performed: nothing needs to reach the real
disk, and skipping the real ``fsync`` keeps thousands of crash points fast.

At any moment :meth:`SimulatedDisk.snapshot` freezes the model into a
:class:`CrashState`, and :func:`build_image` turns a crash state into the
directory tree a reboot could find, choosing how much of the unsynced work
reached the disk:

file modes (applied to each file on its own)
    ``"none"``: only the synced contents. ``"all"``: everything written.
    ``"prefix"``: the synced contents plus a random prefix of the unsynced
    changes, possibly ending in the middle of an append. ``"zeros"`` and
    ``"garbage"``: such a prefix, then the file size extended over bytes
    whose data never reached the disk: zeros (an ext4 delayed allocation
    whose size update made it but whose data blocks did not) or random
    bytes (stale blocks). ``"reorder"``: no order at all within the file:
    each 512-byte sector of the current contents reached the disk or kept
    its synced bytes, independently (page cache writeback, which no file
    system orders within a file, nor a disk within a page).

directory modes (applied to each directory on its own)
    ``"drop"``: only synced entries: every create, rename and unlink since
    the directory's last sync is lost. ``"keep"``: all of them survived (a
    journal commit happened to flush them). ``"prefix"``: the first few of
    them, in order (a journalling file system). ``"subset"``: each one
    survived or not on its own, and ``"last"``: only the newest one survived
    (a file system that orders nothing; POSIX promises no order either).
    A rename is one change: the old name goes exactly when the new one comes.

The model assumes that **the unsynced changes of one file reach the disk in
the order they were made**: a crash keeps a prefix of them (possibly with a
torn last append, and with zeros or garbage where the size outran the data),
never a later change without an earlier one. See ``test_power_loss.py`` for
why that matches logshelf's "consistent prefix" promise and what happens
without it. Changes of different files, and of files and directories, are
independent of each other.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from logshelf import _format as fmt
from logshelf._fs import FileSystem

__all__ = [
    "DIR_MODES",
    "FILE_MODES",
    "CrashState",
    "PowerLoss",
    "RunawayError",
    "SimulatedDisk",
    "build_image",
    "image_digest",
    "write_image",
]

FILE_MODES = ("none", "all", "prefix", "zeros", "garbage", "reorder")
#: The unit of "reorder" images: a sector, smaller than a page, so that the
#: small segments of the tests get many units that survive or not.
PAGE = 512
DIR_MODES = ("drop", "keep", "prefix", "subset", "last")

# A pending change of a file: ("append", data), ("truncate", length) or
# ("write", (offset, data)) (a pwrite in place: the synced mark).
FileChange = tuple[str, bytes | int | tuple[int, bytes]]
# A pending change of a directory, applied atomically: (name, inode or None
# for removal) pairs. A rename within one directory is one change of two pairs.
DirChange = tuple[tuple[str, int | None], ...]
# An image: relative path -> file contents, or None for a directory.
Image = dict[str, bytes | None]


def _without_counter(data: bytes) -> bytes:
    """``data`` without the bytes where CHANGES keeps its counter."""
    where = fmt.CHANGES_COUNTER
    return data[: where.start] + data[where.stop :]


class PowerLoss(BaseException):
    """Raised by a :class:`SimulatedDisk` at its crash point and by every
    mutating operation after it: the machine is off.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except
    OSError`` or ``except Exception`` in the engine can swallow it and carry
    on as if the operation had happened.
    """


class RunawayError(AssertionError):
    """More state-changing operations than a :class:`SimulatedDisk` allows."""


@dataclass
class _Inode:
    """One file or directory of the model."""

    is_dir: bool
    # Files: synced contents, changes since, and the current (page cache) contents.
    durable: bytes = b""
    pending: list[FileChange] = field(default_factory=list)
    current: bytes = b""
    # Directories: synced entries, changes since, and the current entries.
    durable_entries: dict[str, int] = field(default_factory=dict)
    dir_pending: list[DirChange] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CrashState:
    """The durable model frozen at one instant (see :meth:`SimulatedDisk.snapshot`).

    ``files`` maps inode -> (synced contents, pending changes, current
    contents); ``dirs`` maps inode -> (synced entries, pending changes).
    Only inodes reachable from the root through synced or pending entries
    are kept.
    """

    root: int
    files: dict[int, tuple[bytes, tuple[FileChange, ...], bytes]]
    dirs: dict[int, tuple[dict[str, int], tuple[DirChange, ...]]]

    @property
    def unsynced(self) -> bool:
        """Does anything differ between the synced and the current state?"""
        return any(pending for _, pending, _ in self.files.values()) or any(
            pending for _, pending in self.dirs.values()
        )


class SimulatedDisk(FileSystem):
    """A FileSystem that models durability below ``root`` (see the module docstring).

    Args:
        root: an existing directory; everything under it is modelled, and is
            taken as durable as it stands when the disk is created.
        crash_at: raise :class:`PowerLoss` instead of performing the
            ``crash_at``-th state-changing operation (1-based), and from then
            on refuse every state-changing operation; None never crashes.
        on_operation: called as ``on_operation(number, description)`` before
            each state-changing operation is performed: the moment at which a
            crash would leave exactly :meth:`snapshot`.
        max_operations: raise :class:`RunawayError` at the operation after
            this many (None: no limit): a recovery that loops forever fails
            at once instead of at the test timeout.
    """

    def __init__(
        self,
        root: Path,
        crash_at: int | None = None,
        on_operation: Callable[[int, str], None] | None = None,
        max_operations: int | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.crash_at = crash_at
        self.on_operation = on_operation
        self.max_operations = max_operations
        self.operations = 0
        self.crashed = False
        # Descriptions of the state-changing operations, in order (for messages).
        self.log: list[str] = []
        self._inodes: dict[int, _Inode] = {}
        self._next_inode = 1
        self._fds: dict[int, int] = {}
        self._root_inode = self._adopt(self.root)

    # -- the model -----------------------------------------------------------

    def _new_inode(self, is_dir: bool) -> int:
        number = self._next_inode
        self._next_inode += 1
        self._inodes[number] = _Inode(is_dir)
        return number

    def _adopt(self, path: str) -> int:
        """Model an existing tree as fully durable."""
        if os.path.isdir(path):
            number = self._new_inode(True)
            node = self._inodes[number]
            for name in sorted(os.listdir(path)):
                node.entries[name] = self._adopt(os.path.join(path, name))
            node.durable_entries = dict(node.entries)
            return number
        number = self._new_inode(False)
        node = self._inodes[number]
        with open(path, "rb") as f:
            node.durable = node.current = f.read()
        return number

    def _split(self, path: str) -> tuple[int, str] | None:
        """(inode of the parent directory, name) for a path under the root,
        or None for a path the model does not cover."""
        full = os.path.abspath(path)
        rel = os.path.relpath(full, self.root)
        if rel == "." or rel.startswith(".."):
            return None
        *parents, name = rel.split(os.sep)
        directory = self._root_inode
        for part in parents:
            child = self._inodes[directory].entries.get(part)
            if child is None:
                return None  # under a directory the model does not know: not ours
            directory = child
        return directory, name

    def _lookup(self, path: str) -> int | None:
        where = self._split(path)
        if where is None:
            return None
        return self._inodes[where[0]].entries.get(where[1])

    def _change_dir(self, directory: int, change: DirChange) -> None:
        node = self._inodes[directory]
        for name, target in change:
            if target is None:
                del node.entries[name]
            else:
                node.entries[name] = target
        node.dir_pending.append(change)

    def _change_file(self, number: int, change: FileChange) -> None:
        node = self._inodes[number]
        node.pending.append(change)
        node.current = _apply(node.current, change)

    def _before(self, description: str) -> None:
        """Every state-changing operation passes here first: the crash point."""
        if self.crashed:
            raise PowerLoss(f"the power is off (refused: {description})")
        self.operations += 1
        self.log.append(description)
        if self.max_operations is not None and self.operations > self.max_operations:
            raise RunawayError(
                f"more than {self.max_operations} file operations (the last ones: "
                f"{self.log[-6:]}): does the code loop forever?"
            )
        if self.on_operation is not None:
            self.on_operation(self.operations, description)
        if self.operations == self.crash_at:
            self.crashed = True
            raise PowerLoss(f"power lost before operation {self.operations}: {description}")

    def _name(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self.root)

    def inode_at(self, path: str) -> int:
        """The inode a path names now (for tests that pick one file of a snapshot)."""
        number = self._lookup(path)
        if number is None:
            raise FileNotFoundError(path)
        return number

    def file_versions(self, path: str) -> tuple[bytes, list[bytes]]:
        """(current contents, every version a power loss could leave whole) of
        a file: its synced contents, and each pending change applied in turn."""
        node = self._inodes[self.inode_at(path)]
        versions = [node.durable]
        for change in node.pending:
            versions.append(_apply(versions[-1], change))
        return node.current, versions

    def durable_contents(self, path: str) -> bytes:
        """What a file holds on the modelled disk: its synced contents."""
        return self._inodes[self.inode_at(path)].durable

    def snapshot(self) -> CrashState:
        """Freeze what a power loss right now could leave (see :class:`CrashState`)."""
        files: dict[int, tuple[bytes, tuple[FileChange, ...], bytes]] = {}
        dirs: dict[int, tuple[dict[str, int], tuple[DirChange, ...]]] = {}
        todo = [self._root_inode]
        while todo:
            number = todo.pop()
            node = self._inodes[number]
            if not node.is_dir:
                files[number] = (node.durable, tuple(node.pending), node.current)
                continue
            dirs[number] = (dict(node.durable_entries), tuple(node.dir_pending))
            reachable = set(node.durable_entries.values())
            for change in node.dir_pending:
                reachable.update(target for _, target in change if target is not None)
            todo.extend(n for n in reachable if n not in files and n not in dirs)
        return CrashState(self._root_inode, files, dirs)

    def differences_from_real_files(self) -> list[str]:
        """Compare the model's current state with the real files under the root.

        Every change to store files must go through this layer; a file
        written, created, renamed or removed behind its back shows up here.
        One exception is tolerated: an empty file named ``*LOCK`` that exists
        only on disk. The locking code opens lock files with ``os.open``
        (``O_CREAT``) itself; they hold no data, and losing one to a power
        loss costs nothing (it is created again on the next open).
        The counter bytes of ``CHANGES`` may differ too: writers raise them
        through a shared memory map, never through this layer. They carry no
        data, and no handle outlives a power loss to compare them.
        """
        problems: list[str] = []

        def walk(number: int, path: str) -> None:
            node = self._inodes[number]
            if not os.path.isdir(path):
                problems.append(f"{self._name(path)}: a directory in the model only")
                return
            real = set(os.listdir(path))
            for name in sorted(real ^ set(node.entries)):
                full = os.path.join(path, name)
                if name in real:
                    if name.endswith("LOCK") and os.path.getsize(full) == 0:
                        continue
                    problems.append(f"{self._name(full)}: only on disk")
                else:
                    problems.append(f"{self._name(full)}: only in the model")
            for name in sorted(real & set(node.entries)):
                child = self._inodes[node.entries[name]]
                full = os.path.join(path, name)
                if child.is_dir:
                    walk(node.entries[name], full)
                    continue
                with open(full, "rb") as f:
                    data = f.read()
                if name == fmt.CHANGES_NAME and _without_counter(data) == _without_counter(
                    child.current
                ):
                    continue
                if data != child.current:
                    problems.append(
                        f"{self._name(full)}: {len(data)} bytes on disk, "
                        f"{len(child.current)} in the model, contents differ"
                    )

        walk(self._root_inode, self.root)
        return problems

    # -- FileSystem: state-changing operations ---------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        existing = self._lookup(path)
        creates = bool(flags & os.O_CREAT) and existing is None and self._split(path) is not None
        truncates = bool(flags & os.O_TRUNC) and existing is not None
        if creates or truncates:
            self._before(f"open {self._name(path)} ({'create' if creates else 'truncate'})")
        fd = super().open(path, flags, mode)
        if creates:
            where = self._split(path)
            assert where is not None
            existing = self._new_inode(False)
            self._change_dir(where[0], ((where[1], existing),))
        elif truncates and existing is not None and self._inodes[existing].current:
            self._change_file(existing, ("truncate", 0))
        if existing is not None:
            self._fds[fd] = existing
        return fd

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        super().close(fd)

    def append(self, fd: int, data: bytes) -> None:
        number = self._fds.get(fd)
        if number is not None:
            self._before(f"append {len(data)} bytes at {len(self._inodes[number].current)}")
        super().append(fd, data)
        if number is not None:
            self._change_file(number, ("append", bytes(data)))

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        number = self._fds.get(fd)
        if number is not None:
            self._before(f"pwrite {len(data)} bytes at {offset}")
        super().pwrite(fd, data, offset)
        if number is not None:
            self._change_file(number, ("write", (offset, bytes(data))))

    def truncate(self, fd: int, length: int) -> None:
        number = self._fds.get(fd)
        if number is not None:
            self._before(f"truncate to {length}")
        super().truncate(fd, length)
        if number is not None:
            self._change_file(number, ("truncate", length))

    def _sync_file(self, fd: int, what: str) -> None:
        number = self._fds.get(fd)
        if number is None:
            return
        self._before(what)
        node = self._inodes[number]
        node.durable = node.current
        node.pending = []

    def datasync(self, fd: int) -> None:
        # fdatasync makes the data and the size durable: all a file's bytes.
        self._sync_file(fd, "datasync")

    def fsync(self, fd: int) -> None:
        self._sync_file(fd, "fsync")

    def sync_directory(self, path: str) -> None:
        full = os.path.abspath(path)
        if full == self.root:
            number: int | None = self._root_inode
        else:
            number = self._lookup(full)
        if number is None:
            return
        self._before(f"sync_directory {self._name(full)}")
        node = self._inodes[number]
        node.durable_entries = dict(node.entries)
        node.dir_pending = []

    def _move(self, src: str, dst: str, verb: str) -> None:
        source = self._split(src)
        target = self._split(dst)
        if source is not None and target is not None:
            self._before(f"{verb} {self._name(src)} -> {self._name(dst)}")
        getattr(FileSystem, verb)(self, src, dst)
        if source is None or target is None:
            return
        moved = self._inodes[source[0]].entries[source[1]]
        if source[0] == target[0]:
            self._change_dir(source[0], ((source[1], None), (target[1], moved)))
        else:
            # Two directories: each change is durable only with its own directory.
            self._change_dir(source[0], ((source[1], None),))
            self._change_dir(target[0], ((target[1], moved),))

    def replace(self, src: str, dst: str) -> None:
        self._move(src, dst, "replace")

    def rename(self, src: str, dst: str) -> None:
        self._move(src, dst, "rename")

    def _remove(self, path: str, verb: str) -> None:
        where = self._split(path)
        if where is not None:
            self._before(f"{verb} {self._name(path)}")
        getattr(FileSystem, verb)(self, path)
        if where is not None:
            self._change_dir(where[0], ((where[1], None),))

    def unlink(self, path: str) -> None:
        self._remove(path, "unlink")

    def rmdir(self, path: str) -> None:
        self._remove(path, "rmdir")

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        where = self._split(path)
        if where is not None:
            self._before(f"mkdir {self._name(path)}")
        super().mkdir(path, mode)
        if where is not None:
            self._change_dir(where[0], ((where[1], self._new_inode(True)),))


def _apply(data: bytes, change: FileChange) -> bytes:
    kind, arg = change
    if kind == "append":
        assert isinstance(arg, bytes)
        return data + arg
    if kind == "write":
        assert isinstance(arg, tuple)
        offset, new = arg
        data = data + bytes(max(0, offset - len(data)))
        return data[:offset] + new + data[offset + len(new) :]
    assert isinstance(arg, int)
    return data[:arg] + bytes(max(0, arg - len(data)))


def _steps(arg: bytes | int | tuple[int, bytes]) -> int:
    """Steps of a pending change: one per byte written, one for a truncation."""
    if isinstance(arg, bytes):
        return len(arg)
    return len(arg[1]) if isinstance(arg, tuple) else 1


def _torn_file(
    durable: bytes,
    pending: tuple[FileChange, ...],
    current: bytes,
    mode: str,
    rng: random.Random,
) -> bytes:
    """What a file may hold after the crash, in the given file mode."""
    if mode == "none" or not pending:
        return durable
    if mode == "all":
        return current
    if mode == "reorder":
        # Writeback in no order within the file: each sector of the current
        # contents reached the disk or kept its synced bytes (zeros past the
        # synced size), on its own; the size made it.
        old = durable + bytes(max(0, len(current) - len(durable)))
        pages = []
        for at in range(0, len(current), PAGE):
            new, before = current[at : at + PAGE], old[at : at + PAGE]
            pages.append(new if new == before or rng.random() < 0.5 else before)
        return b"".join(pages)
    # A random point in the stream of pending changes: each appended byte is
    # one step, each truncation one step. Changes before it reached the disk.
    steps = sum(_steps(arg) for _, arg in pending)
    left = rng.randint(0, steps)
    data = durable
    for kind, arg in pending:
        if left == 0:
            break
        if isinstance(arg, bytes) and len(arg) > left:
            data += arg[:left]  # a torn append
            break
        if isinstance(arg, tuple) and len(arg[1]) > left:
            data = _apply(data, (kind, (arg[0], arg[1][:left])))  # a torn pwrite
            break
        data = _apply(data, (kind, arg))
        left -= _steps(arg)
    if mode in ("zeros", "garbage") and len(current) > len(data):
        # The size grew further than the data: the rest reads as zeros, or as
        # whatever the newly allocated blocks held before.
        extra = rng.randint(1, len(current) - len(data))
        data += bytes(extra) if mode == "zeros" else rng.randbytes(extra)
    return data


def build_image(state: CrashState, file_mode: str, dir_mode: str, rng: random.Random) -> Image:
    """The tree a reboot after the crash could find: relative path -> bytes
    (None for a directory). See the module docstring for the modes."""
    if file_mode not in FILE_MODES or dir_mode not in DIR_MODES:
        raise ValueError(f"unknown mode {file_mode!r} / {dir_mode!r}")
    image: Image = {}
    contents: dict[int, bytes] = {}

    def visit(number: int, prefix: str) -> None:
        durable_entries, pending = state.dirs[number]
        entries = dict(durable_entries)
        if dir_mode == "drop":
            survived: tuple[DirChange, ...] = ()
        elif dir_mode == "keep":
            survived = pending
        elif dir_mode == "prefix":
            survived = pending[: rng.randint(0, len(pending))]
        elif dir_mode == "subset":
            survived = tuple(change for change in pending if rng.random() < 0.5)
        else:
            survived = pending[-1:]
        for change in survived:
            for name, target in change:
                if target is None:
                    entries.pop(name, None)
                else:
                    entries[name] = target
        for name in sorted(entries):
            target = entries[name]
            path = f"{prefix}{name}"
            if target in state.dirs:
                image[path] = None
                visit(target, path + "/")
            else:
                if target not in contents:
                    contents[target] = _torn_file(*state.files[target], file_mode, rng)
                image[path] = contents[target]

    visit(state.root, "")
    return image


def image_digest(image: Image) -> str:
    """A digest that is equal for equal images (used to check each image once)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(image):
        data = image[path]
        digest.update(path.encode() + (b"/" if data is None else b"=%d:" % len(data)))
        if data is not None:
            digest.update(data)
    return digest.hexdigest()


def write_image(image: Image, dest: Path) -> None:
    """Create the image's tree under ``dest`` (which must not exist)."""
    dest.mkdir()
    for path in sorted(image):
        data = image[path]
        if data is None:
            (dest / path).mkdir()
        else:
            (dest / path).write_bytes(data)
