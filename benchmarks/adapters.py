"""One adapter per measured system.

An :class:`Adapter` opens a store of its system in a directory and returns a
:class:`Handle`. The workloads only ever do these things with a handle:

* index ``handle.mapping`` (``m[key] = value``, ``m[key]``, ``del m[key]``)
  inside the timed loops. Where the system is a mapping already, ``mapping``
  *is* the system's own object, so no wrapper call is timed; otherwise it is
  the thin class a user of that library would write (pickling for semidbm
  and lmdb, a transaction per write for lmdb);
* wrap every group of 100 operations in ``with handle.batch(write):`` -- a
  shared no-op for unbatched adapters, ``transaction()`` for logshelf-tx, a
  write or read transaction for lmdb-batch;
* call ``handle.flush()`` at the end of every timed write loop (the raw
  baseline's buffer flush, sqlitedict-batch's one commit);
* ``bulk_set`` to build a store, or finish a write phase that the time
  budget cut short, untimed and through the system's fastest batch path;
* ``compact()`` after the write phases, where the system can compact.

Peer libraries are imported only when an adapter is opened, so the suite
runs with whatever subset is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import pickle
import shelve
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchlib import RawLog, chunked

#: Items per untimed bulk batch.
BULK_CHUNK = 10_000
#: lmdb reserves address space, not disk: 64 GiB of map is enough for any run.
LMDB_MAP_SIZE = 64 << 30

_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
_dumps = pickle.dumps
_loads = pickle.loads


class Handle:
    """An open store as the workloads see it (see the module docstring)."""

    def __init__(self, mapping: Any) -> None:
        self.mapping = mapping

    def batch(self, write: bool) -> contextlib.AbstractContextManager[Any]:
        """Context around a group of operations; a shared no-op by default."""
        return _NULL

    def flush(self) -> None:
        """End of a timed write loop; nothing by default."""

    def close(self) -> None:
        """Close the store (never timed)."""
        self.mapping.close()

    def compact(self) -> bool:
        """Reclaim the space of overwritten and deleted data through the
        system's own API; False when it has none."""
        return False

    def bulk_set(self, items: Sequence[tuple[str, Any]]) -> None:
        """Write ``items`` untimed, by the fastest batch path the system has."""
        m = self.mapping
        for chunk in chunked(items, BULK_CHUNK):
            with self.batch(True):
                for key, value in chunk:
                    m[key] = value
        self.flush()


# ----------------------------------------------------------------------------
# handles


class RawHandle(Handle):
    """The raw baseline (:class:`benchlib.RawLog`)."""

    def flush(self) -> None:
        self.mapping.flush()


class DictHandle(Handle):
    """A plain ``dict`` held in memory; :meth:`close` pickles it whole to one
    file (atomically replaced) and opening loads it back. The in-memory
    ceiling: a crash before ``close`` loses everything."""

    FILE = "dict.pickle"

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self._file = os.path.join(path, self.FILE)
        data: dict[str, Any] = {}
        if os.path.exists(self._file):
            with open(self._file, "rb") as f:
                data = pickle.load(f)
        super().__init__(data)

    def close(self) -> None:
        tmp = self._file + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.mapping, f, 5)
        os.replace(tmp, self._file)


class LogshelfHandle(Handle):
    """logshelf, one ``db[key] = value`` per write; bulk paths use ``set_many``
    and ``delete_many`` (one atomic batch each)."""

    def bulk_set(self, items: Sequence[tuple[str, Any]]) -> None:
        for chunk in chunked(items, BULK_CHUNK):
            self.mapping.set_many(chunk)

    def compact(self) -> bool:
        if not hasattr(self.mapping, "compact"):  # logshelf before issue 4
            return False
        self.mapping.compact()
        return True


class LogshelfTxHandle(LogshelfHandle):
    """logshelf with every group of writes inside ``with db.transaction():``
    (reads outside transactions, as a user would write them)."""

    def batch(self, write: bool) -> contextlib.AbstractContextManager[Any]:
        return self.mapping.transaction() if write else _NULL


class ShelveHandle(Handle):
    """stdlib ``shelve`` on the interpreter's default dbm, protocol 5."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        shelf = shelve.open(os.path.join(path, "shelf"), "c", protocol=5)  # noqa: SIM115
        super().__init__(shelf)


class DiskcacheHandle(Handle):
    """``diskcache.Cache`` or ``diskcache.Index`` with their defaults; bulk
    paths inside ``transact()``."""

    def __init__(self, path: str, index: bool) -> None:
        diskcache = importlib.import_module("diskcache")
        super().__init__(diskcache.Index(path) if index else diskcache.Cache(path))
        self._cache = self.mapping.cache if index else self.mapping

    def bulk_set(self, items: Sequence[tuple[str, Any]]) -> None:
        m = self.mapping
        for chunk in chunked(items, BULK_CHUNK):
            with m.transact():
                for key, value in chunk:
                    m[key] = value

    def close(self) -> None:
        self._cache.close()


class SqlitedictHandle(Handle):
    """``sqlitedict.SqliteDict`` (one table in ``db.sqlite``). With
    ``autocommit=False`` the timed loops end with one ``commit()``."""

    def __init__(self, path: str, autocommit: bool) -> None:
        sqlitedict = importlib.import_module("sqlitedict")
        os.makedirs(path, exist_ok=True)
        db = sqlitedict.SqliteDict(os.path.join(path, "db.sqlite"), autocommit=autocommit)
        super().__init__(db)

    def flush(self) -> None:
        if not self.mapping.autocommit:
            self.mapping.commit()

    def bulk_set(self, items: Sequence[tuple[str, Any]]) -> None:
        for chunk in chunked(items, BULK_CHUNK):
            self.mapping.update(chunk)  # one executemany
        self.mapping.commit()

    def close(self) -> None:
        self.mapping.commit()
        self.mapping.close()


class PickledMapping:
    """A bytes-only dbm (semidbm) made to store objects: pickle protocol 5 on
    write, ``pickle.loads`` on read -- what shelve does, minus shelve."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def __setitem__(self, key: str, value: Any) -> None:
        self._db[key] = _dumps(value, 5)

    def __getitem__(self, key: str) -> Any:
        return _loads(self._db[key])

    def __delitem__(self, key: str) -> None:
        del self._db[key]

    def close(self) -> None:
        self._db.close()

    def compact(self) -> None:
        self._db.compact()


class SemidbmHandle(Handle):
    """``semidbm.open(path, "c")`` with values pickled (:class:`PickledMapping`);
    compaction is semidbm's ``compact()`` (rewrite and rename)."""

    def __init__(self, path: str) -> None:
        semidbm = importlib.import_module("semidbm")
        super().__init__(PickledMapping(semidbm.open(path, "c")))

    def compact(self) -> bool:
        self.mapping.compact()
        return True


class LmdbPerOp:
    """lmdb used one operation at a time: each write is its own write
    transaction (committed, so fsynced under lmdb's default ``sync=True``),
    each read its own read transaction. Keys UTF-8, values pickled."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __setitem__(self, key: str, value: Any) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), _dumps(value, 5))

    def __getitem__(self, key: str) -> Any:
        with self.env.begin() as txn:
            data = txn.get(key.encode())
        if data is None:
            raise KeyError(key)
        return _loads(data)

    def __delitem__(self, key: str) -> None:
        with self.env.begin(write=True) as txn:
            if not txn.delete(key.encode()):
                raise KeyError(key)

    def close(self) -> None:
        self.env.close()


class LmdbInTxn:
    """lmdb used in batches: every operation goes through the transaction
    that :meth:`LmdbBatchHandle.batch` opened."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.txn: Any = None

    def __setitem__(self, key: str, value: Any) -> None:
        self.txn.put(key.encode(), _dumps(value, 5))

    def __getitem__(self, key: str) -> Any:
        data = self.txn.get(key.encode())
        if data is None:
            raise KeyError(key)
        return _loads(data)

    def __delitem__(self, key: str) -> None:
        if not self.txn.delete(key.encode()):
            raise KeyError(key)

    def close(self) -> None:
        self.env.close()


def _lmdb_env(path: str) -> Any:
    lmdb = importlib.import_module("lmdb")
    return lmdb.open(path, map_size=LMDB_MAP_SIZE)


class LmdbHandle(Handle):
    """lmdb with its defaults (``sync=True``, ``metasync=True``), one
    transaction per operation; bulk paths use one write transaction per chunk."""

    def __init__(self, path: str) -> None:
        super().__init__(LmdbPerOp(_lmdb_env(path)))

    def bulk_set(self, items: Sequence[tuple[str, Any]]) -> None:
        env = self.mapping.env
        for chunk in chunked(items, BULK_CHUNK):
            with env.begin(write=True) as txn:
                for key, value in chunk:
                    txn.put(key.encode(), _dumps(value, 5))


class LmdbBatchHandle(Handle):
    """lmdb with its defaults, each group of operations in one transaction
    (a write transaction when the group writes, else a read transaction)."""

    def __init__(self, path: str) -> None:
        super().__init__(LmdbInTxn(_lmdb_env(path)))

    @contextlib.contextmanager
    def _txn(self, write: bool) -> Iterator[None]:
        m = self.mapping
        with m.env.begin(write=write) as txn:
            m.txn = txn
            try:
                yield
            finally:
                m.txn = None

    def batch(self, write: bool) -> contextlib.AbstractContextManager[Any]:
        return self._txn(write)


class RocksdictHandle(Handle):
    """``rocksdict.Rdict(path)`` with its default options (values pickled by
    rocksdict itself); compaction is ``compact_range`` over every key."""

    def __init__(self, path: str) -> None:
        rocksdict = importlib.import_module("rocksdict")
        super().__init__(rocksdict.Rdict(path))

    def compact(self) -> bool:
        """A manual compaction of the whole key range."""
        self.mapping.compact_range(None, None)
        return True


class PickleshareHandle(Handle):
    """``pickleshare.PickleShareDB(path)``: one pickle file per key."""

    def __init__(self, path: str) -> None:
        pickleshare = importlib.import_module("pickleshare")
        super().__init__(pickleshare.PickleShareDB(path))

    def close(self) -> None:
        """PickleShareDB has nothing to close."""


# ----------------------------------------------------------------------------
# the registry


#: Workload groups an adapter can take part in.
GENERAL = frozenset({"basic", "large", "reopen", "multiprocess"})


@dataclass(frozen=True)
class Adapter:
    """One measured system and how to open it.

    ``family`` names adapters that open the same files the same way except
    for per-write options (so a reopen measurement of one is valid for all,
    but each is still measured). ``multiprocess`` says where the system
    claims that several processes may write one store at once; None keeps it
    out of the multi-process workload. ``max_reopen_keys`` caps the reopen
    sizes, with ``reopen_note`` saying why.
    """

    name: str
    label: str
    opener: Callable[[str], Handle]
    package: str | None = None  # distribution that must be installed
    module: str | None = None  # module imported to check it
    family: str = ""
    multiprocess: str | None = None
    workloads: frozenset[str] = GENERAL
    max_reopen_keys: int | None = None
    reopen_note: str = ""
    note: str = ""

    def missing(self) -> str | None:
        """None when the adapter can run here, else why not."""
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except ImportError:
            return f"not installed (pip install {self.package})"
        return None

    def version(self) -> str | None:
        """Installed version of the adapter's package."""
        name = self.package or ("logshelf" if self.name.startswith("logshelf") else None)
        if name is None:
            return None
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def open(self, path: str) -> Handle:
        """Open (creating if needed) the store in directory ``path``."""
        return self.opener(path)


def _logshelf(path: str, **options: Any) -> Any:
    logshelf = importlib.import_module("logshelf")
    return logshelf.open(path, **options)


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        "raw",
        "raw baseline",
        lambda p: RawHandle(RawLog(p)),
        workloads=GENERAL | {"durability"},
        note="pickle.dumps + one buffered append; dict lookup + os.pread + pickle.loads",
    ),
    Adapter(
        "dict",
        "dict (in memory)",
        DictHandle,
        note="a plain dict; pickled whole to one file at close (not timed)",
    ),
    Adapter(
        "logshelf",
        "logshelf",
        lambda p: LogshelfHandle(_logshelf(p)),
        family="logshelf",
        multiprocess="designed for it: a writer lock (flock) serializes appends",
        workloads=GENERAL | {"durability", "lockwait"},
        note="defaults: durability='none', flock writer lock",
    ),
    Adapter(
        "logshelf-lz4",
        "logshelf lz4",
        lambda p: LogshelfHandle(_logshelf(p, compression="lz4")),
        family="logshelf",
        multiprocess="designed for it: a writer lock (flock) serializes appends",
        note="compression='lz4' (small values stay below compress_min=256: stored raw)",
    ),
    Adapter(
        "logshelf-tx",
        "logshelf in tx",
        lambda p: LogshelfTxHandle(_logshelf(p)),
        family="logshelf",
        multiprocess="designed for it: a writer lock (flock) serializes appends",
        note="defaults, writes in `with db.transaction():` groups of 100",
    ),
    Adapter(
        "shelve",
        "shelve",
        ShelveHandle,
        note="stdlib shelve on the default dbm, protocol 5; not safe for several writers",
    ),
    Adapter(
        "diskcache",
        "diskcache Cache",
        lambda p: DiskcacheHandle(p, index=False),
        package="diskcache",
        module="diskcache",
        multiprocess="docs: thread-safe and process-safe (SQLite, WAL)",
        note="defaults (size_limit 1 GB with eviction, sqlite_synchronous=NORMAL)",
    ),
    Adapter(
        "diskcache-index",
        "diskcache Index",
        lambda p: DiskcacheHandle(p, index=True),
        package="diskcache",
        module="diskcache",
        multiprocess="docs: thread-safe and process-safe (SQLite, WAL)",
        note="defaults (no eviction)",
    ),
    Adapter(
        "sqlitedict",
        "sqlitedict autocommit",
        lambda p: SqlitedictHandle(p, autocommit=True),
        package="sqlitedict",
        module="sqlitedict",
        family="sqlitedict",
        note="autocommit=True, otherwise defaults (journal_mode=DELETE, synchronous=OFF)",
    ),
    Adapter(
        "sqlitedict-batch",
        "sqlitedict 1 commit",
        lambda p: SqlitedictHandle(p, autocommit=False),
        package="sqlitedict",
        module="sqlitedict",
        family="sqlitedict",
        note="autocommit=False, one commit() at the end of each timed write loop",
    ),
    Adapter(
        "semidbm",
        "semidbm",
        SemidbmHandle,
        package="semidbm",
        module="semidbm",
        note="values pickled (protocol 5); defaults (no checksums verified)",
    ),
    Adapter(
        "lmdb",
        "lmdb txn/op",
        LmdbHandle,
        package="lmdb",
        module="lmdb",
        family="lmdb",
        multiprocess="docs: multi-process on one host (lock file, one writer at a time)",
        note="defaults (sync=True: every commit is fsynced), one transaction per operation",
    ),
    Adapter(
        "lmdb-batch",
        "lmdb batched",
        LmdbBatchHandle,
        package="lmdb",
        module="lmdb",
        family="lmdb",
        multiprocess="docs: multi-process on one host (lock file, one writer at a time)",
        note="defaults, one transaction per group of 100 operations",
    ),
    Adapter(
        "rocksdict",
        "rocksdict",
        RocksdictHandle,
        package="rocksdict",
        module="rocksdict",
        note="Rdict with default options (WAL, no sync)",
    ),
    Adapter(
        "pickleshare",
        "pickleshare",
        PickleshareHandle,
        package="pickleshare",
        module="pickleshare",
        multiprocess="docs: many processes can use one database at once (file per key)",
        max_reopen_keys=100_000,
        reopen_note="one file per key, and opening reads no index: not built at 1M keys",
        note="one pickle file per key (protocol 2)",
    ),
    # Only for the durability workload (issue 4): the same logshelf insert,
    # under each durability mode.
    Adapter(
        "logshelf-always",
        "logshelf always",
        lambda p: LogshelfHandle(_logshelf(p, durability="always")),
        workloads=frozenset({"durability"}),
        note="durability='always': fdatasync before every write returns",
    ),
    Adapter(
        "logshelf-interval",
        "logshelf interval",
        lambda p: LogshelfHandle(_logshelf(p, durability="interval", sync_interval=1.0)),
        workloads=frozenset({"durability"}),
        note="durability='interval', sync_interval=1.0",
    ),
)

BY_NAME: dict[str, Adapter] = {a.name: a for a in ADAPTERS}


def adapter(name: str) -> Adapter:
    """The adapter called ``name``."""
    return BY_NAME[name]


def describe(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, note)`` pairs, for the README and ``--list``."""
    return [(n, BY_NAME[n].note) for n in names]
