"""``@cache.memoize``: a function's results, keyed by its arguments and code.

A call's key is ``"<module.qualname>:<code>:<arguments>"``:

* ``<arguments>``: the call bound to the signature with defaults applied (so
  ``f(1, 2)``, ``f(1, y=2)`` and ``f(1)`` with ``y=2`` are one key), the
  ``ignore`` names left out, hashed structurally (``_hashing.py``): the same
  in every process, whatever ``PYTHONHASHSEED``;
* ``<code>``: the fingerprint of the function's normalized code and of the
  user code it calls (``_code_hash.py``), salted with ``version``. Entries of
  older code stay until evicted, so reverting an edit hits again.

A miss takes the key's flight lock (``_single_flight.py``) before computing,
so N callers of a cold key, in any mix of threads and processes, compute it
once; the others wait and read the stored value.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ._cache_args import DEFAULT, INTERNAL_PREFIX, check_seconds, func_name
from ._cache_format import Entry, Head
from ._code_hash import Fingerprint, diff, fingerprint
from ._engine import Engine
from ._hashing import hash_arguments, hash_value, remember
from ._single_flight import Flights, Ticket

__all__ = ["CacheInfo", "CacheLike", "memoizer"]

_log = logging.getLogger("logshelf")
_perf = time.perf_counter
_now = time.time
_PLAIN = frozenset((int, str, bytes, type(None)))
_is_plain = _PLAIN.__contains__
# Keys remembered per memoized function (then forgotten all at once).
_KEY_MEMO_SIZE = 4096


class CacheLike(Protocol):
    """What a memoized function needs of :class:`logshelf.Cache` (a protocol,
    so that this module does not import ``cache.py``, which imports it)."""

    max_bytes: int | None
    ttl: float | None

    @property
    def flights(self) -> Flights | None: ...
    @property
    def engine(self) -> Engine: ...
    def lookup(self, key: str, stale: bool = False) -> tuple[Any, Head] | None: ...
    def entry(self, key: str) -> Entry | None: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    def __contains__(self, key: object) -> bool: ...
    def clear(self, *, func: Callable[..., Any] | str | None = None) -> int: ...
    def store(self, key: str, entry: bytes) -> None: ...
    def encode(
        self,
        value: Any,
        ttl: float | None,
        tags: tuple[str, ...] = (),
        func: str = "",
        cost: float = 0.0,
        stale_ttl: float | None = None,
    ) -> bytes: ...


class CacheInfo(NamedTuple):
    """What a memoized function's ``cache_info()`` returns.

    The first four fields are :func:`functools.lru_cache`'s, in its order,
    so code that reads ``info.hits`` or ``info[0]`` keeps working; logshelf's
    own follow. Counts of calls are this process's; sizes are the function's
    entries in the cache, every code version included.

    Attributes:
        hits: calls answered from the cache (in this process).
        misses: calls that computed (in this process).
        maxsize: the cache's ``max_bytes`` (None: unbounded).
        currsize: the function's entries in the cache (expired ones count
            until they are removed).
        bytes: the stored bytes of those entries.
        waits: calls that waited for another caller's computation of the
            same key, then read its result.
        time_saved: seconds of computation the hits did not repeat.
    """

    hits: int
    misses: int
    maxsize: int | None
    currsize: int
    bytes: int
    waits: int
    time_saved: float


class _Binder:
    """``Signature.bind`` + ``apply_defaults`` as a dict, without building
    ``BoundArguments`` on the hit path (several microseconds) when the
    signature is plain; anything unusual goes through ``inspect``."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.sig = inspect.signature(func)
        params = list(self.sig.parameters.values())
        kinds = {p.kind for p in params}
        P = inspect.Parameter
        self.plain = not kinds & {P.VAR_POSITIONAL, P.VAR_KEYWORD, P.POSITIONAL_ONLY}
        self.names = [p.name for p in params]
        self.positional = [p.name for p in params if p.kind is P.POSITIONAL_OR_KEYWORD]
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.plain and len(args) <= len(self.positional):
            bound = dict(zip(self.positional, args, strict=False))
            if kwargs:
                if not kwargs.keys().isdisjoint(bound) or not kwargs.keys() <= set(self.names):
                    return self._slow(args, kwargs)
                bound.update(kwargs)
            if len(bound) < len(self.names):
                for name, default in self.defaults.items():
                    bound.setdefault(name, default)
                if len(bound) < len(self.names):
                    return self._slow(args, kwargs)  # raises the TypeError of a bad call
            return bound
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


class _Memo:
    """The state behind one memoized function."""

    def __init__(
        self,
        cache: CacheLike,
        func: Callable[..., Any],
        ttl: float | None,
        ignore: tuple[str, ...],
        typed: bool,
        version: object,
        track_code: bool,
        stale_ttl: float | None,
        tags: tuple[str, ...],
    ) -> None:
        self.cache = cache
        self.func = func
        self.name = func_name(func)
        self.ttl = ttl
        self.typed = typed
        self.version = version
        self.track_code = track_code
        self.stale_ttl = stale_ttl
        self.tags = tags
        self.bind = _Binder(func)
        unknown = [name for name in ignore if name not in self.bind.sig.parameters]
        if unknown:
            raise ValueError(f"ignore names no parameter of {self.name}: {unknown}")
        self.ignore = ignore
        self._prefix: str | None = None
        self._fingerprint: Fingerprint | None = None
        self._manifest_saved = False
        self._keys: dict[Any, str] = {}
        # Bound once: the hit path.
        self._lookup = cache.lookup
        self._stale = stale_ttl is not None
        self.hits = self.misses = self.waits = 0
        self.time_saved = 0.0

    # -- keys --------------------------------------------------------------------

    def prefix(self) -> str:
        """``"<name>:<code>:"``, computed at the first call: at decoration
        time the helpers a function calls may not be defined yet."""
        if self._prefix is None:
            salt = hash_value(self.version)
            if self.track_code:
                self._fingerprint = fingerprint(self.func)
                salt += self._fingerprint.digest
            code = hashlib.blake2b(salt, digest_size=8).hexdigest()
            self._prefix = f"{self.name}:{code}:"
        return self._prefix

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        # Calls whose arguments are all exact ints, strs, bytes or None
        # (the common script case) remember their key: equal tuples of these
        # types are equal values of equal types, so the dict lookup gives
        # exactly the key hashing would. Floats are left out (0.0 == -0.0).
        memo_key: Any = None
        if all(map(_is_plain, map(type, args))):
            if not kwargs:
                memo_key = args
            elif all(map(_is_plain, map(type, kwargs.values()))):
                memo_key = (args, tuple(kwargs.items()))
            if memo_key is not None:
                known = self._keys.get(memo_key)
                if known is not None:
                    return known
        key = self._hash_key(args, kwargs)
        if memo_key is not None:
            if len(self._keys) >= _KEY_MEMO_SIZE:
                self._keys.clear()
            self._keys[memo_key] = key
        return key

    def _hash_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        arguments = self.bind(args, kwargs)
        for name in self.ignore:
            del arguments[name]
        return self.prefix() + hash_arguments(arguments, typed=self.typed).hex()

    def manifest_key(self) -> str:
        return f"{INTERNAL_PREFIX}code:{self.prefix()}"

    def manifest(self) -> dict[str, str]:
        self.prefix()
        parts = dict(self._fingerprint.parts) if self._fingerprint is not None else {}
        parts["(version)"] = repr(self.version)
        parts["(track_code)"] = repr(self.track_code)
        return parts

    # -- calls -------------------------------------------------------------------

    def hit(self, value: Any, head: Head) -> Any:
        self.hits += 1
        self.time_saved += head.cost
        # Only values with out-of-band buffers hold arrays on immutable
        # bytes, the ones whose digests can be remembered.
        return remember(value) if head.serializer else value

    def fresh(self, key: str) -> tuple[Any, Head] | None:
        """``(value, header)`` of a stored, unexpired result."""
        return self.cache.lookup(key)

    def save(self, key: str, value: Any, cost: float) -> None:
        """Store a computed result (and, once per process, the manifest of
        the code that computed it, for ``explain``)."""
        cache = self.cache
        try:
            entry = cache.encode(value, self.ttl, self.tags, self.name, cost, self.stale_ttl)
        except Exception as exc:
            raise TypeError(
                f"cannot cache the result of {self.name}(): a {type(value).__name__} "
                f"that cannot be pickled ({exc}); nothing was stored"
            ) from exc
        try:
            cache.store(key, entry)
        except ValueError as exc:  # larger than half of max_bytes
            _log.warning("%s", exc)
            return
        if not self._manifest_saved:
            manifest_key = self.manifest_key()
            if manifest_key not in cache:
                cache.store(manifest_key, cache.encode(self.manifest(), None))
            self._manifest_saved = True

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.key(args, kwargs)
        found = self._lookup(key, self._stale)
        refresh = None
        if found is not None:
            value, head = found
            expires = head.expires_at
            if not expires or _now() < expires:
                return self.hit(value, head)
            # Stale: one caller refreshes it, the others serve the old value.
            flights = self.cache.flights
            refresh = flights.try_acquire(key) if flights is not None else None
            if refresh is None:
                return self.hit(value, head)
        return self.compute(key, args, kwargs, refresh)

    def compute(
        self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], ticket: Ticket | None
    ) -> Any:
        flights = self.cache.flights
        if flights is None:  # a read-only cache: compute, store nothing
            self.misses += 1
            return self.func(*args, **kwargs)
        while True:
            if ticket is None:
                ticket = flights.acquire(key)
            try:
                # Another caller may have stored it while we waited (or
                # between our lookup and the lock).
                found = self.fresh(key)
                if found is not None:
                    self.waits += ticket.waited
                    return self.hit(*found)
                if ticket.held:
                    self.misses += 1
                    started = _perf()
                    value = self.func(*args, **kwargs)
                    self.save(key, value, _perf() - started)
                    return value
            finally:
                flights.release(ticket)
            ticket = None  # the holder stored nothing (it raised or died): again

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.key(args, kwargs)
        found = self.fresh(key)
        if found is not None:
            return self.hit(*found)
        flights = self.cache.flights
        if flights is None:
            self.misses += 1
            return await self.func(*args, **kwargs)
        while True:
            # The flight lock may block in the kernel: wait in a worker
            # thread, never in the event loop.
            ticket = await asyncio.to_thread(flights.acquire, key)
            try:
                found = self.fresh(key)
                if found is not None:
                    self.waits += ticket.waited
                    return self.hit(*found)
                if ticket.held:
                    self.misses += 1
                    started = _perf()
                    value = await self.func(*args, **kwargs)
                    self.save(key, value, _perf() - started)
                    return value
            finally:
                flights.release(ticket)

    # -- inspection --------------------------------------------------------------

    def own_keys(self) -> list[str]:
        start = self.name + ":"
        stored = self.cache.engine.keys()
        return [key for key in stored if key.startswith(start)]

    def info(self) -> CacheInfo:
        keys = self.own_keys()
        sizes = self.cache.engine.get_many(keys)
        return CacheInfo(
            self.hits,
            self.misses,
            self.cache.max_bytes,
            len(keys),
            sum(len(v) for v in sizes if isinstance(v, bytes)),
            self.waits,
            self.time_saved,
        )

    def explain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Why a call would hit or miss, in one or two lines."""
        key = self.key(args, kwargs)
        cache = self.cache
        entry = cache.entry(key)
        now = _now()
        if entry is not None:
            stored = _when(entry.stored_at)
            if not entry.expires_at or now < entry.expires_at:
                return f"hit: {key} was stored {stored}"
            if entry.keep_until and now < entry.keep_until:
                expired = _when(entry.expires_at)
                return f"stale hit: {key} expired {expired}; one caller refreshes it"
            return f"miss: the entry stored {stored} expired {_when(entry.expires_at)}"
        args_part = key.rsplit(":", 1)[1]
        mine = self.own_keys()
        older = [k for k in mine if k.endswith(":" + args_part)]
        if older:
            old_prefix = older[0].rsplit(":", 1)[0] + ":"
            old = cache.get(f"{INTERNAL_PREFIX}code:{old_prefix}")
            changes = diff(old, self.manifest()) if isinstance(old, dict) else []
            detail = "; ".join(changes) if changes else "details were not kept"
            return f"miss: the code changed since these arguments were cached ({detail})"
        if mine:
            return f"miss: new arguments ({len(mine)} other entries of {self.name})"
        return f"miss: nothing of {self.name} is cached yet"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def memoizer(
    cache: CacheLike,
    ttl: float | None,
    ignore: tuple[str, ...] | list[str],
    typed: bool,
    version: object,
    track_code: bool,
    stale_ttl: float | None,
    tags: tuple[str, ...],
) -> Callable[[Callable[..., Any]], Any]:
    """The decorator :meth:`Cache.memoize` returns (arguments checked here,
    before any function is wrapped)."""
    ttl = cache.ttl if ttl is DEFAULT else check_seconds(ttl, "ttl")
    stale = check_seconds(stale_ttl, "stale_ttl")
    if stale is not None and ttl is None:
        raise ValueError("stale_ttl needs a ttl: an entry that never expires is never stale")
    if isinstance(ignore, str) or not all(isinstance(n, str) for n in ignore):
        raise TypeError(f"ignore must be a tuple of parameter names, not {ignore!r}")
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"tags must be a tuple of str, not {tags!r}")

    def decorate(func: Callable[..., Any]) -> Any:
        if isinstance(func, (staticmethod, classmethod)):
            return type(func)(decorate(func.__func__))
        if not callable(func):
            raise TypeError(f"memoize decorates a function, not {func!r}")
        memo = _Memo(cache, func, ttl, tuple(ignore), typed, version, track_code, stale, tags)
        wrapper: Any
        if inspect.iscoroutinefunction(func):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await memo.call_async(args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return memo.call(args, kwargs)

        functools.update_wrapper(wrapper, func)
        wrapper.cache = cache
        wrapper.cache_info = memo.info
        wrapper.cache_clear = lambda: cache.clear(func=memo.name)
        wrapper.cache_key = lambda *a, **kw: memo.key(a, kw)
        wrapper.explain = lambda *a, **kw: memo.explain(a, kw)
        return wrapper

    return decorate
