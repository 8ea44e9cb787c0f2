#!/usr/bin/env python3
"""Large numpy arrays: logshelf against the raw baseline, numpy and joblib.

Run: ``python benchmarks/bench_arrays.py`` (about a minute and a half; needs
numpy, and joblib for its column); ``--quick`` for a smoke run; ``--dir PATH``
to measure on another file system.

Two parts, each the median of ``--repeats`` runs, all in this one process:

* **1 MiB arrays** (the peers suite's large-value workload,
  ``benchlib.large_value``): ``--count`` of them written into a fresh store,
  then read back in random order. Microseconds per operation for the raw
  baseline (``benchlib.RawLog``: pickle protocol 5 in band, one append, one
  ``pread``), logshelf (arrays out of band, read as writable copies) and
  logshelf reading with ``copy=False``; the ratio to the raw baseline.
* **One big array** (``--big-mib``, 1024 by default, float64): written by
  ``db[key] = a``, ``np.save`` and ``joblib.dump`` (throughput, each into a
  fresh file); read as a copy by ``db[key]``, ``np.load`` and
  ``joblib.load``; opened as a view by ``db.get(key, copy=False)``,
  ``np.load(mmap_mode="r")`` and ``joblib.load(mmap_mode="r")``
  (milliseconds); and ``view.sum()`` on logshelf's view and on numpy's map.
  All files are in the page cache (just written), as they are for a
  script that reuses what it stored.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from benchlib import RawLog, large_value

import logshelf

try:
    import joblib
except ImportError:  # pragma: no cover - the bench extra installs it
    joblib = None


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# -- 1 MiB arrays -------------------------------------------------------------


def _raw_side(directory: Path, keys: list[str], values: list[Any], order: list[int]) -> Any:
    raw_dir = directory / "raw"
    raw_dir.mkdir()
    raw = RawLog(str(raw_dir))

    def write() -> None:
        for k, v in zip(keys, values, strict=True):
            raw[k] = v
        raw.flush()

    written, _ = _timed(write)
    read, got = _timed(lambda: [raw[keys[i]] for i in order])
    assert all(np.array_equal(got[n], values[i]) for n, i in enumerate(order))
    raw.close()
    shutil.rmtree(raw_dir)
    return {"raw baseline": (written, read)}


def _logshelf_side(directory: Path, keys: list[str], values: list[Any], order: list[int]) -> Any:
    path = directory / "logshelf.db"
    out = {}
    with logshelf.open(path) as db:

        def write() -> None:
            for k, v in zip(keys, values, strict=True):
                db[k] = v  # one write per key, as the raw baseline's

        written, _ = _timed(write)
        read, got = _timed(lambda: [db[keys[i]] for i in order])
        assert all(np.array_equal(got[n], values[i]) for n, i in enumerate(order))
        out["logshelf"] = (written, read)
        read, got = _timed(lambda: [db.get(keys[i], copy=False) for i in order])
        assert all(np.array_equal(got[n], values[i]) for n, i in enumerate(order))
        out["logshelf copy=False"] = (written, read)
    del got
    shutil.rmtree(path)
    return out


def _small_round(directory: Path, count: int, seed: int) -> dict[str, tuple[float, float]]:
    """Seconds per write and per read of each contender, one round. The two
    take turns going first, and each starts with no dirty pages of the
    other's to write back (``os.sync()``, untimed)."""
    values = [large_value(i) for i in range(count)]
    keys = [f"array-{i}" for i in range(count)]
    order = list(range(count))
    random.Random(seed).shuffle(order)
    sides = [_raw_side, _logshelf_side]
    if seed % 2:
        sides.reverse()
    out: dict[str, tuple[float, float]] = {}
    for side in sides:
        os.sync()
        for name, (written, read) in side(directory, keys, values, order).items():
            out[name] = (written / count, read / count)
    return {name: out[name] for name in ("raw baseline", "logshelf", "logshelf copy=False")}


def small_arrays(directory: Path, count: int, repeats: int) -> None:
    rounds = [_small_round(directory, count, seed) for seed in range(repeats)]
    print(f"\n{count} arrays of 1 MiB (float64), median of {repeats}: us per op, ratio to raw")
    base_w = _median([r["raw baseline"][0] for r in rounds])
    base_r = _median([r["raw baseline"][1] for r in rounds])
    print(f"  {'':22} {'write':>9} {'ratio':>6} {'read':>9} {'ratio':>6}")
    for name in rounds[0]:
        w = _median([r[name][0] for r in rounds])
        r = _median([r[name][1] for r in rounds])
        shown_w = (
            f"{w * 1e6:9.0f} {w / base_w:5.2f}x" if name != "logshelf copy=False" else " " * 16
        )
        print(f"  {name:22} {shown_w} {r * 1e6:9.0f} {r / base_r:5.2f}x")


# -- one big array --------------------------------------------------------------


def _big_round(directory: Path, array: np.ndarray, seed: int) -> dict[str, float]:
    out: dict[str, float] = {}
    gib = array.nbytes / (1 << 30)

    store = directory / f"big-{seed}.db"
    with logshelf.open(store) as db:
        os.sync()  # each write starts with no dirty pages of another's (untimed)
        seconds, _ = _timed(lambda: db.__setitem__("a", array))
        out["write logshelf"] = gib / seconds
    npy = directory / f"big-{seed}.npy"
    os.sync()
    seconds, _ = _timed(lambda: np.save(npy, array))
    out["write np.save"] = gib / seconds
    pkl = directory / f"big-{seed}.joblib"
    if joblib is not None:
        os.sync()
        seconds, _ = _timed(lambda: joblib.dump(array, pkl))
        out["write joblib.dump"] = gib / seconds

    with logshelf.open(store, "r") as db:
        seconds, copy = _timed(lambda: db["a"])
        out["read logshelf"] = gib / seconds
        assert copy.flags.writeable and copy[-1] == array[-1]
        del copy
        seconds, view = _timed(lambda: db.get("a", copy=False))
        out["view logshelf"] = seconds * 1e3
    seconds, loaded = _timed(lambda: np.load(npy))
    out["read np.load"] = gib / seconds
    del loaded
    seconds, mapped = _timed(lambda: np.load(npy, mmap_mode="r"))
    out["view np.load"] = seconds * 1e3
    if joblib is not None:
        seconds, loaded = _timed(lambda: joblib.load(pkl))
        out["read joblib.load"] = gib / seconds
        del loaded
        seconds, jmapped = _timed(lambda: joblib.load(pkl, mmap_mode="r"))
        out["view joblib.load"] = seconds * 1e3
        del jmapped
    # Sums alternate so that the page cache and CPU caches favour neither.
    sums: dict[str, list[float]] = {"logshelf": [], "np.load": []}
    for _ in range(3):
        sums["logshelf"].append(_timed(view.sum)[0])
        sums["np.load"].append(_timed(mapped.sum)[0])
    out["sum logshelf"] = min(sums["logshelf"]) * 1e3
    out["sum np.load"] = min(sums["np.load"]) * 1e3
    assert float(view.sum()) == float(mapped.sum())
    del view, mapped
    shutil.rmtree(store)
    npy.unlink()
    if joblib is not None:
        pkl.unlink()
    return out


def big_array(directory: Path, mib: int, repeats: int) -> None:
    array = np.random.default_rng(0).standard_normal((mib << 20) // 8)
    rounds = [_big_round(directory, array, seed) for seed in range(repeats)]

    def m(name: str) -> float:
        return _median([r[name] for r in rounds])

    print(f"\none float64 array of {mib} MiB, median of {repeats}")
    rows = [
        ("write, GiB/s", "write", "np.save", True),
        ("read a copy, GiB/s", "read", "np.load", True),
        ("open a view, ms", "view", "np.load", False),
    ]
    for label, what, numpy_name, higher_better in rows:
        lg, npv = m(f"{what} logshelf"), m(f"{what} {numpy_name}")
        line = f"  {label:20} logshelf {lg:8.3f}   numpy {npv:8.3f}"
        ratio = lg / npv if higher_better else npv / lg
        line += f"   logshelf/numpy {ratio:5.2f}x"
        joblib_name = {"write": "joblib.dump", "read": "joblib.load", "view": "joblib.load"}[what]
        if f"{what} {joblib_name}" in rounds[0]:
            line += f"   joblib {m(f'{what} {joblib_name}'):8.3f}"
        print(line)
    lg, npv = m("sum logshelf"), m("sum np.load")
    print(f"  {'view.sum(), ms':20} logshelf {lg:8.3f}   numpy {npv:8.3f}   ratio {lg / npv:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=256, help="1 MiB arrays (default 256)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big array")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write")
    parser.add_argument("--quick", action="store_true", help="a smoke run at tiny sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.big_mib, args.repeats = 8, 4, 1
    directory = Path(tempfile.mkdtemp(prefix="bench-arrays-", dir=args.dir))
    try:
        small_arrays(directory, args.count, args.repeats)
        big_array(directory, args.big_mib, args.repeats)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
