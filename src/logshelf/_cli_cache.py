"""``logshelf cache PATH stats | ls | clear | evict | expire``: a cache from the shell.

The exit codes are those of the other commands (``cli.py``): 0 done, 1 the
cache is damaged, 2 the command could not run (no cache there, bad option).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter

from . import _cache_format as cfmt
from ._cache_args import INTERNAL_PREFIX
from .cache import Cache
from .errors import CorruptionError

__all__ = ["add_parser", "run"]

_now = time.time
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
# Scans print a progress line every this many entries.
_PROGRESS_EVERY = 100_000


def duration(text: str) -> float:
    """``"90"``, ``"45s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` in seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a positive number with s, m, h, d or w, like 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def size(text: str) -> int:
    """``"1GB"`` (10**9), ``"1GiB"`` (2**30), ``"500MB"``, ``"4096"`` in bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b|b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (bytes, or a number with KB, MB, GB, KiB, MiB or GiB)"
        )
    return int(float(match.group(1)) * _SIZES[match.group(2) or ""])


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = sub.add_parser("cache", help="inspect and maintain a logshelf.Cache directory")
    cache.add_argument("path", help="cache directory")
    actions = cache.add_subparsers(dest="action", required=True)
    actions.add_parser("stats", help="entries, bytes, functions and tags (read-only)")
    ls = actions.add_parser("ls", help="list entries, newest first (read-only)")
    ls.add_argument("--func", help="only entries of this function (qualified or short name)")
    clear = actions.add_parser("clear", help="delete entries (all, or those matching every filter)")
    clear.add_argument("--func", help="entries of this function (qualified or short name)")
    clear.add_argument("--tag", help="entries with this tag")
    clear.add_argument(
        "--older-than", type=duration, help="entries stored longer ago than this (e.g. 7d)"
    )
    evict = actions.add_parser("evict", help="evict entries until the cache takes at most --to")
    evict.add_argument("--to", type=size, required=True, help="target size, e.g. 1GB or 512MiB")
    actions.add_parser("expire", help="delete every expired entry")


def _open(path: str, flag: str) -> Cache:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no cache at {path}")
    return Cache(path, flag=flag)


def _entries(cache: Cache) -> tuple[list[tuple[str, cfmt.Entry]], int, int]:
    """Every entry (expired ones too), and the counts of values that are not
    entries and of internal keys."""
    out = []
    foreign = internal = 0
    keys = cache.engine.keys()
    for n, key in enumerate(keys, 1):
        if n % _PROGRESS_EVERY == 0:
            print(f"  ... read {n:,} of {len(keys):,} entries", file=sys.stderr, flush=True)
        if key.startswith(INTERNAL_PREFIX):
            internal += 1
            continue
        data = cache.engine.get(key)
        if data is None:
            continue
        try:
            out.append((key, cfmt.decode_entry(data, key)))
        except CorruptionError:
            foreign += 1
    return out, foreign, internal


def _matches(entry: cfmt.Entry, func: str | None) -> bool:
    return func is None or entry.func == func or entry.func.endswith("." + func)


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f}{unit}"
    return f"{seconds:.0f}s"


def _stats(cache: Cache) -> int:
    entries, foreign, internal = _entries(cache)
    now = _now()
    expired = sum(1 for _, e in entries if e.expires_at and now >= e.expires_at)
    stats = cache.stats()
    funcs = Counter(e.func for _, e in entries if e.func)
    tags = Counter(t for _, e in entries for t in e.tags)
    print(f"cache       {cache.path}")
    print(f"entries     {len(entries) - expired:,} visible, {expired:,} expired (not yet removed)")
    print(f"bytes       {stats['bytes']:,} in segments")
    payload = sum(len(e.payload) for _, e in entries)
    print(f"values      {payload:,} bytes stored (after compression)")
    if foreign:
        print(f"foreign     {foreign:,} values that are not cache entries")
    print(f"internal    {internal:,} code manifests of memoized functions")
    for name, count in funcs.most_common():
        print(f"function    {name}: {count:,}")
    for tag, count in tags.most_common():
        print(f"tag         {tag}: {count:,}")
    return 0


def _ls(cache: Cache, func: str | None) -> int:
    entries, _, _ = _entries(cache)
    now = _now()
    rows = sorted((e.stored_at, key, e) for key, e in entries if _matches(e, func))
    for stored, key, e in reversed(rows):
        if e.expires_at:
            left = e.expires_at - now
            expiry = f"expires in {_age(left)}" if left > 0 else f"expired {_age(-left)} ago"
        else:
            expiry = "never expires"
        tags = f" tags={','.join(e.tags)}" if e.tags else ""
        print(f"{key}\t{len(e.payload):,} B\tstored {_age(now - stored)} ago\t{expiry}{tags}")
    print(f"{len(rows):,} entries", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``logshelf cache PATH ACTION``; errors propagate to ``cli.main``."""
    path = os.path.abspath(args.path)
    action = args.action
    if action in ("stats", "ls"):
        with _open(path, "r") as cache:
            return _stats(cache) if action == "stats" else _ls(cache, args.func)
    with _open(path, "w") as cache:
        if action == "clear":
            func = args.func
            if func is not None and "." not in func:
                # A short name: every qualified name ending in it.
                entries, _, _ = _entries(cache)
                names = {e.func for _, e in entries if _matches(e, func)}
                removed = sum(
                    cache.clear(func=name, tag=args.tag, older_than=args.older_than)
                    for name in names
                )
            else:
                removed = cache.clear(func=func, tag=args.tag, older_than=args.older_than)
            print(f"removed {removed:,} entries from {path}")
        elif action == "expire":
            print(f"removed {cache.expire():,} expired entries from {path}")
        else:
            before = cache.stats()["bytes"]
            reclaimed = cache.evict(to_bytes=args.to)
            after = cache.stats()["bytes"]
            print(
                f"evicted {cache.stats()['evicted']:,} entries: {before:,} -> {after:,} bytes "
                f"({reclaimed:,} reclaimed, target {args.to:,})"
            )
    return 0
