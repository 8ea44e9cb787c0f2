"""Import other stores into logshelf, and export logshelf stores to plain files.

``import_from`` reads a stdlib ``shelve``/``dbm`` file, a pickle file, a
``sqlitedict`` file, a ``diskcache`` directory or JSON Lines, and writes a
new logshelf store; ``export`` writes a store's keys and values as JSON Lines
or as one pickle of a dict. Both build their output beside the destination
and rename it into place at the end, so a failure leaves nothing at the
destination.

.. warning::
   Importing and exporting unpickle every value, and loading a pickle can
   run arbitrary code: only import and export data you trust.
"""

from __future__ import annotations

import contextlib
import dbm
import functools
import importlib
import json
import os
import pickle
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._options import DEFAULT_PROTOCOL
from .store import open as open_store

__all__ = ["FORMATS", "KINDS", "ImportReport", "export", "import_from"]

#: The source kinds ``import_from`` accepts; "auto" detects one of the others.
KINDS = ("auto", "shelve", "pickle", "sqlitedict", "diskcache", "jsonl")
#: Formats ``export`` writes.
FORMATS = ("jsonl", "pickle")
# A progress line every this many keys; module-level so tests can make it small.
_PROGRESS_EVERY = 10_000
# Keys written per atomic batch: big enough to amortize the lock and the
# write, small enough that one batch of large values stays in memory.
_BATCH = 1_000
# The table dbm.sqlite3 (Python 3.13+) keeps its data in; any other SQLite
# file is taken for a sqlitedict file.
_DBM_SQLITE_TABLE = "Dict"
_SQLITE_MAGIC = b"SQLite format 3\x00"

Progress = Callable[[str], None]
Pairs = Iterator[tuple[str, Any]]


@dataclass
class ImportReport:
    """What :func:`import_from` did; ``str()`` of it is a one-line summary.

    Attributes:
        source: absolute path of the source.
        destination: absolute path of the new store.
        kind: the source kind read ("shelve", "pickle", ...), detected or given.
        keys: keys written to the new store.
        converted_keys: keys that were not ``str`` in the source and were
            converted (see :func:`import_from` for the rule).
        seconds: wall-clock time of the import.
    """

    source: str
    destination: str
    kind: str
    keys: int = 0
    converted_keys: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        converted = ""
        if self.converted_keys:
            converted = f" ({self.converted_keys:,} keys converted to str)"
        return (
            f"imported {self.keys:,} keys{converted} from {self.source} ({self.kind}) "
            f"into {self.destination} in {self.seconds:.1f} s"
        )


class _Keys:
    """Turns source keys into logshelf keys and refuses collisions.

    The rule: a ``str`` stays as it is; ``bytes`` are decoded as UTF-8 (what
    :mod:`shelve` encodes keys with); an ``int`` (not a bool) becomes its
    decimal text. Anything else is refused, naming the key, because no
    conversion of it is obviously right. Two source keys that convert to the
    same text are refused too, rather than one silently replacing the other.
    """

    def __init__(self, source: str, *, bytes_native: bool = False) -> None:
        self.source = source
        # dbm keys are always bytes (shelve encodes str keys as UTF-8):
        # decoding them is no conversion worth reporting.
        self.bytes_native = bytes_native
        self.seen: set[str] = set()
        self.converted = 0

    def __call__(self, key: object) -> str:
        if isinstance(key, str):
            text = key
        elif isinstance(key, bytes):
            try:
                text = key.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"key {key!r} in {self.source} is not UTF-8") from None
            self.converted += not self.bytes_native
        elif isinstance(key, int) and not isinstance(key, bool):
            text = str(key)
            self.converted += 1
        else:
            raise TypeError(
                f"key {key!r} in {self.source} is a {type(key).__name__}: only str, "
                "bytes (UTF-8) and int keys can be imported"
            )
        if text in self.seen:
            raise ValueError(f"key {key!r} in {self.source} collides with another key {text!r}")
        self.seen.add(text)
        return text


def _unpickler(source: str, encoding: str, errors: str) -> Callable[[str, bytes], Any]:
    """``loads(key, data)``: unpickle one stored value, naming the key on failure."""

    def loads(key: str, data: bytes) -> Any:
        try:
            return pickle.loads(data, encoding=encoding, errors=errors)
        except Exception as exc:
            hint = ""
            if isinstance(exc, UnicodeDecodeError):
                hint = "; a Python 2 shelf needs encoding='latin1' (or 'bytes')"
            raise ValueError(
                f"cannot unpickle the value of key {key!r} in {source}: {exc}{hint}"
            ) from exc

    return loads


# -- detecting the kind of a source ------------------------------------------


def _sqlite_tables(path: str) -> list[str]:
    """Table names of a SQLite file, opened read-only."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    finally:
        conn.close()
    return [str(name) for (name,) in rows]


def _head(path: str, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect(path: str) -> str:
    """The kind of source at ``path`` (one of :data:`KINDS` but "auto").

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` holds something none of the kinds recognizes.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "cache.db")):
            return "diskcache"
        raise ValueError(f"{path} is a directory but not a diskcache directory (no cache.db)")
    if os.path.isfile(path) and _head(path) == _SQLITE_MAGIC:
        # Checked before dbm.whichdb: on 3.13+ it calls every SQLite file dbm.sqlite3.
        tables = _sqlite_tables(path)
        return "shelve" if tables == [_DBM_SQLITE_TABLE] else "sqlitedict"
    if _dbm_base(path) is not None:
        return "shelve"
    if not os.path.exists(path):
        raise FileNotFoundError(f"no import source at {path}")
    head = _head(path, 2)
    suffix = os.path.splitext(path)[1].lower()
    # Protocol 2+ pickles start with the PROTO opcode 0x80.
    if head[:1] == b"\x80" or suffix in (".pkl", ".pickle"):
        return "pickle"
    if head[:1] == b"{" or suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ValueError(
        f"cannot tell what {path} holds: pass kind= (shelve, pickle, sqlitedict, diskcache, jsonl)"
    )


def _dbm_base(path: str) -> tuple[str, str] | None:
    """``(path dbm opens, dbm module name)``, or None if no dbm file is there.
    ``foo.dat`` or ``foo.dir`` of a dbm.dumb file name the same file as ``foo``."""
    candidates = [path]
    stem, suffix = os.path.splitext(path)
    if suffix in (".dat", ".dir", ".bak", ".db", ".pag"):
        candidates.append(stem)
    for candidate in candidates:
        flavour = dbm.whichdb(candidate)
        if flavour:
            return candidate, flavour
    return None


# -- reading each kind of source ----------------------------------------------


def _read_shelve(path: str, keys: _Keys, loads: Callable[[str, bytes], Any]) -> Pairs:
    found = _dbm_base(path)
    if found is None:
        raise ValueError(f"{path} is not a dbm file this Python can read ({_dbm_flavours()})")
    base, flavour = found
    try:
        module = importlib.import_module(flavour)
    except ImportError as exc:
        raise ValueError(f"{path} is a {flavour} file, which this Python lacks: {exc}") from exc
    db = module.open(base, "r")
    try:
        for raw in list(db.keys()):
            key = keys(raw)
            yield key, loads(key, db[raw])
    finally:
        db.close()


def _dbm_flavours() -> str:
    names = []
    for name in ("dbm.sqlite3", "dbm.gnu", "dbm.ndbm", "dbm.dumb"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        names.append(name)
    return "available: " + ", ".join(names)


def _read_pickle(path: str, key: str | None, keys: _Keys, encoding: str, errors: str) -> Pairs:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding=encoding, errors=errors)
    except (OSError, MemoryError):
        raise
    except Exception as exc:
        raise ValueError(f"cannot unpickle {path}: {exc}") from exc
    if key is not None or not isinstance(obj, dict):
        yield keys(key if key is not None else Path(path).stem), obj
        return
    for raw, value in obj.items():
        yield keys(raw), value


def _read_sqlitedict(path: str, keys: _Keys, loads: Callable[[str, bytes], Any]) -> Pairs:
    tables = _sqlite_tables(path)
    # sqlitedict's default table is "unnamed"; a file with one table is unambiguous.
    table = "unnamed" if "unnamed" in tables else (tables[0] if len(tables) == 1 else None)
    if table is None:
        raise ValueError(f"{path} has several tables and none is 'unnamed': {tables}")
    # Read directly, never through the sqlitedict package: its layout is
    # simple and stable (key TEXT, value BLOB of a pickle), so the package
    # is not needed, and its get_tablenames() leaves a connection unclosed
    # (a ResourceWarning on Python 3.13).
    yield from _read_sqlite_table(path, table, keys, loads)


def _read_sqlite_table(
    path: str, table: str, keys: _Keys, loads: Callable[[str, bytes], Any]
) -> Pairs:
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        quoted = '"' + table.replace('"', '""') + '"'
        for raw, data in conn.execute(f"SELECT key, value FROM {quoted} ORDER BY rowid"):
            key = keys(raw)
            yield key, loads(key, bytes(data))
    finally:
        conn.close()


def _read_diskcache(path: str, keys: _Keys) -> Pairs:
    try:
        diskcache = importlib.import_module("diskcache")
    except ImportError as exc:
        raise ValueError(f"{path} is a diskcache directory; pip install diskcache") from exc
    cache = diskcache.Cache(path)
    try:
        for raw in list(cache.iterkeys()):
            key = keys(raw)
            try:
                value = cache[raw]
            except KeyError:  # expired or evicted meanwhile
                continue
            yield key, value
    finally:
        cache.close()


def _read_jsonl(path: str, keys: _Keys) -> Pairs:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: not JSON: {exc}") from exc
            if not isinstance(doc, dict) or set(doc) != {"key", "value"}:
                raise ValueError(
                    f'{path} line {number}: expected {{"key": ..., "value": ...}}, '
                    f"got {line[:80]!r}"
                )
            if not isinstance(doc["key"], str):
                raise ValueError(f"{path} line {number}: the key must be a JSON string")
            yield keys(doc["key"]), doc["value"]


# -- writing ------------------------------------------------------------------


def _refuse_existing(destination: str) -> None:
    if os.path.lexists(destination):
        raise FileExistsError(f"destination {destination} already exists")


def _sync_dir(path: str) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def import_from(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    kind: str = "auto",
    encoding: str = "ASCII",
    errors: str = "strict",
    key: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Copy every key and value of another store into a new logshelf store.

    Sources (``kind``): "shelve" (a :mod:`shelve` or bare :mod:`dbm` file of
    any flavour this Python has: dbm.dumb, dbm.gnu, dbm.ndbm, dbm.sqlite3),
    "pickle" (one pickle file: a dict's items become keys, anything else one
    key named after the file's stem or ``key``), "sqlitedict", "diskcache"
    (a directory) and "jsonl" (one ``{"key": ..., "value": ...}`` object a
    line). "auto" (the default) tells them apart by their content.

    Keys that are not ``str`` are converted: ``bytes`` decoded as UTF-8, an
    ``int`` written in decimal; any other key, or two keys that convert to the
    same text, stops the import with an error naming the key.

    Values are unpickled (with ``encoding`` and ``errors``, as
    :func:`pickle.loads` takes them; a Python 2 shelf needs ``"latin1"`` or
    ``"bytes"``) and stored again with logshelf's pickling. **Unpickling can
    run arbitrary code: only import what you trust.**

    The store is built in a temporary directory beside ``dst`` and renamed
    into place at the end: when the import fails, nothing is left at ``dst``.

    Args:
        src: the file or directory to read (for a dbm.dumb shelf, its base
            name or its ``.dat`` or ``.dir`` file).
        dst: where to create the new store; nothing may exist there.
        kind: "auto", "shelve", "pickle", "sqlitedict", "diskcache" or "jsonl".
        encoding: how a Python 2 ``str`` is read, as :func:`pickle.loads`
            takes it: "ASCII" (default), "latin1", "bytes" or a codec name.
        errors: the codec error handler for ``encoding`` ("strict", "replace").
        key: for a pickle file, store the whole object under this key, even
            when it is a dict.
        progress: called with a line of text every 10,000 keys and at the end.

    Returns:
        An :class:`ImportReport` (the source kind, keys copied, time taken).

    Raises:
        FileExistsError: something exists at ``dst`` (it is not touched).
        FileNotFoundError: nothing at ``src``.
        ValueError: an unknown ``kind``, a source that cannot be read, a
            value that cannot be unpickled or a key that collides (the
            message names the key).
        TypeError: a key of a type that cannot be converted.

    Examples:
        >>> import logshelf, pickle, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "old.pkl"), "wb") as f:
        ...     pickle.dump({"a": 1, "b": [2, 3]}, f)
        >>> report = logshelf.import_from(os.path.join(folder, "old.pkl"),
        ...                               os.path.join(folder, "new.db"))
        >>> report.kind, report.keys
        ('pickle', 2)
        >>> with logshelf.open(os.path.join(folder, "new.db"), "r") as db:
        ...     db["b"]
        [2, 3]
    """
    started = time.perf_counter()
    source = os.path.abspath(os.fspath(src))
    destination = os.path.abspath(os.fspath(dst))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    _refuse_existing(destination)
    if kind == "auto":
        kind = detect(source)
    elif not os.path.lexists(source) and _dbm_base(source) is None:
        raise FileNotFoundError(f"no import source at {source}")
    keys = _Keys(source, bytes_native=kind == "shelve")
    loads = _unpickler(source, encoding, errors)
    pairs = _pairs(kind, source, key, keys, loads, encoding, errors)
    report = ImportReport(source, destination, kind)
    parent = os.path.dirname(destination)
    workdir = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.import-", dir=parent)
    try:
        building = os.path.join(workdir, "store")
        report.keys = _write_store(building, pairs, progress)
        _refuse_existing(destination)  # again: something may have appeared meanwhile
        os.rename(building, destination)
        _sync_dir(parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.converted_keys = keys.converted
    report.seconds = time.perf_counter() - started
    if progress is not None:
        progress(f"done: {report.keys:,} keys")
    return report


def _pairs(
    kind: str,
    source: str,
    key: str | None,
    keys: _Keys,
    loads: Callable[[str, bytes], Any],
    encoding: str,
    errors: str,
) -> Pairs:
    if kind == "shelve":
        return _read_shelve(source, keys, loads)
    if kind == "pickle":
        return _read_pickle(source, key, keys, encoding, errors)
    if kind == "sqlitedict":
        return _read_sqlitedict(source, keys, loads)
    if kind == "diskcache":
        return _read_diskcache(source, keys)
    return _read_jsonl(source, keys)


def _write_store(path: str, pairs: Pairs, progress: Progress | None) -> int:
    """Write ``pairs`` into a new store at ``path`` in batches; return the count."""
    count = 0
    with open_store(path, "n") as db:
        batch: list[tuple[str, Any]] = []
        for pair in pairs:
            batch.append(pair)
            count += 1
            if len(batch) >= _BATCH:
                db.set_many(batch)
                batch = []
            if progress is not None and count % _PROGRESS_EVERY == 0:
                progress(f"{count:,} keys imported")
        if batch:
            db.set_many(batch)
        db.sync()
    return count


def export(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    format: str = "jsonl",  # the name the CLI and the docs use
    progress: Progress | None = None,
) -> int:
    """Write every key and value of the store ``src`` to the file ``dst``; return the count.

    ``format="jsonl"``: one ``{"key": ..., "value": ...}`` JSON object a
    line, keys in sorted order, readable back with ``import_from(kind="jsonl")``.
    Values must be JSON-encodable (JSON has no tuples or non-str dict keys:
    those come back as lists and str keys). ``format="pickle"``: one pickle
    of a ``dict`` holding every key.

    The file is written beside ``dst`` and renamed into place when complete,
    so a failure leaves nothing at ``dst``. Values are unpickled to be
    written: only export stores you trust.

    Args:
        src: the store to read (opened read-only).
        dst: the file to write; nothing may exist there.
        format: "jsonl" (default) or "pickle".
        progress: called with a line of text every 10,000 keys.

    Returns:
        The number of keys written.

    Raises:
        ValueError: an unknown ``format``.
        FileExistsError: something exists at ``dst``.
        StoreNotFoundError: no store at ``src``.
        TypeError: a value is not JSON-encodable (the message names its key
            and type).

    Examples:
        >>> import logshelf, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> with logshelf.open(os.path.join(folder, "app.db")) as db:
        ...     db["user:1"] = {"name": "ada"}
        >>> logshelf.export(os.path.join(folder, "app.db"), os.path.join(folder, "dump.jsonl"))
        1
        >>> with open(os.path.join(folder, "dump.jsonl")) as f:
        ...     print(f.read().strip())
        {"key": "user:1", "value": {"name": "ada"}}
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    destination = os.path.abspath(os.fspath(dst))
    _refuse_existing(destination)
    parent = os.path.dirname(destination)
    with open_store(src, "r") as db:
        names = sorted(db.keys())
        # Not mkstemp: its 0600 would outlive the rename; 0666 less the
        # umask is what a plain open() gives the user.
        temp = os.path.join(
            parent, f".{os.path.basename(destination)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                if format == "jsonl":
                    _write_jsonl(db, names, f, progress)
                else:
                    everything = {}
                    for n, name in enumerate(names, 1):
                        everything[name] = db[name]
                        if progress is not None and n % _PROGRESS_EVERY == 0:
                            progress(f"{n:,} keys read")
                    pickle.dump(everything, f, DEFAULT_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            _refuse_existing(destination)
            os.rename(temp, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
    _sync_dir(parent)
    return len(names)


def _write_jsonl(db: Any, names: list[str], f: Any, progress: Progress | None) -> None:
    dumps = functools.partial(json.dumps, ensure_ascii=False)
    for n, name in enumerate(names, 1):
        value = db[name]
        try:
            line = dumps({"key": name, "value": value})
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the value of key {name!r} is a {type(value).__name__}, which JSON cannot "
                f"hold ({exc}); export it with format='pickle'"
            ) from exc
        f.write(line.encode("utf-8") + b"\n")
        if progress is not None and n % _PROGRESS_EVERY == 0:
            progress(f"{n:,} keys exported")
