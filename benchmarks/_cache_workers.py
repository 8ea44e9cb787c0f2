"""Functions and child-process entry points of ``bench_cache.py``.

They live in a module of their own, importable by name, so that children
started by spawn or by the fork server find them, and so that every system
(logshelf, diskcache, joblib) memoizes the very same module-level functions:
joblib and logshelf's code tracking both key a function by module and name.

Peer libraries are imported inside the functions that use them, so this
module imports with logshelf alone.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

#: Calls of the memoized functions in this process that really ran (a hit
#: must leave it unchanged).
CALLS = 0

#: What :func:`fixed` returns: a small value, built once, so that a miss costs
#: no computing (about 80 bytes pickled, like benchlib's small records).
FIXED = {"id": 7, "name": "user7", "email": "u7@example.com", "score": 3.5}

#: How long the cold-key function computes.
COLD_SECONDS = 0.3


def small(x: int, y: str = "a") -> dict[str, Any]:
    """The function of the hit benchmark: small arguments, small result."""
    global CALLS
    CALLS += 1
    return {"x": x, "y": y, "label": f"{x}-{y}"}


def fixed(i: int) -> dict[str, Any]:
    """The function of the miss benchmark: returns :data:`FIXED` at once."""
    global CALLS
    CALLS += 1
    return FIXED


def make_array(mib: int) -> Any:
    """``mib`` MiB of standard-normal float64 numbers (the same in every process)."""
    import numpy

    return numpy.random.default_rng(mib).standard_normal(mib * (1 << 20) // 8)


def head_sum(arr: Any) -> float:
    """A memoized function taking a large array (its result does not matter)."""
    return float(arr[:16].sum())


def tail_sum(arr: Any) -> float:
    """Another one, for the array that came out of the cache."""
    return float(arr[-16:].sum())


def cold(x: int, counter: str) -> int:
    """The function of the cold-key benchmark: computes for
    :data:`COLD_SECONDS`, and appends a line to ``counter`` so that the parent
    can count the computations across processes."""
    time.sleep(COLD_SECONDS)
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    return x * x


# ----------------------------------------------------------------------------
# child processes


def cold_caller(system: str, path: str, x: int, counter: str, barrier: Any, queue: Any) -> None:
    """One of the processes calling ``cold(x, counter)`` at once.

    Opens the cache and builds the key (the code fingerprint) before the
    barrier, so only the call itself is timed. Puts ``(pid, start, end,
    result, computed, stored)`` on ``queue``: ``stored`` is when the first
    ``Cache.store`` of this process returned (the commit of the result; it is
    wrapped on the instance, ``src/`` is not touched), None when it stored
    nothing. Times are ``time.monotonic()``, one clock for every process of
    the machine."""
    stored: list[float] = []
    try:
        if system == "logshelf":
            import logshelf

            cache: Any = logshelf.Cache(path)
            store = cache.store

            def timed_store(key: str, entry: bytes) -> None:
                store(key, entry)
                stored.append(time.monotonic())

            cache.store = timed_store
            func = cache.memoize()(cold)
            func.cache_key(x, counter)
        else:
            import diskcache

            cache = diskcache.Cache(path)
            func = cache.memoize()(cold)
        barrier.wait()
        start = time.monotonic()
        result = func(x, counter)
        end = time.monotonic()
        computed = func.cache_info().misses if system == "logshelf" else -1
        cache.close()
        queue.put((os.getpid(), start, end, result, computed, stored[0] if stored else None))
    except BaseException as exc:  # report it rather than hang the parent
        queue.put((os.getpid(), 0.0, 0.0, repr(exc), -2, None))
        raise


class _Dict(dict):  # type: ignore[type-arg]
    """A plain dict with the ``close()`` of a cache."""

    def close(self) -> None:
        pass


def lru_reader(
    system: str,
    path: str,
    options: dict[str, Any],
    keys: list[str],
    seconds: float,
    seed: int,
    barrier: Any,
    queue: Any,
) -> None:
    """Read random keys of a populated cache for ``seconds``; put ``(ops,
    start, end, misses)`` on ``queue`` (``time.monotonic()``)."""
    try:
        if system == "logshelf":
            import logshelf

            cache: Any = logshelf.Cache(path, **options)
        elif system == "dict":  # the machine's own scaling: no store at all
            cache = _Dict(zip(keys, range(1, len(keys) + 1), strict=True))
        else:
            import diskcache

            cache = diskcache.Cache(path, **options)
        order = keys[:]
        random.Random(seed).shuffle(order)
        get = cache.get
        n = len(order)
        ops = misses = 0
        barrier.wait()
        start = time.monotonic()
        deadline = start + seconds
        i = 0
        while True:
            for _ in range(256):
                if get(order[i]) is None:
                    misses += 1
                i += 1
                if i == n:
                    i = 0
            ops += 256
            if time.monotonic() >= deadline:
                break
        end = time.monotonic()
        cache.close()
        queue.put((ops, start, end, misses))
    except BaseException as exc:
        queue.put((0, 0.0, 0.0, repr(exc)))
        raise
