"""``logshelf.Cache``: a size-bounded, expiring cache over the bytes engine.

A cache is an ordinary logshelf store whose values are *entries*
(``_cache_format.py``): a header with the store time, expiry, tags and the
name of the function that computed it, then the pickled value. Nothing else
is stored: no second database, no directory per entry.

Reads never write. A hit records its time in a shared memory map
(``_access.py``); the size bound is enforced after writes, by rewriting the
oldest segments without the entries eviction drops (``_eviction.py``,
through the compaction machinery). ``docs/caching.md`` is the guide.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from . import _cache_format as cfmt
from . import _codecs
from ._access import AccessMap
from ._cache_args import DEFAULT, INTERNAL_PREFIX, check_seconds, func_name
from ._engine import Engine
from ._eviction import POLICIES, Evictor
from ._memoize import memoizer
from ._options import DEFAULT_PROTOCOL, MIN_SEGMENT_SIZE, check_compression, make_options
from ._redis_url import is_url
from ._single_flight import Flights
from .errors import CorruptionError, StoreError

if TYPE_CHECKING:
    from ._redis_cache import RemoteEntries

__all__ = ["DEFAULT", "Cache", "memoize"]

_log = logging.getLogger("logshelf")

_time = time.time
_loads = pickle.loads
_decode = cfmt.decode_entry
_peek = cfmt.peek_entry
_decode_oob = cfmt.decode_oob


_MISSING = object()


class Cache(MutableMapping[str, Any]):
    """A persistent cache; also a ``MutableMapping[str, Any]``.

    Args:
        path: the cache directory (a logshelf store; created if missing).
        max_bytes: bound on the bytes of the store's segments. After every
            write that crosses it, the least recently used entries (per
            ``policy``) are evicted until the store is under 90% of it. None
            (default): nothing is ever evicted.
        policy: "lru" (approximate least recently used, default), "lrs"
            (least recently stored) or "none" (never evict; ``max_bytes`` must
            then be None).
        ttl: default seconds an entry stays visible; None: forever.
        compression: None, "lz4", "zlib" or "bz2" for stored values.
        protocol: pickle protocol of stored values.
        flag: "c" (create if needed), "w", "r" (read-only: for inspection)
            or "n" (start empty).
        durability, lock_timeout, mode: as for :func:`logshelf.open`.

    Raises:
        ValueError: an argument is out of range (the message names it).

    >>> import logshelf, tempfile, os
    >>> with logshelf.Cache(os.path.join(tempfile.mkdtemp(), "c")) as cache:
    ...     cache.set("answer", 42, ttl=60, tags=("demo",))
    ...     cache["answer"]
    42
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ".logshelf-cache",
        *,
        max_bytes: int | None = None,
        policy: str = "lru",
        ttl: float | None = None,
        compression: str | None = None,
        protocol: int = DEFAULT_PROTOCOL,
        flag: str = "c",
        durability: str = "none",
        lock_timeout: float | None = None,
        mode: int = 0o666,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
                raise ValueError(f"max_bytes must be a positive int or None, not {max_bytes!r}")
            if policy == "none":
                raise ValueError("policy='none' never evicts, so max_bytes must be None")
        if not isinstance(protocol, int) or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(f"protocol must be 0..{pickle.HIGHEST_PROTOCOL}, not {protocol!r}")
        self.max_bytes = max_bytes
        self.policy = policy
        self.ttl = check_seconds(ttl, "ttl")
        self._codec = check_compression(compression)
        self._protocol = protocol
        # Segments small against the bound: eviction works a segment at a
        # time, and the bound may be exceeded by at most one of them.
        segment = 128 << 20
        if max_bytes is not None:
            segment = max(MIN_SEGMENT_SIZE, min(segment, max_bytes // 8))
        options = make_options(
            path,
            flag,
            durability=durability,
            lock_timeout=lock_timeout,
            max_segment_size=segment,
            mode=mode,
        )
        self.path = options.path
        self._remote: RemoteEntries | None = None
        self._flights: Flights | None
        if is_url(path):  # a namespace of a Redis server (docs/redis.md)
            if max_bytes is not None:
                raise ValueError(
                    "a cache on Redis is bounded by the server's maxmemory policy, "
                    "not max_bytes (docs/redis.md)"
                )
            from ._redis_cache import RemoteEntries  # imports redis: only for such a URL

            self._remote = RemoteEntries(path, options)
            self.path = self._remote.path
            # RedisStore implements the bytes-store protocol, which is all
            # the cache and its memoized functions use of an Engine.
            self._engine = cast(Engine, self._remote.store)
            self._access = AccessMap(None, 0)  # no access times: the server evicts
            self._flights = self._remote.flights
        else:
            self._engine = Engine(options)
            try:
                self._access = AccessMap.open(self.path, options.writable, options.fs, mode)
                self._flights = Flights(self.path, options.fs, mode) if options.writable else None
            except BaseException:
                self._engine.close()
                raise
        self._evictor = Evictor(self._engine, self._access, policy)
        self._get = self._engine.get
        self._touch = self._access.touch
        #: Reads and writes of this handle (process-local), for stats().
        self.hits = 0
        self.misses = 0
        self._reported: set[str] = set()

    # -- entries -------------------------------------------------------------

    def _read(self, key: str) -> cfmt.Entry | None:
        """The live entry of ``key`` (stale ones included), or None; a
        damaged entry is reported once and reads as absent."""
        try:
            data = self._get(key)
            if data is None:
                return None
            return _decode(data, key)
        except CorruptionError as exc:
            self._report(key, exc)
            return None

    def _report(self, key: str, exc: BaseException) -> None:
        if key not in self._reported:
            self._reported.add(key)
            _log.warning("cache %s: ignoring the damaged entry %r: %s", self.path, key, exc)

    def entry(self, key: str) -> cfmt.Entry | None:
        """The decoded header of ``key``'s entry, expired or not (None when
        absent or damaged): for inspection and ``explain()``."""
        return self._read(key)

    def lookup(self, key: str, stale: bool = False) -> tuple[Any, cfmt.Head] | None:
        """``(value, header)`` of a visible entry (or a stale one when
        ``stale``), recording the read for eviction; None on a miss. A damaged
        entry is reported once and reads as a miss."""
        try:
            data = self._get(key)
            if data is None:
                return None
            head = _peek(data)
            if head is None:
                _decode(data, key)  # raises, saying what is wrong
                return None
            expires = head.expires_at
            if expires and _time() >= expires:
                keep = head.keep_until
                if not stale or not keep or _time() >= keep:
                    return None
            self._touch(key)
            # Out-of-band buffers are read as views of ``data`` itself, with
            # no copy at all; a small value is cheaper to slice.
            payload: bytes | memoryview = (
                memoryview(data)[head.head_len :] if head.serializer else data[head.head_len :]
            )
            if head.codec:
                payload = _codecs.decompress(head.codec, bytes(payload), head.rawlen)
            if head.serializer:
                stream, buffers = _decode_oob(payload)
                return _loads(stream, buffers=buffers), head
            return _loads(payload), head
        except Exception as exc:  # a damaged record, a class that moved: a miss
            if isinstance(exc, StoreError) and not isinstance(exc, CorruptionError):
                raise  # closed, read-only, lock timeout: not the entry's fault
            self._report(key, exc)
            return None

    def encode(
        self,
        value: Any,
        ttl: float | None,
        tags: tuple[str, ...] = (),
        func: str = "",
        cost: float = 0.0,
        stale_ttl: float | None = None,
    ) -> bytes:
        """The entry bytes for ``value``; pickling errors propagate with
        nothing written."""
        buffers: list[pickle.PickleBuffer] = []
        if self._protocol >= 5:
            # Large buffers (numpy arrays) out of band: written once, read
            # back as views of the stored bytes, without a copy.
            data = pickle.dumps(value, self._protocol, buffer_callback=buffers.append)
        else:
            data = pickle.dumps(value, self._protocol)
        serializer = cfmt.SERIALIZER_PICKLE
        if buffers:
            serializer = cfmt.SERIALIZER_PICKLE_OOB
            data = cfmt.encode_oob(data, [b.raw() for b in buffers])
        codec, rawlen = 0, 0
        if self._codec:
            codec, packed = _codecs.compress(self._codec, data)
            if codec:
                data, rawlen = packed, len(data)
        now = _time()
        expires = now + ttl if ttl is not None else 0.0
        keep = expires + stale_ttl if expires and stale_ttl is not None else 0.0
        return cfmt.encode_entry(
            data,
            codec=int(codec),
            serializer=serializer,
            rawlen=rawlen,
            stored_at=now,
            expires_at=expires,
            keep_until=keep,
            cost=cost,
            tags=tags,
            func=func,
        )

    def store(self, key: str, entry: bytes) -> None:
        """Write an encoded entry, then keep the size bound.

        Raises:
            ValueError: the entry is more than half of ``max_bytes`` (it would
                flush the whole cache, diskcache's issue #122).
        """
        if self.max_bytes is not None and len(entry) > self.max_bytes // 2:
            raise ValueError(
                f"the value of {key!r} takes {len(entry)} bytes, more than half of "
                f"max_bytes={self.max_bytes}: not cached"
            )
        if self._remote is not None:  # expiring on the server, fenced
            self._remote.put(_check_key(key), entry)
            return
        self._engine.put(_check_key(key), 0, entry, 0)
        if self.max_bytes is not None:
            self._evictor.after_write(self.max_bytes)

    # -- the mapping -----------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl: float | None = DEFAULT, tags: tuple[str, ...] = ()
    ) -> None:
        """Store ``value`` under ``key``, visible for ``ttl`` seconds (the
        cache's default when not given; None: forever), with ``tags`` for
        :meth:`clear`."""
        ttl = self.ttl if ttl is DEFAULT else check_seconds(ttl, "ttl")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags must be a tuple of str, not {tags!r}")
        self.store(_check_key(key), self.encode(value, ttl, tuple(tags)))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent or expired."""
        found = self.lookup(_check_key(key))
        if found is None:
            self.misses += 1
            return default
        self.hits += 1
        return found[0]

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        visible = self.__contains__(key)
        if not self._engine.delete(_check_key(key)) or not visible:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        entry = self._read(key)
        return entry is not None and not cfmt.is_expired(entry, _time())

    def entries(self) -> Iterator[tuple[str, cfmt.Entry]]:
        """``(key, entry header)`` of every visible entry (reads each one)."""
        now = _time()
        stored = self._engine.keys()
        for key in stored:
            if key.startswith(INTERNAL_PREFIX):
                continue
            entry = self._read(key)
            if entry is not None and not cfmt.is_expired(entry, now):
                yield key, entry

    def __iter__(self) -> Iterator[str]:
        for key, _ in self.entries():
            yield key

    def __len__(self) -> int:
        """Visible entries; a full pass over the cache (expiry is per entry)."""
        return sum(1 for _ in self.entries())

    # -- maintenance -------------------------------------------------------------

    def clear(  # type: ignore[override]  # MutableMapping.clear() returns None
        self,
        *,
        tag: str | None = None,
        func: Callable[..., Any] | str | None = None,
        older_than: float | None = None,
    ) -> int:
        """Delete entries and return how many. With no argument, every entry;
        otherwise those matching all of: having ``tag``, computed by ``func``
        (a memoized function, the function it wraps, or its qualified name),
        stored more than ``older_than`` seconds ago."""
        older = check_seconds(older_than, "older_than")
        name = None if func is None else func_name(func)
        stored = self._engine.keys()
        if tag is None and name is None and older is None:
            return self._engine.delete_many(stored)  # the cache's own keys too
        if name is not None:
            # Memoized results are keyed "<name>:<code>:<arguments>": the
            # name picks them without reading a single entry.
            stored = [key for key in stored if key.startswith(name + ":")]
        now = _time()
        doomed = []
        for key in stored:
            if key.startswith(INTERNAL_PREFIX):
                continue
            if tag is None and older is None:
                doomed.append(key)
                continue
            entry = self._read(key)
            if entry is None:
                continue
            if tag is not None and tag not in entry.tags:
                continue
            if older is not None and entry.stored_at > now - older:
                continue
            doomed.append(key)
        return self._engine.delete_many(doomed)

    def expire(self) -> int:
        """Delete every entry past its expiry (and stale window); return how many."""
        now = _time()
        doomed = []
        stored = self._engine.keys()
        for key in stored:
            entry = self._read(key)
            if entry is not None and cfmt.is_dead(entry, now):
                doomed.append(key)
        return self._engine.delete_many(doomed)

    def evict(self, to_bytes: int | None = None) -> int:
        """Evict entries (per ``policy``; expired ones first) until the store
        takes at most ``to_bytes`` (default: 90% of ``max_bytes``); return
        the bytes reclaimed.

        Raises:
            ValueError: no ``to_bytes`` and no ``max_bytes``, or a bad value.
        """
        if self._remote is not None:
            raise ValueError("a cache on Redis is bounded by the server's maxmemory policy")
        if to_bytes is None:
            if self.max_bytes is None:
                raise ValueError("evict() needs to_bytes= when the cache has no max_bytes")
            to_bytes = self._evictor.low_water(self.max_bytes)
        if isinstance(to_bytes, bool) or not isinstance(to_bytes, int) or to_bytes < 0:
            raise ValueError(f"to_bytes must be an int >= 0, not {to_bytes!r}")
        return self._evictor.evict(to_bytes, wait=True)

    def stats(self) -> dict[str, Any]:
        """This handle's hits and misses (of ``get`` and ``[]``; memoized
        functions count theirs in ``cache_info()``), what its evictions
        removed, and the store's keys and bytes (expired entries included
        until removed)."""
        store = self._engine.stats()
        return {
            "hits": self.hits,
            "misses": self.misses,
            "keys": store["keys"],
            "bytes": store.get("segment_bytes"),  # None on Redis
            "max_bytes": self.max_bytes,
            "policy": self.policy,
            "evicted": self._evictor.evicted,
            "evicted_bytes": self._evictor.evicted_bytes,
            "access_tracking": self._access.tracking,
        }

    def memoize(
        self,
        ttl: float | None = DEFAULT,
        ignore: tuple[str, ...] | list[str] = (),
        typed: bool = False,
        version: object = None,
        track_code: bool = True,
        stale_ttl: float | None = None,
        tags: tuple[str, ...] = (),
    ) -> Callable[[Callable[..., Any]], Any]:
        """Decorator caching a function's results here; see
        :func:`logshelf.memoize` and ``docs/caching.md``."""
        return memoizer(self, ttl, ignore, typed, version, track_code, stale_ttl, tags)

    @property
    def flights(self) -> Flights | None:
        """Single-flight locks (None on a read-only handle)."""
        return self._flights

    @property
    def engine(self) -> Engine:
        return self._engine

    def sync(self) -> None:
        self._engine.sync()

    def close(self) -> None:
        self._engine.close()
        self._access.close()

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"max_bytes={self.max_bytes}, policy={self.policy!r}"
        return f"<logshelf.Cache {self.path!r} {state}>"


def _check_key(key: object) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"cache keys must be str, not {type(key).__name__}: {key!r}")


_default_caches: dict[str, Cache] = {}


def memoize(
    func: Callable[..., Any] | None = None,
    /,
    *,
    path: str | os.PathLike[str] = ".logshelf-cache",
    ttl: float | None = DEFAULT,
    ignore: tuple[str, ...] | list[str] = (),
    typed: bool = False,
    version: object = None,
    track_code: bool = True,
    stale_ttl: float | None = None,
    tags: tuple[str, ...] = (),
) -> Any:
    """Memoize ``func`` in the cache at ``path`` (default ``.logshelf-cache``
    in the current directory, opened once per process and never size-bounded:
    open a :class:`Cache` with ``max_bytes`` for that).

    Use as ``@logshelf.memoize`` or ``@logshelf.memoize(ttl=3600)``; the
    arguments are those of :meth:`Cache.memoize`.
    """
    where = path if is_url(path) else os.path.abspath(path)
    cache = _default_caches.get(where)
    if cache is None or cache.closed:
        cache = _default_caches[where] = Cache(where)
    decorate = memoizer(cache, ttl, ignore, typed, version, track_code, stale_ttl, tags)
    return decorate if func is None else decorate(func)
