"""Keeping a cache under its size bound without a write per read.

Eviction works on whole segments, oldest first, through the compaction
machinery: it rewrites the oldest segments with only the entries it keeps,
and the rewritten files replace them (``Engine.compact(max_inputs, drop)``).
One pass takes as inputs the oldest segments holding about twice the bytes
to free, and drops from them:

* every entry past its expiry and stale window;
* then, until enough is freed, the entries used least recently: ranked by
  the later of their store time and their last read in ``CACHE.ACCESS``
  (``policy="lru"``), or by store time alone (``policy="lrs"``).

Entries live in the order they were stored, so the oldest segments hold
the least recently stored entries; an entry read since is kept, rewritten,
and considered again by a later pass. ``docs/caching.md`` says how far this
is from exact LRU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from . import _cache_format as cfmt
from ._access import AccessMap
from ._engine import Engine
from .errors import StoreError

__all__ = ["POLICIES", "Evictor"]

_now = time.time
_log = logging.getLogger("logshelf")

POLICIES = ("lru", "lrs", "none")
# Evicting down to this fraction of max_bytes, rather than to just under it,
# lets many writes pass between two evictions.
_LOW_WATER = 0.9
# A pass examines the oldest segments holding this many times the bytes it
# must free: the rest of what it reads is kept (rewritten), so this is the
# price of choosing by reads rather than by age alone.
_WINDOW = 2
# Passes in one eviction (estimates of segment sizes can fall short).
_MAX_PASSES = 16


class Evictor:
    """Eviction of one cache handle; counts what it removed."""

    def __init__(self, engine: Engine, access: AccessMap, policy: str) -> None:
        self._engine = engine
        self._access = access
        self._policy = policy
        self.evicted = 0
        self.evicted_bytes = 0

    @staticmethod
    def low_water(max_bytes: int) -> int:
        return int(max_bytes * _LOW_WATER)

    def after_write(self, max_bytes: int) -> None:
        """Evict if the store grew past ``max_bytes``. While another handle
        evicts or compacts, this waits for it and then checks again: the
        bound holds after every write, whoever's eviction brought it back."""
        if self._engine.stats()["segment_bytes"] > max_bytes:
            try:
                self.evict(self.low_water(max_bytes), wait=True)
            except (OSError, StoreError) as exc:
                # The write succeeded; a failed eviction (a lock timeout, a
                # full disk) changed nothing and must not look like a failed
                # write. The next write tries again.
                _log.warning("eviction in %s failed: %s", self._engine.path, exc)

    def evict(self, to_bytes: int, wait: bool) -> int:
        """Rewrite the oldest segments without evicted entries until the
        store takes at most ``to_bytes``; return the bytes reclaimed."""
        engine = self._engine
        start = engine.stats()["segment_bytes"]
        for _ in range(_MAX_PASSES):
            stats = engine.stats()
            disk = stats["segment_bytes"]
            if disk <= to_bytes:
                break
            need = disk - to_bytes
            # Segment sizes are not known one by one; the mean is a fair
            # guess (compaction outputs at the front are often smaller).
            mean = max(1, disk // max(1, stats["segments"]))
            window = math.ceil(_WINDOW * need / mean)
            # Too few sealed segments: everything, the active one sealed first.
            full = self._policy == "none" or window > stats["segments"] - 1
            inputs = None if full else window
            drop = _Selection(self, need)
            result = engine.compact(wait=wait, max_inputs=inputs, drop=drop)
            if not result.compacted or self._policy == "none":
                break  # another compaction runs (wait=False), or nothing may go
        return max(0, start - engine.stats()["segment_bytes"])


class _Selection:
    """One pass's choice of entries to drop (the ``Drop`` of ``_compaction``)."""

    def __init__(self, evictor: Evictor, need: int) -> None:
        self._evictor = evictor
        self._need = need
        self._now = _now()
        self._chosen: set[str] = set()

    def select(self, keys: list[str], sizes: list[int], read: Callable[[str], bytes]) -> None:
        evictor = self._evictor
        lru = evictor._policy == "lru" and evictor._access.tracking
        last = evictor._access.last
        now = self._now
        ranked = []
        freed = 0
        for key, size in zip(keys, sizes, strict=True):
            head = cfmt.peek_entry(read(key))
            if head is None or cfmt.is_dead(head, now):
                self._chosen.add(key)  # expired, or not an entry of ours
                freed += size
            elif evictor._policy != "none":
                # Last use: the later of its store and its last read (LRU),
                # or its store alone (LRS). Ties keep store order.
                used = max(head.stored_at, last(key)) if lru else head.stored_at
                ranked.append((used, key, size))
        ranked.sort(key=lambda item: item[0])
        for _, key, size in ranked:
            if freed >= self._need:
                break
            self._chosen.add(key)
            freed += size

    def __call__(self, key: str, value: bytes, codec: int) -> bool:
        if key not in self._chosen:
            return False
        self._evictor.evicted += 1
        self._evictor.evicted_bytes += len(value) + len(key)
        return True
