"""``logshelf sign SRC DST --key-file F``, and the ``--key-file`` option of
the commands that read stores (``docs/security.md``).

A key file holds the key's bytes as they are (at least 16; one trailing
newline is ignored, so ``head -c 32 /dev/urandom > F`` and an editor's file
both work). Keep it outside the store's directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ._fs import FileSystem
from ._salvage import salvage
from ._signing import check_keys, read_identity
from .errors import SigningError

__all__ = ["COMMANDS", "add_key_file", "add_parser", "keys_of"]


def add_key_file(parser: argparse.ArgumentParser) -> None:
    """The ``--key-file`` option (repeatable: newest key first)."""
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed store's key, read from FILE (repeat for older keys, newest first)",
    )


def keys_of(args: argparse.Namespace) -> list[bytes] | None:
    """The keys the ``--key-file`` options name, or None when there are none.

    Raises:
        OSError: a key file cannot be read.
        ValueError: a key shorter than 16 bytes.
    """
    found = []
    for path in args.key_file:
        with open(path, "rb") as f:
            data = f.read()
        found.append(data[:-1] if data.endswith(b"\n") else data)
    if not found:
        return None
    try:
        check_keys(found)
    except ValueError as exc:
        raise SigningError(f"--key-file: {exc}") from None
    return found


def _cmd_sign(args: argparse.Namespace) -> int:
    """Copy an unsigned store into a new signed one (after you checked it)."""
    keys = keys_of(args)
    if keys is None:
        raise SigningError("logshelf sign needs the key: --key-file FILE")
    source = os.path.abspath(args.source)
    if read_identity(FileSystem(), source) is not None:
        raise SigningError(f"{source} is signed already (compact it to re-sign with a new key)")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = salvage(source, args.destination, progress=progress, key=keys)
    print(report)
    print(f"signed copy: {os.path.abspath(args.destination)}")
    return 1 if report.skipped or report.lost_keys else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"sign": _cmd_sign}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sign = sub.add_parser(
        "sign",
        help="copy an unsigned store into a new signed store (check the source first)",
        description="Copy every record of SOURCE, an unsigned store, into DESTINATION, a new "
        "store signed with the key in --key-file. Signing vouches for what is copied: scan "
        "or verify SOURCE first. Exit 0 when everything was copied, 1 when damaged records "
        "were skipped (listed), 2 when the command could not run.",
    )
    sign.add_argument("source", help="the unsigned store (only read)")
    sign.add_argument("destination", help="where to create the signed copy (must not exist)")
    add_key_file(sign)
