"""``logshelf scan PATH``: the globals each record would import, without loading any.

Exit codes: 0 every record passes (each global on the allow-list of
``safe=True`` or given with ``--trusted``); 1 a record imports a global
outside it, a global that cannot be known without running the pickle, or
cannot be scanned (malformed, damaged, a serializer ``safe=True`` refuses or
that is not a pickle); 2 the command could not run (no store there, a file
that is not a store: ``cli.main`` reports those). Results go to stdout,
progress lines to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from ._cli_signing import add_key_file, keys_of
from ._restricted import trusted_pairs
from ._scan import Global, RecordScan, allowed_globals, scan_store

__all__ = ["COMMANDS", "add_parser"]

#: A progress line on stderr after about every this many records.
PROGRESS_EVERY = 10_000


def _pair(text: str) -> tuple[str, str]:
    try:
        (pair,) = trusted_pairs([text])
    except TypeError:
        raise argparse.ArgumentTypeError(
            f"not module:qualname: {text!r} (for example myapp.models:Order)"
        ) from None
    return pair


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = sub.add_parser(
        "scan",
        help="list the globals each pickled record would import, without loading any; "
        "exit 1 if one is outside the safe=True allow-list",
        description="Read every record of a store or cache read-only and list the globals "
        "(module:qualname) its pickle would import, found from the opcodes alone: nothing "
        "is unpickled or imported. Exit 0 if every global is on the allow-list of "
        "logshelf.open(..., safe=True) or given with --trusted; 1 if any is not, cannot be "
        "known without running the pickle, or a record cannot be scanned; 2 on errors.",
    )
    scan.add_argument("path", metavar="PATH", help="store or cache directory")
    scan.add_argument("--prefix", default="", help="only keys starting with this")
    scan.add_argument(
        "--summary", action="store_true", help="each global once, with how many records use it"
    )
    scan.add_argument("--json", action="store_true", help="one JSON document")
    add_key_file(scan)
    scan.add_argument(
        "--trusted",
        type=_pair,
        nargs="+",
        action="extend",
        default=[],
        metavar="MODULE:QUALNAME",
        help="also allow these globals (as open(..., safe=True, trusted=[...]))",
    )


def _show_key(key: str) -> str:
    """A key on one line: escaped when it holds control characters."""
    return key if key.isprintable() else repr(key)[1:-1]


def _describe(g: Global, allowed: frozenset[tuple[str, str]]) -> str:
    if g.module is None:
        text = f"? ({g.opcode} at byte {g.position}: {g.why})"
    else:
        text = g.name if g.pickled_as is None else f"{g.name} (pickled as {g.pickled_as})"
    return text if g.allowed(allowed) else f"{text} NOT ALLOWED"


def _line(scan: RecordScan, allowed: frozenset[tuple[str, str]]) -> str:
    items = [f"PROBLEM: {p}" for p in scan.problems]
    items += [_describe(g, allowed) for g in scan.globals]
    return "; ".join(items) if items else "no globals"


def _global_json(g: Global, allowed: frozenset[tuple[str, str]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "global": None if g.module is None else g.name,
        "module": g.module,
        "qualname": g.qualname,
        "allowed": g.allowed(allowed),
        "opcode": g.opcode,
        "position": g.position,
    }
    if g.pickled_as is not None:
        row["pickled_as"] = g.pickled_as
    if g.why:
        row["unresolved"] = g.why
    return row


def _summary_key(g: Global) -> str:
    return g.name if g.module is not None else f"? ({g.opcode}: {g.why})"


def _progress() -> Callable[[int, int], None]:
    """A progress callback for large stores: a line on stderr about every
    :data:`PROGRESS_EVERY` records, and one at the end."""
    shown = 0

    def progress(done: int, total: int) -> None:
        nonlocal shown
        if total >= PROGRESS_EVERY and (done - shown >= PROGRESS_EVERY or done == total):
            shown = done
            print(f"  ... scanned {done:,} of {total:,} records", file=sys.stderr, flush=True)

    return progress


def _cmd_scan(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    allowed = allowed_globals(args.trusted)
    records = failing = 0
    uses: Counter[str] = Counter()
    allowed_names: dict[str, bool] = {}
    rows: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    keys = keys_of(args)
    for key, scan in scan_store(path, args.prefix, _progress(), keys):
        records += 1
        passes = scan.passes(allowed)
        failing += not passes
        for g in scan.globals:
            name = _summary_key(g)
            uses[name] += 1
            allowed_names[name] = g.allowed(allowed)
        problems += [(key, p) for p in scan.problems]
        if args.json:
            if not args.summary:
                rows.append(
                    {
                        "key": key,
                        "format": scan.format,
                        "ok": passes,
                        "globals": [_global_json(g, allowed) for g in scan.globals],
                        "problems": list(scan.problems),
                    }
                )
        elif not args.summary:
            print(f"{_show_key(key)}\t{scan.format}\t{_line(scan, allowed)}")
    ok = failing == 0
    if args.json:
        doc: dict[str, Any] = {
            "store": path,
            "prefix": args.prefix,
            "records": records,
            "failing": failing,
            "ok": ok,
            "trusted": [f"{m}:{q}" for m, q in sorted(set(args.trusted))],
            "summary": [
                {"global": name, "records": count, "allowed": allowed_names[name]}
                for name, count in sorted(uses.items())
            ],
        }
        if args.summary:
            doc["problems"] = [{"key": k, "problem": p} for k, p in problems]
        else:
            doc["keys"] = rows
        json.dump(doc, sys.stdout)
        print()
        return 0 if ok else 1
    if args.summary:
        print("  records\tglobal")
        for name, count in sorted(uses.items()):
            mark = "" if allowed_names[name] else "\tNOT ALLOWED"
            print(f"{count:>9,}\t{name}{mark}")
        for key, problem in problems:
            print(f"  PROBLEM\t{_show_key(key)}: {problem}")
    if ok:
        print(f"ok: {records:,} records; every global they import is allowed")
    else:
        print(
            f"NOT SAFE: {failing:,} of {records:,} records import a global outside the "
            "allow-list, or could not be scanned"
        )
    return 0 if ok else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"scan": _cmd_scan}
