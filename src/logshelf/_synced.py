"""The synced mark: how far the active segment is known to be on disk.

After a power loss the kernel may have written back a later page of the
active segment's unsynced bytes and not an earlier one: valid records then
follow an invalid one, which is also what damage looks like. The mark
(``SYNCED``, docs/format.md §6.2) tells the two apart: a stop at or after it
lies in bytes no sync had covered, and is cut like a torn tail; a stop before
it is damage to synced bytes, and opening refuses as before.

Why it is a lower bound without an fsync of its own: a writer rewrites it
(one ``pwrite``) only after an ``fdatasync`` of that segment returned, naming
bytes that were durable before the new mark existed even in the page cache.
Whichever intact version of the file a power loss leaves, its bytes were
already durable when it was written; a torn one fails its checksum. Segment
bytes below a committed end are never rewritten or cut, ids are never reused
and the salt tells a leftover file at the same path apart, so a mark stays
true for as long as its segment exists. A mark left stale (not yet written
back) only makes the floor lower: more of the tail is taken for unsynced.

The mark is made durable (one ``fdatasync`` of this small file) only where a
rollover pays for several syncs anyway: the new segment's first mark, so that
every active segment has one from the start. An ``fsync`` per write would
double the cost of ``durability="always"``.

Only writers write it, under the writer lock, where their view of the
active segment is the store's (a stale handle must never overwrite the mark
of a newer segment with one of its own sealed segment).
"""

from __future__ import annotations

import os

from . import _format as fmt
from ._fs import FileSystem

__all__ = ["MarkWriter", "read_mark"]


def read_mark(fs: FileSystem, store: str) -> tuple[int, int, int] | None:
    """``(segment id, salt, end)`` of the store's mark; None when there is no
    intact one (a store from before marks, a torn or lost mark file)."""
    try:
        data = fs.read_file(os.path.join(store, fmt.SYNCED_NAME))
    except OSError:
        return None
    return fmt.decode_synced(data)


class MarkWriter:
    """A writer's side of the mark. Best effort throughout: a mark that could
    not be written leaves an older (lower) one, or none, never a wrong one."""

    def __init__(self, fs: FileSystem, store: str, mode: int) -> None:
        self.fs = fs
        self.path = os.path.join(store, fmt.SYNCED_NAME)
        self.mode = mode
        self.fd = -1
        # The mark last written, so that an unchanged one costs no write.
        self.last: tuple[int, int, int] | None = None

    def record(self, segment_id: int, salt: int, end: int) -> None:
        """``[0, end)`` of that segment is durable: an fdatasync of it returned."""
        mark = (segment_id, salt, end)
        if mark == self.last:
            return
        try:
            if self.fd < 0:
                # Not O_APPEND: pwrite on an O_APPEND descriptor appends on Linux.
                self.fd = self.fs.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
            self.last = None  # until the write is known to be complete
            self.fs.pwrite(self.fd, fmt.encode_synced(segment_id, salt, end), 0)
            self.last = mark
        except OSError:
            pass  # the previous mark (or a torn one, failing its checksum) remains

    def make_durable(self) -> None:
        """fdatasync the mark file (where a rollover already pays for syncs)."""
        if self.fd < 0 or self.last is None:
            return
        try:
            self.fs.datasync(self.fd)
        except OSError:
            pass  # then the older durable mark stands: lower, still true

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                self.fs.close(fd)
            except OSError:
                pass
