"""Names and argument checks shared by ``cache.py`` and ``_memoize.py``
(below both, so that neither imports the other's module to get them)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

__all__ = [
    "DEFAULT",
    "INTERNAL_PREFIX",
    "check_bound",
    "check_seconds",
    "func_name",
    "segment_size",
]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the cache's own setting" (``ttl=DEFAULT``); ``None`` means "never".
DEFAULT: Any = _Default()

#: Keys the cache keeps for itself (code manifests of memoized functions):
#: hidden from iteration, ``len()`` and ``clear()`` filters.
INTERNAL_PREFIX = "\x00"


def check_seconds(value: object, name: str) -> float | None:
    """``value`` as positive seconds, or None; ValueError naming ``name``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return float(value)


def func_name(func: Callable[..., Any] | str) -> str:
    """The name entries of a memoized function carry: ``module.qualname``."""
    if isinstance(func, str):
        return func
    inner = getattr(func, "__wrapped__", func)
    module = getattr(inner, "__module__", None) or "?"
    qualname = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
    if qualname is None:
        raise TypeError(f"func must be a function or a name, not {func!r}")
    return f"{module}.{qualname}"


def check_bound(
    max_bytes: object, policy: object, protocol: object, policies: tuple[str, ...], remote: bool
) -> None:
    """``Cache``'s ``max_bytes``, ``policy`` and ``protocol`` (``remote``: on Redis).

    Raises:
        ValueError: a bad value, a bound with ``policy="none"``, or one on
            Redis, whose own ``maxmemory`` policy bounds a cache there.
    """
    if remote and max_bytes is not None:
        raise ValueError(
            "a cache on Redis is bounded by the server's maxmemory policy, "
            "not max_bytes (docs/redis.md)"
        )
    if policy not in policies:
        raise ValueError(f"policy must be one of {policies}, not {policy!r}")
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int or None, not {max_bytes!r}")
        if policy == "none":
            raise ValueError("policy='none' never evicts, so max_bytes must be None")
    if not isinstance(protocol, int) or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"protocol must be 0..{pickle.HIGHEST_PROTOCOL}, not {protocol!r}")


def segment_size(max_bytes: int | None) -> int:
    """Segments of a cache: small against its bound, since eviction works a
    segment at a time and the bound may be exceeded by at most one of them."""
    segment = 128 << 20
    if max_bytes is not None:
        segment = max(4096, min(segment, max_bytes // 8))  # _options.MIN_SEGMENT_SIZE
    return segment
