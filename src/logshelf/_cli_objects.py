"""``logshelf import | export | ls | get | stats``: move and browse a store's objects.

The exit codes are those of the other commands (``cli.py``): 0 done, 1 the
store is damaged, 2 the command could not run (no store there, a bad option,
a destination that exists, a source that cannot be read, a value ``--json``
cannot encode). Results go to stdout, progress lines and errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from . import _format as fmt
from ._codecs import Codec
from ._transfer import FORMATS, KINDS, export, import_from
from .store import Shelf
from .store import open as open_store

__all__ = ["COMMANDS", "add_parsers", "summary"]


def _progress(line: str) -> None:
    print(f"  ... {line}", file=sys.stderr, flush=True)


def _fail(command: str, message: str) -> int:
    """Report a command that could not run; exit code 2."""
    print(f"logshelf {command}: {message}", file=sys.stderr)
    return 2


def _open_existing(path: str) -> Shelf:
    # Read-only: browsing must never cut a torn tail or compact.
    return open_store(path, "r")


def summary(path: str) -> dict[str, Any]:
    """What ``info`` and ``stats`` print: the store's numbers and its files.

    Keys: ``store``, ``keys``, ``segments``, ``segment_bytes``,
    ``generation``, ``last_txid``, ``files`` (sorted names) and ``file_bytes``.
    """
    path = os.path.abspath(path)
    with _open_existing(path) as db:
        stats = db.stats()
    files = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    return {
        "store": path,
        **stats,
        "files": files,
        "file_bytes": sum(os.path.getsize(os.path.join(path, f)) for f in files),
    }


def _record_facts(db: Shelf, key: str) -> dict[str, Any]:
    """Where ``key``'s value lives and how it is stored, from its record header
    (layout in docs/format.md): stored bytes, bytes before compression, codec."""
    segment, offset = db.locate(key)
    facts: dict[str, Any] = {"key": key, "segment": os.path.basename(segment), "offset": offset}
    try:
        with open(segment, "rb") as f:
            f.seek(offset)
            header = fmt.RecordHeader(*fmt.RECORD_HEADER.unpack(f.read(fmt.RECORD_HEADER.size)))
    except (OSError, ValueError) as exc:
        # A compaction may have removed the segment since locate(): report, go on.
        facts.update(bytes=None, raw_bytes=None, codec=None, error=str(exc))
        return facts
    codec = header.flags & fmt.CODEC_MASK and fmt.codec_of(header.flags & fmt.CODEC_MASK)
    buffers = bool(header.flags & fmt.FLAG_BUFFERS)
    facts.update(
        bytes=header.vlen,
        # With out-of-band buffers, rawlen is the pickle stream's alone.
        raw_bytes=header.rawlen if codec and not buffers else header.vlen,
        codec=Codec(codec).name.lower(),
        buffers=buffers,
    )
    return facts


def _cmd_ls(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    with _open_existing(path) as db:
        keys = sorted(db.keys(args.prefix))
        rows: list[Any] = [_record_facts(db, k) for k in keys] if args.long else list(keys)
    if args.json:
        json.dump({"store": path, "count": len(rows), "keys": rows}, sys.stdout)
        print()
    elif args.long:
        for row in rows:
            size = "?" if row["bytes"] is None else f"{row['bytes']:,} B"
            print(f"{row['key']}\t{size}\t{row['codec']}\t{row['segment']}\t{row['offset']}")
    else:
        for key in rows:
            print(key)
    print(f"{len(rows):,} keys", file=sys.stderr)
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    with _open_existing(path) as db:
        try:
            value = db[args.key]
        except KeyError:
            return _fail("get", f"no key {args.key!r} in {path}")
    if not args.json:
        print(repr(value))
        return 0
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return _fail(
            "get",
            f"the value of {args.key!r} is a {type(value).__name__}, which JSON cannot hold "
            f"({exc}); drop --json to print its repr",
        )
    print(text)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    facts = summary(args.path)
    if args.json:
        json.dump(facts, sys.stdout)
        print()
        return 0
    print(f"store          {facts['store']}")
    print(f"keys           {facts['keys']:,}")
    print(f"segments       {facts['segments']:,}")
    print(f"segment bytes  {facts['segment_bytes']:,} (committed, live and dead)")
    print(f"file bytes     {facts['file_bytes']:,} in {len(facts['files'])} files")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        report = import_from(
            args.source,
            args.destination,
            kind=args.kind,
            encoding=args.encoding,
            errors=args.errors,
            key=args.key,
            progress=_progress,
        )
    except (ValueError, TypeError, LookupError) as exc:
        # LookupError: an unknown --encoding or --errors name.
        return _fail("import", str(exc))
    print(report)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        count = export(args.source, args.output, format=args.format, progress=_progress)
    except (ValueError, TypeError) as exc:
        return _fail("export", str(exc))
    print(f"exported {count:,} keys of {os.path.abspath(args.source)} to {args.output}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import": _cmd_import,
    "export": _cmd_export,
    "ls": _cmd_ls,
    "get": _cmd_get,
    "stats": _cmd_stats,
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the sub-commands of :data:`COMMANDS` to the ``logshelf`` parser."""
    imp = sub.add_parser(
        "import",
        help="copy a shelve/dbm file, pickle, sqlitedict, diskcache or JSON Lines into a new store",
        description="Copy another store's keys and values into a new logshelf store at DST "
        "(which must not exist; a failed import leaves nothing there). Values are unpickled: "
        "only import what you trust.",
    )
    imp.add_argument("source", metavar="SRC", help="the store or file to read (only read)")
    imp.add_argument("destination", metavar="DST", help="the new store (must not exist)")
    imp.add_argument("--kind", choices=KINDS, default="auto", help="source kind (default: auto)")
    imp.add_argument(
        "--encoding",
        default="ASCII",
        help="how to decode Python 2 str in pickles: latin1 or bytes (default: %(default)s)",
    )
    imp.add_argument("--errors", default="strict", help="decoding errors (default: %(default)s)")
    imp.add_argument(
        "--key", help="pickle source: store the whole object under this key (default: file stem)"
    )
    exp = sub.add_parser("export", help="write a store's keys and values to a JSON Lines or pickle")
    exp.add_argument("source", metavar="SRC", help="the store (only read)")
    exp.add_argument("--format", choices=FORMATS, required=True, help="jsonl or pickle")
    exp.add_argument("-o", "--output", required=True, metavar="DST", help="file (must not exist)")
    ls = sub.add_parser("ls", help="list a store's keys, sorted (read-only)")
    ls.add_argument("path", help="store directory")
    ls.add_argument("--prefix", default="", help="only keys starting with this")
    ls.add_argument(
        "--long", action="store_true", help="also stored size, codec, segment file and offset"
    )
    ls.add_argument("--json", action="store_true", help="one JSON document")
    get = sub.add_parser("get", help="print one value (read-only)")
    get.add_argument("path", help="store directory")
    get.add_argument("key", help="the key")
    shape = get.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print it as JSON (exit 2 if it is not)")
    shape.add_argument("--repr", action="store_true", help="print its repr() (the default)")
    stats = sub.add_parser("stats", help="keys, segments and bytes of a store (read-only)")
    stats.add_argument("path", help="store directory")
    stats.add_argument("--json", action="store_true", help="one JSON document")
