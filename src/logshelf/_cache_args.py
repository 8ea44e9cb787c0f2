"""Names and argument checks shared by ``cache.py`` and ``_memoize.py``
(below both, so that neither imports the other's module to get them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT", "INTERNAL_PREFIX", "check_seconds", "func_name"]


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
