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

from . import _cache_args, _codecs
from . import _cache_format as cfmt
from ._access import AccessMap
from ._cache_args import DEFAULT, INTERNAL_PREFIX, check_bound, check_seconds, func_name
from ._engine import Engine
from ._eviction import POLICIES, Evictor
from ._memoize import memoizer
from ._options import DEFAULT_PROTOCOL, check_compression, make_options
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
        durability: what a returned write survives, as for
            :func:`logshelf.open`: "none" (default), "interval" or "always".
        lock_timeout: seconds a write may wait for the writer lock before
            raising :class:`~logshelf.LockTimeoutError`; None waits indefinitely.
        mode: permission bits of the files the cache creates, less the umask.

    Raises:
        ValueError: an argument is out of range (the message names it).
        StoreNotFoundError: flag "r" or "w" and no cache at ``path``.
        FormatError: ``path`` is not a logshelf store.

    Examples:
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
        check_bound(max_bytes, policy, protocol, POLICIES, remote=is_url(path))
        self.max_bytes = max_bytes
        self.policy = policy
        self.ttl = check_seconds(ttl, "ttl")
        self._codec = check_compression(compression)
        self._protocol = protocol
        options = make_options(
            path,
            flag,
            durability=durability,
            lock_timeout=lock_timeout,
            max_segment_size=_cache_args.segment_size(max_bytes),
            mode=mode,
        )
        self.path = options.path
        self._remote: RemoteEntries | None = None
        self._flights: Flights | None
        if is_url(path):  # a namespace of a Redis server (docs/redis.md)
            from ._redis_cache import RemoteEntries  # imports redis: only for such a URL

            self._remote = RemoteEntries(path, options)
            self.path = self._remote.path
            # The bytes-store protocol is all that the cache uses of an Engine.
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
        # Only entries, never values with buffers (foreign ones: peek_entry).
        self._get: Callable[[str], bytes | None] = self._engine.get  # type: ignore[assignment]
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
        """Store ``value`` under ``key``, replacing any entry it had.

        Args:
            key: the entry's name.
            value: any picklable object.
            ttl: seconds the entry stays visible; the cache's default when
                not given, None for ever.
            tags: names :meth:`clear` can select the entry by.

        Raises:
            TypeError: ``key`` is not a str, or ``tags`` not a tuple of str.
            pickle.PicklingError: ``value`` cannot be pickled (pickle raises
                TypeError for some objects); nothing is written.
            ValueError: a negative ``ttl``, or an entry larger than half of
                ``max_bytes`` (it would flush the whole cache).
            ReadOnlyError: the cache was opened with flag "r".
        """
        ttl = self.ttl if ttl is DEFAULT else check_seconds(ttl, "ttl")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags must be a tuple of str, not {tags!r}")
        self.store(_check_key(key), self.encode(value, ttl, tuple(tags)))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent or expired.

        A damaged entry (a failed checksum, a class that no longer unpickles)
        reads as absent; it is reported once through the ``logshelf`` logger.

        Raises:
            TypeError: ``key`` is not a str.
        """
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
        """``(key, entry header)`` of every visible entry, reading each one's
        header: the store time, expiry, tags and the function that computed it."""
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
        """Delete entries and return how many.

        With no argument, every entry. Otherwise those matching all the
        filters given.

        Args:
            tag: entries stored with this tag.
            func: entries computed by this memoized function (the function
                it wraps, or its qualified name, also select it).
            older_than: entries stored more than this many seconds ago.

        Raises:
            ValueError: a negative ``older_than``.
            ReadOnlyError: the cache was opened with flag "r" and some
                entry matches.
        """
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
        """Delete every entry past its expiry (and its stale window); return how many.

        Expired entries are invisible whether or not this runs; it gives
        their space back to the next compaction or eviction.

        Raises:
            ReadOnlyError: the cache was opened with flag "r" and some
                entry has expired.
        """
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
            ReadOnlyError: the cache was opened with flag "r".
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
        """Decorator caching a function's results in this cache.

        A call is looked up by the function's name, a fingerprint of its
        code (and of the user code it calls), and a structural hash of its
        arguments bound to the signature: ``f(1, 2)`` and ``f(1, y=2)`` are
        one entry, in every process. Many callers of one cold key, threads
        or processes, compute it once. The wrapped function gains
        ``cache_info()``, ``cache_clear()``, ``cache_key(...)`` and
        ``explain(...)`` (why a call would hit or miss). See ``docs/caching.md``.

        Args:
            ttl: seconds a result stays fresh; the cache's default when not
                given, None for ever.
            ignore: parameter names left out of the key (a logger, a
                connection).
            typed: tell ``1``, ``1.0`` and ``True`` apart, as
                :func:`functools.lru_cache` does.
            version: any value mixed into the key; change it to
                invalidate by hand.
            track_code: make the function's code part of the key, so that
                an edit to it or to a helper it calls recomputes.
            stale_ttl: after ``ttl``, serve the old result this many more
                seconds while one caller recomputes it (needs a ``ttl``).
            tags: tags of every stored result, for :meth:`clear`.

        Raises:
            ValueError: a negative ``ttl`` or ``stale_ttl``, or a
                ``stale_ttl`` without a ``ttl``.
            TypeError: ``ignore`` or ``tags`` is not a tuple of str, or the
                decorated object is not callable. A call raises TypeError
                when an argument cannot be hashed by content (an
                ``UnhashableArgumentError`` naming it) or when its result
                cannot be pickled (nothing is stored).

        """
        return memoizer(self, ttl, ignore, typed, version, track_code, stale_ttl, tags)

    @property
    def flights(self) -> Flights | None:
        """Single-flight locks (None on a read-only handle)."""
        return self._flights

    @property
    def engine(self) -> Engine:
        """The bytes engine underneath (for the cache's own modules)."""
        return self._engine

    def sync(self) -> None:
        """Make every write so far durable (an fsync), whatever ``durability``."""
        self._engine.sync()

    def close(self) -> None:
        """Close the cache; calling it again does nothing. Any other use of a
        closed cache raises :class:`~logshelf.StoreClosedError`."""
        self._engine.close()
        self._access.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
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
    """Cache ``func``'s results on disk, in the cache at ``path``.

    Use it bare, ``@logshelf.memoize``, or with arguments,
    ``@logshelf.memoize(ttl=3600)``. The cache at ``path`` (default
    ``.logshelf-cache`` in the current directory) is opened once per process
    and never size-bounded: for a bound, open a :class:`Cache` with
    ``max_bytes`` and use :meth:`Cache.memoize`. The other keyword arguments,
    and the errors raised, are those of :meth:`Cache.memoize`.

    Args:
        func: the function, when used bare as ``@logshelf.memoize``.
        path: the cache directory (created if missing).

    Examples:
        >>> import logshelf, tempfile, os
        >>> where = os.path.join(tempfile.mkdtemp(), "cache")
        >>> @logshelf.memoize(path=where)
        ... def slow_add(a, b=1):
        ...     return a + b
        >>> slow_add(1, 2), slow_add(1, b=2)   # one entry: the call is bound first
        (3, 3)
        >>> slow_add.cache_info().hits, slow_add.cache_info().misses
        (1, 1)
    """
    where = path if is_url(path) else os.path.abspath(path)
    cache = _default_caches.get(where)
    if cache is None or cache.closed:
        cache = _default_caches[where] = Cache(where)
    decorate = memoizer(cache, ttl, ignore, typed, version, track_code, stale_ttl, tags)
    return decorate if func is None else decorate(func)
