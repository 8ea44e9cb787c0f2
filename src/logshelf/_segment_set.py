"""The store directory as a set of segments: create it, seal and start
segments, replace the MANIFEST, write hints, remove what nothing references.

Only writers call these, under the writer lock (except :func:`create_store`,
which builds a new store where nobody can see it yet). The MANIFEST is the
commit point of every change to the segment set: it is replaced atomically
(temporary file, fsync, rename), then the directory is synced.
"""

from __future__ import annotations

import errno
import os
import zlib
from dataclasses import dataclass

from . import _format as fmt
from ._file_lock import ExclusiveFileLock
from ._fs import FileSystem
from ._index import snapshot
from ._lazy_index import BaseEntries, LazyIndex
from ._segment import Segment
from ._view import View
from .errors import CorruptionError, FormatError, StoreNotFoundError

__all__ = [
    "collect_garbage",
    "create_store",
    "directory_mode",
    "ensure_store",
    "remove_segments",
    "seal_record",
    "sealed_hint",
    "write_hint",
    "write_manifest",
    "write_sealed_hint",
]


def directory_mode(mode: int) -> int:
    """The mode of a directory for files of ``mode``: search (x) wherever read is allowed."""
    return mode | ((mode & 0o444) >> 2)


def ensure_store(fs: FileSystem, path: str, flag: str, mode: int) -> None:
    """Make sure a store exists at ``path`` as ``flag`` asks, or raise.

    Flag "n" replaces a regular file (dbm: "always create a new, empty
    database"), but never a directory that is not a store.

    Raises:
        FormatError: ``path`` is a file (flags "r", "w", "c") or a non-empty
            directory without a MANIFEST.
        StoreNotFoundError: no store, and flag "r" or "w".
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        if flag != "n":
            raise FormatError(
                f"{path} is a file, not a logshelf store (a store is a directory "
                "holding a MANIFEST)"
            )
        fs.unlink(path)
    if os.path.exists(os.path.join(path, fmt.MANIFEST_NAME)):
        return
    if flag in ("r", "w"):
        if os.path.isdir(path) and fs.listdir(path):
            raise FormatError(f"{path} is a directory without a MANIFEST: not a logshelf store")
        raise StoreNotFoundError(
            f"no logshelf store at {path} (flag {flag!r} opens an existing "
            "store; use flag 'c' to create one)"
        )
    create_store(fs, path, mode)


def create_store(fs: FileSystem, path: str, mode: int) -> None:
    """Create a new, empty store atomically: build it in a temporary directory,
    then rename that into place. Two processes creating the same store at
    once both succeed; one rename wins and the other opens the winner's store.

    Raises:
        FormatError: ``path`` is a non-empty directory that is not a store.
    """
    if os.path.isdir(path) and fs.listdir(path):
        raise FormatError(f"{path} is a directory without a MANIFEST: not a logshelf store")
    parent = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.creating"
    fs.mkdir(tmp, directory_mode(mode))
    try:
        lock_fd = fs.open(os.path.join(tmp, fmt.LOCK_NAME), os.O_RDWR | os.O_CREAT, mode)
        fs.close(lock_fd)
        # Only ever created here, with the store: a handle that found no
        # counter does not raise one, so one created later could be trusted
        # by readers while such a handle writes.
        fs.write_file_atomic(
            os.path.join(tmp, fmt.CHANGES_NAME), fmt.encode_changes(0), sync_dir=False, mode=mode
        )
        # With the store, so that opening it writes nothing (_lease).
        fs.write_file_atomic(
            os.path.join(tmp, fmt.LEASE_NAME), fmt.encode_lease(), sync_dir=False, mode=mode
        )
        first = Segment.create(fs, tmp, 1, 0, mode)
        first.close()
        # The first segment's header is durable: the first mark (see _synced).
        fs.write_file_atomic(
            os.path.join(tmp, fmt.SYNCED_NAME),
            fmt.encode_synced(first.id, first.salt, fmt.SEGMENT_HEADER.size),
            sync_dir=False,
            mode=mode,
        )
        manifest = fmt.Manifest(1, 2, ((1, fmt.ACTIVE),))
        fs.write_file_atomic(
            os.path.join(tmp, fmt.MANIFEST_NAME), fmt.encode_manifest(manifest), mode=mode
        )
        try:
            fs.rename(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise
            # Someone else created it first; use theirs.
            if not os.path.exists(os.path.join(path, fmt.MANIFEST_NAME)):
                raise FormatError(
                    f"{path} is a directory without a MANIFEST: not a logshelf store"
                ) from exc
        fs.sync_directory(parent)
    finally:
        if os.path.isdir(tmp):
            for name in fs.listdir(tmp):
                fs.unlink(os.path.join(tmp, name))
            fs.rmdir(tmp)


def seal_record(salt: int, txid: int, successor: int) -> bytes:
    """The SEAL record that ends a segment and names its successor."""
    value = fmt.SEAL_VALUE.pack(successor)
    return fmt.pack_record(salt, txid, fmt.KIND_SEAL, True, 0, b"", value, zlib.crc32(value), 0)


def write_manifest(fs: FileSystem, path: str, manifest: fmt.Manifest, mode: int) -> None:
    """Replace the MANIFEST: the commit point. An exception means the old one
    is still in place. The caller syncs the directory afterwards (see
    ``Writer.sync_manifest_rename``: a failure there is another matter)."""
    fs.write_file_atomic(
        os.path.join(path, fmt.MANIFEST_NAME),
        fmt.encode_manifest(manifest),
        sync_dir=False,
        mode=mode,
    )


def write_hint(view: View, mode: int, seal_next: int = 0) -> bool:
    """Snapshot the index entries of ``view``'s active segment, up to the end
    it has parsed (best effort: False when it could not be written; the next
    open then scans). ``seal_next``: the successor its SEAL names."""
    return _write_hint(
        view, view.index, view.active, view.active_slot, view.end, view.txid,
        list(view.active_deletes), seal_next, mode,
    )  # fmt: skip


@dataclass(frozen=True)
class SealedHint:
    """What :func:`write_sealed_hint` needs of a segment that a rollover
    sealed: the segment, its slot, a copy of the index as the rollover left
    it, the segment's end (after the SEAL), last txid, the keys whose final
    state in it is a delete, and the successor its SEAL names. For a view
    opened from the INDEX file and not loaded yet, ``index`` holds only what
    it was told since opening (``LazyIndex.hint_parts``): ``base`` then
    loads the rest of the segment's entries (and deletes), and ``gone``
    names the keys removed since."""

    seg: Segment
    slot: int
    index: dict[str, int]
    covered: int
    txid: int
    deleted: list[str]
    seal_next: int
    gone: frozenset[str] = frozenset()
    base: BaseEntries | None = None


def sealed_hint(view: View, seal_next: int) -> SealedHint:
    """Under the writer lock, at a rollover: what the hint of the segment it
    sealed (still ``view``'s active one) needs. Copying the index is C-speed
    (1-3 ms at 100,000 keys); walking it for the segment's entries (5-25 ms)
    waits for :func:`write_sealed_hint`, after the lock. The copy it must be:
    the index of later moments lacks the keys overwritten since, whose newer
    records a power loss may yet take away (they need not be synced), while
    the hint is synced and would outlive them. A lazy index is not loaded
    for it (a whole load at the first rollover of a handle opened from the
    INDEX file, 0.15 s at 100,000 keys): only this segment's part is, if
    the table holds entries in it, after the lock."""
    index, slot = view.index, view.active_slot
    parts = index.hint_parts(view.active, slot) if isinstance(index, LazyIndex) else None
    if parts is None:
        entries, gone, base = index.copy(), frozenset[str](), None
    else:
        entries, gone, base = parts
    return SealedHint(
        view.active, slot, entries, view.end, view.txid, list(view.active_deletes), seal_next,
        gone, base,
    )  # fmt: skip


def write_sealed_hint(view: View, sealed: SealedHint, mode: int) -> bool:
    """Write the hint :func:`sealed_hint` prepared (best effort, as :func:`write_hint`)."""
    if sealed.seg.fd < 0:
        return False  # compacted away and closed meanwhile
    index, deleted = sealed.index, sealed.deleted
    if sealed.base is not None:
        try:
            index, earlier = sealed.base()
        except (OSError, CorruptionError):
            return False  # without the table's part the hint would lose keys: none
        # What the view was told since opening wins, as when it loads.
        index.update(sealed.index)
        for key in sealed.gone:
            if key not in sealed.index:
                index.pop(key, None)
        deleted = list({*deleted, *(key for key in earlier if key not in index)})
    return _write_hint(
        view, index, sealed.seg, sealed.slot, sealed.covered, sealed.txid, deleted,
        sealed.seal_next, mode,
    )  # fmt: skip


def _write_hint(
    view: View,
    index: dict[str, int],
    seg: Segment,
    slot: int,
    covered: int,
    txid: int,
    deleted: list[str],
    seal_next: int,
    mode: int,
) -> bool:
    keys, offsets = snapshot(index, slot)
    try:
        hint = seg.make_hint(covered, txid, keys, offsets, deleted, seal_next)
        view.fs.write_file_atomic(
            os.path.join(view.path, fmt.hint_name(seg.id)),
            fmt.encode_hint(hint),
            sync_dir=False,
            mode=mode,
        )
    except OSError:
        return False  # A hint is an optimisation: without it the next open scans.
    return True


def collect_garbage(fs: FileSystem, path: str, live: set[int], lock: ExclusiveFileLock) -> bool:
    """Delete segment and hint files whose ids are not in ``live``, and
    leftover temporary files: what a crash left of an interrupted rollover,
    reset or compaction. The caller holds the writer lock; this takes the
    compaction ``lock`` if it is free at once, and does nothing otherwise (a
    running compaction writes segments the MANIFEST names only once it
    commits). Returns whether it ran."""
    if not lock.acquire(0):
        return False
    try:
        _collect_garbage(fs, path, live)
    finally:
        lock.release()
    return True


def _collect_garbage(fs: FileSystem, path: str, live: set[int]) -> None:
    for name in fs.listdir(path):
        if name.endswith(".tmp"):
            # A crashed atomic replacement. (A hint another process is
            # writing right now may go too; hints are optional.)
            _unlink_quietly(fs, os.path.join(path, name))
            continue
        if not name.startswith("seg-") or not name.endswith((".log", ".hint")):
            continue
        try:
            segment_id = int(name[4:20], 16)
        except ValueError:
            continue
        if segment_id not in live and len(name) in (24, 25):
            _unlink_quietly(fs, os.path.join(path, name))


def remove_segments(fs: FileSystem, path: str, segment_ids: list[int]) -> None:
    """Delete segments and their hints. Handles that still read them keep
    their open descriptors (POSIX); anything left behind by an error is
    unreferenced and goes at the next writer's garbage collection."""
    for segment_id in segment_ids:
        for name in (fmt.segment_name(segment_id), fmt.hint_name(segment_id)):
            _unlink_quietly(fs, os.path.join(path, name))


def _unlink_quietly(fs: FileSystem, path: str) -> None:
    try:
        fs.unlink(path)
    except OSError:
        pass
