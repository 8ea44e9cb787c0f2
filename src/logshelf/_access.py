"""When each cache entry was last read, in a map shared by every process.

A hit must not write to the store (no lock, no record: diskcache's LRU turns
every read into a SQLite write). It stores the current time, in seconds, into
one 4-byte slot of ``CACHE.ACCESS`` (``_cache_format.py``), mapped shared: one
memory store, which other processes see at once and the kernel writes back
whenever it likes. Eviction reads the slots; nothing else depends on them, so
a lost or torn update only makes eviction a little less exact.
"""

from __future__ import annotations

import mmap
import os
import time
import zlib

from . import _cache_format as cfmt
from ._fs import FileSystem

__all__ = ["AccessMap"]

_crc32 = zlib.crc32
_time = time.time


class AccessMap:
    """``CACHE.ACCESS`` of one store, mapped; see the module docstring."""

    def __init__(self, map_: mmap.mmap | None, slots: int) -> None:
        self._map = map_
        self._mask = slots - 1
        # A typed view: a store into it is one C-level assignment.
        self._slots = memoryview(map_)[cfmt.ACCESS_HEADER.size :].cast("I") if map_ else None
        #: False when the map could not be opened for writing: reads are then
        #: not recorded (a read-only directory), which eviction tolerates.
        self.tracking = map_ is not None and self._slots is not None and not self._slots.readonly

    @classmethod
    def open(cls, directory: str, writable: bool, fs: FileSystem, mode: int) -> AccessMap:
        """Map the store's access file, creating it when ``writable``. A file
        that is missing, being created by another process right now, or not
        ours gives a map that tracks nothing."""
        path = os.path.join(directory, cfmt.ACCESS_NAME)
        size = cfmt.ACCESS_HEADER.size + 4 * cfmt.ACCESS_SLOTS
        fd = -1
        # Even a read-only handle records its reads when the file lets it:
        # they are what eviction keeps.
        can_write = True
        try:
            if writable:
                try:
                    fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
                except FileExistsError:
                    pass
                else:
                    # Header first, then the size: a process that maps the
                    # file before both are done sees a wrong size and skips it.
                    fs.append(fd, cfmt.encode_access_header())
                    fs.truncate(fd, size)
            if fd < 0:
                try:
                    fd = fs.open(path, os.O_RDWR)
                except PermissionError:
                    fd = fs.open(path, os.O_RDONLY)
                    can_write = False
            header = cfmt.encode_access_header()
            if fs.stat(fd).st_size != size or fs.pread(fd, len(header), 0) != header:
                return cls(None, 1)
            return cls(fs.map_shared(fd, size, can_write), cfmt.ACCESS_SLOTS)
        except OSError:
            # Missing (a read-only handle on a cache never written), or not
            # ours: reads go unrecorded, which only blurs eviction.
            return cls(None, 1)
        finally:
            if fd >= 0:
                fs.close(fd)

    def touch(self, key: str) -> None:
        """Record a read of ``key`` now."""
        slots = self._slots
        if slots is not None and self.tracking:
            # cfmt.access_slot, inlined on the hit path. Plain encode(): a
            # stored key has no lone surrogates (the engine refuses them), and
            # for every other key the bytes are the same.
            slots[_crc32(key.encode()) & self._mask] = int(_time())

    def last(self, key: str) -> int:
        """Seconds since the epoch of the last recorded read of ``key`` (or of a
        key sharing its slot); 0 when none since the last eviction pass."""
        slots = self._slots
        if slots is None:
            return 0
        return int(slots[cfmt.access_slot(key, self._mask + 1)])

    def close(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None
        if self._map is not None:
            self._map.close()
            self._map = None
