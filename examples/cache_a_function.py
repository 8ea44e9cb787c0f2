"""Cache a slow function's results on disk, in a script or a notebook.

Run:  python examples/cache_a_function.py [FOLDER]

Everything is written under FOLDER (default: $LOGSHELF_EXAMPLES_DIR, else
the current directory). Run it twice: the second run finds every result of
the first one already cached. How-to: docs/how-to/cache-a-function.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import logshelf


def folder() -> Path:
    where = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
    where.mkdir(parents=True, exist_ok=True)
    return where


HERE = folder()


# --8<-- [start:script]
@logshelf.memoize(path=HERE / "cache")
def daily_totals(day: str, *, currency: str = "EUR") -> dict[str, object]:
    """Stands for minutes of parsing: here, a fifth of a second."""
    time.sleep(0.2)
    return {"day": day, "total": 1234.5, "currency": currency}


started = time.perf_counter()
first = daily_totals("2026-12-01")
cold = time.perf_counter() - started

started = time.perf_counter()
again = daily_totals("2026-12-01", currency="EUR")  # the same call, bound to the signature
warm = time.perf_counter() - started

assert first == again
print(f"first call {cold * 1000:.0f} ms, second call {warm * 1000:.1f} ms")
print("explain:", daily_totals.explain("2026-12-01").split(":")[0])
info = daily_totals.cache_info()
print(f"cache_info: hits={info.hits} misses={info.misses} entries={info.currsize}")
# --8<-- [end:script]


# --8<-- [start:notebook]
# A notebook re-runs a cell with an edited function: the new code is a new
# key, so the call recomputes. (Here the "cell" is the same name defined
# again, which is what re-running an edited cell does.)
@logshelf.memoize(path=HERE / "cache")
def score(x: int) -> int:
    return x * 2


print("score v1:", score(21))


@logshelf.memoize(path=HERE / "cache")  # the edited cell
def score(x: int) -> int:  # redefined on purpose, as a re-run notebook cell is
    return x * 3


why = score.explain(21)  # "miss: the code changed ..." (or "hit: ..." on a second run)
print("before the call:", why if why.startswith("miss") else "hit")
print("score v2:", score(21))
# --8<-- [end:notebook]


# --8<-- [start:bounded]
# A bound and an expiry: open the cache yourself.
cache = logshelf.Cache(HERE / "bounded-cache", max_bytes=50 * 1024**2, ttl=3600)


@cache.memoize(tags=("reports",))
def report(n: int) -> list[int]:
    return list(range(n))


report(1000)
report(1000)
print(f"bounded cache: {len(cache)} entry, {report.cache_info().hits} hit")
print("cleared:", cache.clear(tag="reports"), "entry")
cache.close()
# --8<-- [end:bounded]
