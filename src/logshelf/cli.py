"""The ``logshelf`` command line (``python -m logshelf``).

Each sub-command is a ``_cmd_<name>(args) -> int`` function; ``main(argv)``
keeps no state between calls, so tests call it directly. Results go to
stdout, progress lines and errors to stderr.

Exit codes: 0 success (a healthy store, a complete salvage); 1 the store is
damaged (``verify`` found problems or could not open it, ``salvage``
skipped something); 2 the command could not run (usage errors, no store
there, a file that is not a store, a destination that exists, a demo path
that holds something other than an earlier demo's store).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from . import __version__, _cli_cache, _cli_objects, _cli_scan, _cli_signing
from ._salvage import salvage
from .errors import CorruptionError, StoreError
from .store import open as open_store

__all__ = ["main"]


# Every store the demo writes holds this key. The demo writes only into a
# path that does not exist yet or whose store holds it, so it never deletes
# data it did not write.
DEMO_MARKER = "__logshelf_demo__"


def _refuse_demo_path(path: str) -> None:
    """Raise FileExistsError unless ``path`` is absent or a store an earlier
    demo run created. Checked read-only: a store that is not ours must not
    even be opened for writing (that may cut a torn tail or collect garbage)."""
    if not os.path.lexists(path):
        return
    refusal = FileExistsError(
        f"{path} exists and is not a store the demo created (no {DEMO_MARKER!r} key); "
        "the demo writes only into a new path or its own store: pass another PATH"
    )
    if not os.path.isdir(path):
        raise refusal
    try:
        with open_store(path, "r") as db:
            ours = DEMO_MARKER in db
    except (StoreError, OSError):
        ours = False
    if not ours:
        raise refusal


def _cmd_demo(args: argparse.Namespace) -> int:
    """Write a store, reopen it in a second handle, read it back, and say what happened."""
    path = os.path.abspath(args.path)
    out = sys.stdout
    n = args.records
    _refuse_demo_path(path)
    print(f"logshelf {__version__} demo: store at {path}", file=out)
    started = time.perf_counter()
    with open_store(path, "c", compression="lz4") as db:
        with db.transaction():
            # Checked again under the writer lock, which the transaction
            # holds: something may have written the store since the check.
            if len(db) and DEMO_MARKER not in db:
                raise FileExistsError(f"{path} was written by something else meanwhile")
            db.clear()  # our own earlier run
            db[DEMO_MARKER] = "written by python -m logshelf demo; safe to delete"
            for i in range(n):
                db[f"user:{i:06d}"] = {"id": i, "name": f"user {i}", "tags": ["demo"] * (i % 4)}
        db["config"] = {"theme": "dark", "retries": 3}
        del db["user:000000"]
    wrote = time.perf_counter() - started
    print(
        f"  wrote {n + 1} records and the demo marker, deleted 1, in {wrote * 1000:.1f} ms",
        file=out,
    )
    started = time.perf_counter()
    with open_store(path, "r") as db:
        count = len(db)
        sample = db[f"user:{n - 1:06d}"] if n > 1 else None
        config = db["config"]
        missing = "user:000000" in db
    read = time.perf_counter() - started
    print(f"  reopened read-only in {read * 1000:.1f} ms: {count} keys", file=out)
    print(f"  config = {config!r}", file=out)
    if sample is not None:
        print(f"  user:{n - 1:06d} = {sample!r}", file=out)
    print(f"  deleted key present after reopen: {missing}", file=out)
    files = sorted(os.listdir(path))
    size = sum(
        os.path.getsize(os.path.join(path, f))
        for f in files
        if os.path.isfile(os.path.join(path, f))
    )
    print(f"  on disk: {', '.join(files)} ({size} bytes)", file=out)
    expected = n + 1  # n users written, one deleted, plus config and the marker
    if count != expected or config != {"theme": "dark", "retries": 3} or missing:
        print("  demo FAILED: the store did not read back what was written", file=sys.stderr)
        return 1
    print("  ok: everything written was read back after reopening", file=out)
    return 0


def _progress(line: str) -> None:
    print(f"  ... {line}", file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what a store holds, opened read-only."""
    stats = _cli_objects.summary(args.path)
    path, files, size = stats["store"], stats["files"], stats["file_bytes"]
    print(f"store       {path}")
    print(f"keys        {stats['keys']:,}")
    print(f"segments    {stats['segments']} ({_mib(stats['segment_bytes'])} committed)")
    print(f"generation  {stats['generation']} (of the MANIFEST)")
    print(f"last txid   {stats['last_txid']}")
    print(f"files       {len(files)}, {_mib(size)}: {', '.join(files)}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Read every record of a store and check it; exit 1 if anything is wrong."""
    path = os.path.abspath(args.path)
    started = time.perf_counter()
    try:
        with open_store(path, "r", key=_cli_signing.keys_of(args)) as db:
            problems = db.verify(progress=_progress)
    except CorruptionError as exc:
        return _damaged(path, str(exc))
    seconds = time.perf_counter() - started
    for problem in problems:
        print(problem)
    if problems:
        return _damaged(path, f"{len(problems)} problems in {path} ({seconds:.1f} s)")
    print(f"ok: {path} verified clean ({seconds:.1f} s)")
    return 0


def _damaged(path: str, what: str) -> int:
    print(f"damaged: {what}")
    print(f"copy what is intact with: python -m logshelf salvage {path} NEW_PATH")
    return 1


def _cmd_compact(args: argparse.Namespace) -> int:
    """Reclaim the space of overwritten and deleted values."""
    path = os.path.abspath(args.path)
    with open_store(path, "w") as db:
        before = db.stats()
        _progress(
            f"compacting {before['segments']} segments, {_mib(before['segment_bytes'])}, "
            f"{before['keys']:,} live keys"
        )
        result = db.compact()
    if not result.compacted:
        print(f"nothing done: {result.reason}")
        return 0
    print(
        f"compacted {path} in {result.seconds:.1f} s: {_mib(result.bytes_before)} in "
        f"{result.segments_before} segments -> {_mib(result.bytes_after)} in "
        f"{result.segments_after} ({result.records_copied:,} live records copied)"
    )
    return 0


def _cmd_salvage(args: argparse.Namespace) -> int:
    """Copy every valid committed record of a damaged store into a new one."""
    keys = _cli_signing.keys_of(args)
    report = salvage(args.source, args.destination, progress=_progress, key=keys)
    print(report)
    print(f"new store: {os.path.abspath(args.destination)}")
    return 1 if report.skipped or report.lost_keys else 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo,
    "info": _cmd_info,
    "verify": _cmd_verify,
    "compact": _cmd_compact,
    "salvage": _cmd_salvage,
    "cache": _cli_cache.run,
    **_cli_objects.COMMANDS,
    **_cli_scan.COMMANDS,
    **_cli_signing.COMMANDS,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logshelf", description="Inspect and exercise logshelf stores."
    )
    parser.add_argument("--version", action="version", version=f"logshelf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="write, reopen and read a demo store in a local folder",
        description="Write, reopen and read a demo store. PATH must not exist yet, or be a "
        f"store an earlier demo run created (it holds the key {DEMO_MARKER!r}), which is "
        "emptied and written again. Any other path is refused with exit code 2 and left "
        "untouched.",
    )
    demo.add_argument(
        "path",
        nargs="?",
        default="logshelf-demo.db",
        metavar="PATH",
        help="store directory (default: %(default)s)",
    )
    demo.add_argument(
        "--records", type=_positive, default=1000, help="records to write (default: %(default)s)"
    )
    info = sub.add_parser("info", help="print keys, segments and files of a store (read-only)")
    info.add_argument("path", help="store directory")
    verify = sub.add_parser(
        "verify", help="read and check every record of a store (read-only); exit 1 if damaged"
    )
    verify.add_argument("path", help="store directory")
    _cli_signing.add_key_file(verify)
    compact = sub.add_parser("compact", help="reclaim the space of overwritten and deleted values")
    compact.add_argument("path", help="store directory")
    rescue = sub.add_parser(
        "salvage",
        help="copy every valid committed record of a damaged store into a new store",
    )
    rescue.add_argument("source", help="the damaged store (only read)")
    rescue.add_argument("destination", help="where to create the copy (must not exist)")
    _cli_signing.add_key_file(rescue)
    _cli_cache.add_parser(sub)
    _cli_objects.add_parsers(sub)
    _cli_scan.add_parser(sub)
    _cli_signing.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (StoreError, OSError) as exc:
        # Damage found while opening is reported by the commands themselves;
        # what reaches here kept the command from running at all.
        print(f"logshelf {args.command}: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, CorruptionError) else 2
