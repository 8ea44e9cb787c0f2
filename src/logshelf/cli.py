"""The ``logshelf`` command line (``python -m logshelf``).

Each sub-command is a ``_cmd_<name>(args) -> int`` function; ``main(argv)``
keeps no state between calls, so tests call it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from . import __version__
from .store import open as open_store

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    """Write a store, reopen it in a second handle, read it back, and say what happened."""
    path = os.path.abspath(args.path)
    out = sys.stdout
    n = args.records
    print(f"logshelf {__version__} demo: store at {path}", file=out)
    started = time.perf_counter()
    with open_store(path, "n", compression="lz4") as db:
        with db.transaction():
            for i in range(n):
                db[f"user:{i:06d}"] = {"id": i, "name": f"user {i}", "tags": ["demo"] * (i % 4)}
        db["config"] = {"theme": "dark", "retries": 3}
        del db["user:000000"]
    wrote = time.perf_counter() - started
    print(
        f"  wrote {n + 1} records and deleted 1 in {wrote * 1000:.1f} ms (one transaction)",
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
    expected = n  # n users written, one deleted, plus config
    if count != expected or config != {"theme": "dark", "retries": 3} or missing:
        print("  demo FAILED: the store did not read back what was written", file=sys.stderr)
        return 1
    print("  ok: everything written was read back after reopening", file=out)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"demo": _cmd_demo}


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
    demo = sub.add_parser("demo", help="write, reopen and read a demo store in a local folder")
    demo.add_argument(
        "path", nargs="?", default="logshelf-demo.db", help="store directory (default: %(default)s)"
    )
    demo.add_argument(
        "--records", type=_positive, default=1000, help="records to write (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    return _COMMANDS[args.command](args)
