"""Cutting a torn tail: bytes after the last committed batch of the active
segment, which a writer must remove before it appends (never append after
garbage). A copy goes to ``quarantine/`` first, for forensics.
"""

from __future__ import annotations

import logging
import os
import time

from . import _format as fmt
from ._fs import FileSystem
from ._segment import Segment

__all__ = ["cut_tail"]

_log = logging.getLogger("logshelf")

# At most this much of a torn tail is copied to quarantine/ before it is cut.
_QUARANTINE_MAX = 16 << 20


def cut_tail(
    fs: FileSystem, store: str, seg: Segment, end: int, size: int, mode: int, unsynced: bool
) -> None:
    """Copy ``seg``'s bytes ``[end, size)`` to quarantine, cut them, and sync.
    ``unsynced``: they hold damage past the synced mark, followed by valid
    records (see ``check_tail``), which go too."""
    qdir = os.path.join(store, fmt.QUARANTINE_DIR)
    try:
        if not os.path.isdir(qdir):
            fs.mkdir(qdir)
        name = f"seg-{seg.id:016x}-at-{end}-{time.time_ns()}.bin"
        data = fs.pread(seg.fd, min(size - end, _QUARANTINE_MAX), end)
        fs.write_file_atomic(os.path.join(qdir, name), data, sync_dir=False, mode=mode)
    except OSError:
        pass  # Quarantine is forensics only; cutting the tail is what matters.
    seg.truncate(end)
    seg.sync()
    if unsynced:
        _log.warning(
            "cut %d bytes from %s at offset %d: damage after the synced mark, "
            "followed by valid records, as a power loss leaves writes that were "
            "not synced (written back out of order); the batches in them are "
            "lost, none in part (copy kept in %s)",
            size - end,
            seg.path,
            end,
            qdir,
        )
        return
    _log.warning(
        "cut %d bytes of torn tail from %s at offset %d (copy kept in %s)",
        size - end,
        seg.path,
        end,
        qdir,
    )
