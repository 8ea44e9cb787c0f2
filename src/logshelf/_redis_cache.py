"""``logshelf.Cache`` on a Redis namespace: what differs from a cache directory.

The entries are the same bytes (``_cache_format``), stored through
:class:`~logshelf._redis_store.RedisStore`. Three things change:

* **Expiry is the server's.** An entry with a ``ttl`` is written with
  ``PEXPIREAT`` at the end of its visibility (or of its stale window), in
  the same script, so the server frees it; readers still check the expiry
  in the entry header, as on disk.
* **Single flight across hosts.** A cold key's computation holds a lock key
  (``logshelf:{N}:flight:<key>``) with an expiry of ``lock_ttl``, renewed
  while its holder lives: a holder that dies lets go. Each holding gets a
  fencing token, larger than every earlier one for that key; the entry is
  written only if no newer token has written the key meanwhile, so a holder
  that stalled past its lock cannot overwrite a newer value with an older.
* **Size is bounded by the server** (``maxmemory`` and its policy), not by
  ``max_bytes``; there is no access map and no eviction pass here.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from . import _cache_format as cfmt
from ._options import Options
from ._redis_scripts import Lock
from ._redis_store import RedisStore, open_url
from ._single_flight import Flights, Ticket

__all__ = ["FLIGHT", "RedisFlights", "RemoteEntries"]

_log = logging.getLogger("logshelf")

# KEYS: the flight lock, the token counter, the key's last fencing token.
# ARGV: ttl (ms). Returns the new token, or 0 when the lock is held. The
# token is above the key's last one even if the counter was lost (evicted).
FLIGHT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local last = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local token = redis.call('INCR', KEYS[2])
if token <= last then
  token = last + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""


class _FlightLock(Lock):
    """A flight's lock: its token is a fencing token drawn when taken."""

    def __init__(self, store: RedisStore, key: str) -> None:
        names = store.names
        kb = key.encode("utf-8", "surrogatepass")
        self._take_run = store.script_on(
            [names.flight(kb), names.fence_counter, names.fence(kb)], "a single-flight lock"
        )
        super().__init__(
            store.script_on([names.flight(kb)], "a single-flight lock"), store.lock_ttl
        )

    def _take(self) -> bool:
        token = int(self._take_run(FLIGHT, [self._ttl_ms]))
        if token:
            self.token = str(token)
        return token > 0


@dataclass
class RedisTicket(Ticket):
    key: str = ""
    lock: Lock | None = None


class RedisFlights(Flights):
    """Single-flight locks on the server (see the module docstring); the
    interface of the directory cache's :class:`Flights`."""

    def __init__(self, store: RedisStore) -> None:  # no super().__init__: no file
        self._store = store
        self._local = threading.local()

    def _held(self) -> dict[str, int]:
        held: dict[str, int] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = {}
        return held

    def token(self, key: str) -> int | None:
        """The fencing token of this thread's flight for ``key``, if any."""
        return self._held().get(key)

    def acquire(self, key: str) -> Ticket:
        ticket = self._take(key, True)
        assert ticket is not None
        return ticket

    def try_acquire(self, key: str) -> Ticket | None:
        return self._take(key, False)

    def _take(self, key: str, blocking: bool) -> Ticket | None:
        held = self._held()
        if key in held:  # the function calls itself with the same arguments
            return Ticket(0, False, True)
        lock = _FlightLock(self._store, key)
        if blocking:
            waited = lock.acquire(None, self._store.path)
        elif lock.try_acquire():
            waited = False
        else:
            return None
        held[key] = int(lock.token)
        return RedisTicket(0, waited, True, True, False, key=key, lock=lock)

    def release(self, ticket: Ticket) -> None:
        if isinstance(ticket, RedisTicket) and ticket.lock is not None:
            self._held().pop(ticket.key, None)
            ticket.lock.release()


class RemoteEntries:
    """The Redis side of one ``Cache`` handle: its store and flights."""

    def __init__(self, url: str, options: Options) -> None:
        self.store = open_url(url, options)
        self.path = self.store.path
        self.flights = RedisFlights(self.store) if options.writable else None

    def put(self, key: str, entry: bytes) -> bool:
        """Write an entry that the server expires with it; fenced when this
        thread computes ``key``. False: a newer computation already stored
        it, and this (older) result was dropped."""
        head = cfmt.peek_entry(entry)
        expire = 0.0
        if head is not None and head.expires_at:
            expire = max(head.expires_at, head.keep_until)
        fence = self.flights.token(key) if self.flights is not None else None
        if self.store.put_expiring(key, entry, expire, fence):
            return True
        _log.info("cache %s: a newer result of %r is stored; this one was dropped", self.path, key)
        return False

    def stats(self) -> dict[str, Any]:
        return self.store.stats()
