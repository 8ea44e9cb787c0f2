"""The object layer: a ``shelve``-compatible mapping over the bytes engine.

Pickling lives here and only here; everything below handles bytes.

.. warning::
   Values are pickles, and loading a pickle can run arbitrary code. Only open
   stores you trust, exactly as with :mod:`shelve`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import Any

from . import _codecs
from ._bulk import BulkOperations
from ._bulk import check_key as _check_key
from ._bytes_store import BytesStore
from ._compaction import CompactionResult
from ._decoding import Decoding
from ._encoding import LargeBuffer, compressed, encode
from ._encoding import dumps as dumps_out_of_band
from ._encoding import probe as _probe
from ._engine import Engine
from ._fs import FileSystem
from ._options import (
    DEFAULT_PROTOCOL,
    check_compress_min,
    check_compression,
    check_copy,
    check_protocol,
    check_unpickling,
    make_options,
)
from ._prefix_scans import PrefixScans
from ._redis_url import is_url
from ._restricted import check_safety
from ._serializers import Loads, Serializer, make_loads, resolve
from ._signing import check_keys

__all__ = ["DEFAULT_PROTOCOL", "Shelf", "open"]

_dumps = pickle.dumps
_UnpicklingError = pickle.UnpicklingError


class Shelf(Decoding, BulkOperations, PrefixScans, MutableMapping[str, Any]):
    """A persistent ``MutableMapping[str, Any]``; create one with :func:`open`.

    Reading a key returns a *copy* of the stored object (it is unpickled on
    every read), so ``db["list"].append(1)`` changes nothing on disk unless the
    store was opened with ``writeback=True``, exactly as with :mod:`shelve`.

    ``encoding``, ``errors`` and ``fix_imports`` are passed to
    :func:`pickle.loads` for every value read; they matter only for pickles
    written by Python 2 (see ``docs/objects.md``).

    Not meant to be constructed directly: its first argument is a bytes
    store (``_bytes_store.BytesStore``), which :func:`open` builds from a
    path or a Redis URL and the options it checks.

    Every method raises :class:`~logshelf.StoreClosedError` once the store
    is closed; writes raise :class:`~logshelf.ReadOnlyError` under flag "r"
    and :class:`~logshelf.LockTimeoutError` when ``lock_timeout`` passes
    while another process holds the writer lock.

    Examples:
        >>> import logshelf, os, tempfile
        >>> db = logshelf.open(os.path.join(tempfile.mkdtemp(), "s.db"))
        >>> db["user:ada"] = {"name": "Ada"}
        >>> db.update({"user:bob": {"name": "Bob"}, "visits": 2})
        >>> sorted(db.keys("user:")), len(db)
        (['user:ada', 'user:bob'], 3)
        >>> db.close()
    """

    def __init__(
        self,
        engine: BytesStore,
        protocol: int | None = None,
        writeback: bool = False,
        compression: str | None = None,
        compress_min: int = _codecs.COMPRESS_MIN,
        *,
        encoding: str = "ASCII",
        errors: str = "strict",
        fix_imports: bool = True,
        serializer: Serializer | None = None,
        trusted: frozenset[tuple[str, str]] | None = None,
        copy: bool = True,
    ) -> None:
        self._protocol = check_protocol(protocol)
        #: With safe=True, the trusted= globals (the allow-list adds its own).
        self._trusted = trusted
        #: None: pickle (the stored bytes are the pickle stream).
        self._serializer = serializer
        self._compress_min = check_compress_min(compress_min)
        self._codec = check_compression(compression)
        check_unpickling(encoding, errors, fix_imports)
        self._unpickling = (encoding, errors, fix_imports)
        self._engine = engine
        self._copy = check_copy(copy)
        #: Pickle finds large buffers for the engine to store out of band.
        self._oob = self._protocol >= 5 and engine.out_of_band
        self._out_of_band = (self._protocol, self._codec, self._compress_min)
        # Bound once (db[key] is the benchmarked "random read"); by default
        # _loads is pickle.loads itself.
        self._get = engine.get if copy else functools.partial(engine.get, copy=False)
        self._loads = make_loads(encoding, errors, fix_imports, trusted)
        self._writeback = writeback
        self._cache: dict[str, Any] = {}

    # -- encoding ------------------------------------------------------------

    def _encode(self, value: Any) -> tuple[int, bytes, int]:
        """``(codec, stored bytes, rawlen)`` for a value (``_encoding.encode``)."""
        return encode(
            value, self._serializer, self._protocol, self._codec, self._compress_min, self._oob
        )

    # -- the mapping ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if type(key) is not str:
            _check_key(key)
        if self._writeback:
            return self._cached(key)
        data = self._get(key)
        if data is None:
            raise KeyError(key)
        # Through a local: self._loads(data) would be an unspecialisable
        # method lookup (an instance attribute, not a method), ~7 ns more on
        # this benchmarked path; the attribute load plus call costs what the
        # module-global pickle.loads call did.
        loads = self._loads
        try:
            # A Buffered (a value with out-of-band buffers) raises TypeError
            # here before anything is read: no check on this path.
            return loads(data)  # type: ignore[arg-type]
        except (_UnpicklingError, TypeError) as exc:  # no cost unless raised: 3.11+
            return self._enveloped(data, exc, loads)

    def _cached(self, key: str) -> Any:
        """``self[key]`` under ``writeback=True``: each entry is read once and
        then served from (and written back from) the cache."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        data = self._get(key)
        if data is None:
            raise KeyError(key)
        value = self._cache[key] = self._decode(self._loads, data)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            _check_key(key)
        # _encode() inlined for the common uncompressed case: this is the
        # "insert" path benchmarks/bench_store.py measures.
        if self._serializer is not None or not self._oob:
            self._engine.put(key, *self._encode(value))
        else:
            try:
                data = _dumps(value, self._protocol, buffer_callback=_probe)
            except LargeBuffer:  # pickle again, the large buffers out of band
                self._engine.put(key, *dumps_out_of_band(value, *self._out_of_band))
            else:
                if self._codec and len(data) >= self._compress_min:
                    self._engine.put(key, *compressed(data, self._codec, self._compress_min))
                else:
                    self._engine.put(key, 0, data, 0)
        if self._writeback:
            self._cache[key] = value

    def __delitem__(self, key: str) -> None:
        if not self._engine.delete(_check_key(key)):
            raise KeyError(key)
        self._cache.pop(key, None)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._engine.contains(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._engine.keys())

    def __len__(self) -> int:
        return len(self._engine)

    def get(
        self,
        key: str,
        default: Any = None,
        *,
        copy: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        fix_imports: bool | None = None,
    ) -> Any:
        """``self[key]`` if present, else ``default``.

        ``copy=False`` returns the large arrays of a value (those stored out
        of band, see ``docs/objects.md``) as read-only views on the store's
        file, without copying or checksumming them; ``copy=True`` returns
        fresh, writable copies, checked; None keeps the handle's setting
        (``open(..., copy=)``, default True).

        ``encoding``, ``errors`` and ``fix_imports`` override the handle's
        settings for this read only, with :func:`pickle.loads`'s meaning
        (None keeps the handle's). Under ``writeback=True`` an entry already
        in the cache is returned as it is (it may hold unsaved changes);
        otherwise the value read is cached as usual.

        Raises:
            ValueError: a bad ``encoding`` or ``errors`` override (named).
            TypeError: an override or ``copy`` of the wrong type, or a key
                that is not a ``str``.
        """
        if encoding is None and errors is None and fix_imports is None and copy is None:
            try:
                return self[key]
            except KeyError:
                return default
        loads = self._loads_for(encoding, errors, fix_imports)
        if type(key) is not str:
            _check_key(key)
        if self._writeback and key in self._cache:
            return self._cache[key]
        data = self._engine.get(key, self._copy if copy is None else check_copy(copy))
        if data is None:
            return default
        value = self._decode(loads, data)
        if self._writeback:
            self._cache[key] = value
        return value

    def _load_many(self, keys: list[str], loads: Loads) -> dict[str, Any]:
        """The present ones of ``keys`` and their values, read from one state of
        the store; under writeback, cached entries win and new reads are cached."""
        found: dict[str, Any] = {}
        if self._writeback:
            cache = self._cache
            for key in keys:
                if key in cache:
                    found[key] = cache[key]
            keys = [k for k in keys if k not in found]
        for key, data in zip(keys, self._engine.get_many(keys, self._copy), strict=True):
            if data is not None:
                value = found[key] = self._decode(loads, data)
                if self._writeback:
                    self._cache[key] = value
        return found

    def clear(self) -> None:
        """Delete every key in one atomic batch."""
        with self._engine.transaction():
            self._engine.delete_many(self._engine.keys())
        self._cache.clear()

    def transaction(self) -> Any:
        """A context manager making its writes one atomic batch.

        It holds the writer lock for its whole duration, so no other process
        can write in between: ``with db.transaction(): db["n"] += 1`` is a safe
        counter across processes. Reads inside see the transaction's own
        writes. On an exception nothing is written. Nested transactions join
        the outermost one.

        Raises:
            ReadOnlyError: the store was opened with flag "r".
            LockTimeoutError: ``lock_timeout`` passed while another process
                held the writer lock.

        Examples:
            >>> import logshelf, os, tempfile
            >>> db = logshelf.open(os.path.join(tempfile.mkdtemp(), "s.db"))
            >>> with db.transaction():
            ...     db["balance:a"] = 90
            ...     db["balance:b"] = 110
            >>> db["balance:a"] + db["balance:b"]
            200
            >>> db.close()
        """
        return self._engine.transaction()

    def stats(self) -> dict[str, int]:
        """Numbers for inspection: ``keys``, ``segments``, ``segment_bytes``
        (committed bytes on disk, live and dead), ``generation`` (of the
        MANIFEST) and ``last_txid``."""
        return self._engine.stats()

    def locate(self, key: str) -> tuple[str, int]:
        """Where ``key``'s live value is stored: ``(segment file, byte
        offset of its record)``, for inspection and debugging (the record
        layout is in ``docs/format.md``). A value written in this thread's
        open transaction is not on disk yet and raises KeyError too.

        Raises:
            KeyError: the key is absent.
        """
        where = self._engine.locate(_check_key(key))
        if where is None:
            raise KeyError(key)
        return where

    def compact(self) -> CompactionResult:
        """Reclaim the space of overwritten and deleted values.

        Seals the active segment, rewrites the live records of every sealed
        segment into new files and deletes the old ones. Other handles and
        processes keep reading and writing meanwhile (writers wait for the
        writer lock only briefly, at the start and at the commit). A crash
        at any point leaves the old or the new set of segments, complete.
        Every copied record's checksums are verified on the way.

        Returns a :class:`CompactionResult` with sizes before and after.

        Raises:
            CorruptionError: a record to copy is damaged; nothing was changed.
            LockTimeoutError: another compaction or writer held a lock longer
                than ``lock_timeout``.
            ReadOnlyError: the store was opened with flag "r".
            RuntimeError: called inside a transaction.
        """
        return self._engine.compact()

    def verify(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Check every stored record and index entry; return the problems found
        (an empty list for a healthy store). Costs one read of all data.

        Args:
            progress: called with a line of text after each segment and at
                the end (the command line prints them).
        """
        return self._engine.verify(progress)

    # -- lifecycle -----------------------------------------------------------

    def sync(self) -> None:
        """Write back the writeback cache (if any) and make every write durable.

        Raises:
            HandlePoisonedError: an earlier sync of this handle failed.
            OSError: the sync itself failed (the handle is then poisoned).
        """
        if self._writeback and self._cache:
            # As shelve does: write every cached entry back, then start afresh.
            if self._engine.writable:
                self.set_many(self._cache)
            self._cache = {}
        self._engine.sync()

    def close(self) -> None:
        """Sync and close. Calling it again does nothing; any other use of a
        closed store raises :class:`~logshelf.StoreClosedError`."""
        if self._engine.closed:
            return
        try:
            if self._writeback and self._cache and self._engine.writable:
                self.sync()
        finally:
            self._cache = {}
            self._engine.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._engine.closed

    @property
    def path(self) -> str:
        """Absolute path of the store directory."""
        return self._engine.path

    def __enter__(self) -> Shelf:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and not engine.closed:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"flag={self._engine.flag!r}"
        return f"<logshelf.Shelf {self._engine.path!r} {state}>"


def open(  # mirrors shelve.open, shadowing the builtin on purpose
    filename: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    flag: str = "c",
    protocol: int | None = None,
    writeback: bool = False,
    *,
    compression: str | None = None,
    compress_min: int = _codecs.COMPRESS_MIN,
    durability: str = "none",
    sync_interval: float = 1.0,
    lock_timeout: float | None = None,
    lock_backend: str = "auto",
    max_segment_size: int = 128 << 20,
    auto_compact: float | None = 0.5,
    mode: int = 0o666,
    encoding: str = "ASCII",
    errors: str = "strict",
    fix_imports: bool = True,
    serializer: object = None,
    deserializer: object = None,
    safe: bool = False,
    trusted: Iterable[object] = (),
    trusted_owner: bool = False,
    copy: bool = True,
    key: bytes | Iterable[bytes] | None = None,
    _fs: FileSystem | None = None,
) -> Shelf:
    """Open a persistent object store; a drop-in for :func:`shelve.open`.

    Args:
        filename: the store's path (``str``, ``bytes`` or path-like). A store
            is a directory; it is created for flags "c" and "n". Flag "n"
            replaces a regular file at that path, but never a directory that
            is not a store.
        flag: "r" read-only, "w" read-write on an existing store, "c" create
            if needed (default), "n" always start empty.
        protocol: pickle protocol for new records (default 5).
        writeback: cache every entry read or written and write them all back
            on :meth:`Shelf.sync` and :meth:`Shelf.close`, as shelve does.
        compression: None, "lz4", "zlib" or "bz2", applied per record to
            values of at least ``compress_min`` pickled bytes, and kept only
            when it saves an eighth. Any store reads under any setting.
        compress_min: the smallest serialized value that is compressed
            (bytes, default 256): smaller ones gain nothing.
        durability: what a returned write survives. "none" (default): a
            process crash loses nothing; a power loss keeps a consistent prefix
            of the writes. "always": every returned write also survives a power
            loss (fdatasync before returning). "interval": like "none", plus a
            sync at most every ``sync_interval`` seconds at write time.
        sync_interval: seconds between syncs with ``durability="interval"``.
        lock_timeout: seconds a write may wait for another process's writer
            lock before raising :class:`~logshelf.LockTimeoutError`; None waits
            indefinitely.
        lock_backend: "auto" (flock on POSIX), "flock" or "filelock".
        max_segment_size: bytes after which writing moves on to a new segment file.
        auto_compact: compact automatically, right after a write that moved
            on to a new segment, when at least this fraction (default half)
            of the sealed segments' bytes is dead and the dead bytes reach
            ``min(64 MiB, max_segment_size)``. None: only :meth:`Shelf.compact`.
        mode: permission bits of the files the store creates, less the umask
            (dbm's ``mode``; directories also get search permission where
            they are readable).
        encoding: passed to :func:`pickle.loads` for every value read; it
            matters only for pickles written by Python 2 (docs/objects.md):
            "ASCII" (default) fails on 8-bit ``str``, ``"latin1"`` reads
            Python 2 numpy arrays and datetimes (and 8-bit ``str`` as text),
            ``"bytes"`` reads 8-bit ``str`` as ``bytes``.
        errors: passed to :func:`pickle.loads` with ``encoding``.
        fix_imports: passed to :func:`pickle.loads`: map Python 2 module
            names to Python 3 ones. :meth:`Shelf.get` and
            :meth:`Shelf.get_many` override these three per call.
        serializer: how new values become bytes: "pickle" (None, the
            default), "json", "raw" (bytes as they are), "dill" or
            "cloudpickle" (when installed), or an object with a stable
            ``name`` and ``dumps``/``loads``; or, as CPython 3.15's shelve,
            a callable ``serializer(obj, protocol) -> bytes`` together with
            ``deserializer(data) -> obj``. Each record keeps its serializer's
            name, so records of any serializer read back (docs/objects.md).
        deserializer: with a callable ``serializer``, the function that
            turns its bytes back into objects (CPython 3.15's shelve).
        safe: load values through an allow-list of globals (docs/security.md):
            containers, scalars, datetime, Decimal, UUID, collections types
            and numpy arrays; anything else raises
            :class:`~logshelf.UntrustedGlobalError`. A store created so gets
            a 0700 directory and 0600 files; an existing store that another
            user owns, or that group or others can write, is refused unless
            ``trusted_owner=True``.
        trusted: with ``safe=True``, more globals this handle may load:
            classes or functions, ``(module, qualname)`` tuples or
            ``"module:qualname"`` strings.
        trusted_owner: with ``safe=True``, open a store that another user
            owns or that group or others can write (refused otherwise).
        copy: what reads of values with large arrays return (numpy arrays
            and pandas objects; docs/objects.md): True (default), fresh,
            writable arrays, their checksums checked; False, read-only
            views on the store's file, no copy and no checksum pass (a
            view stays valid after close() and compaction).
            :meth:`Shelf.get` can override it per call.
        key: sign the store (docs/security.md): bytes of at least 16 (keep
            them out of the store's directory), or a list, newest first
            (rotation: records are signed with the newest and checked with
            any). Every record read must carry a valid signature, checked
            before anything of it is decompressed or unpickled; one that
            does not raises :class:`~logshelf.TamperedError`. A store
            created so is signed from its first record and gets a 0700
            directory and 0600 files; a signed store cannot be opened
            without its key, nor an unsigned one with data in it with one
            (``logshelf sign`` makes a signed copy).

    Raises:
        ValueError: a bad flag, protocol, compression, encoding, serializer
            or other option (the message names the value).
        SerializerUnavailableError: serializer "dill" or "cloudpickle" is
            not installed.
        TypeError: ``encoding`` or ``errors`` not a str, ``fix_imports`` not
            a bool.
        StoreNotFoundError: flag "r" or "w" and no store at ``filename``.
        FormatError: ``filename`` is not a logshelf store, or a newer format.
        CorruptionError: the store is damaged beyond a torn tail.
        SigningError: ``key=`` does not fit the store: a signed store
            without a key, an unsigned store holding data with one, or keys
            none of which the store was signed with.
        UntrustedStoreError: ``safe=True`` and a store others can write.
        LockTimeoutError: a writable open waited ``lock_timeout`` for the
            writer lock (opening catches up and cuts a torn tail under it).
        CodecUnavailableError: ``compression="lz4"`` without the lz4 package.
        BackendUnavailableError: a Redis URL whose server cannot be reached.

    Warns:
        UntrustedStoreWarning: without ``safe=True`` or ``key=``, a store
            that another user owns or that others can write.

    Examples:
        >>> import logshelf, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "state.db")
        >>> with logshelf.open(path) as db:
        ...     db["config"] = {"retries": 3}
        ...     with db.transaction():
        ...         db["runs"] = db.get("runs", 0) + 1
        >>> with logshelf.open(path, "r") as db:
        ...     db["config"]["retries"], db["runs"]
        (3, 1)
    """
    # Validate everything before touching disk.
    options = make_options(
        filename,
        flag,
        durability=durability,
        sync_interval=sync_interval,
        lock_timeout=lock_timeout,
        lock_backend=lock_backend,
        max_segment_size=max_segment_size,
        auto_compact=auto_compact,
        mode=mode,
        fs=_fs,
    )
    check_protocol(protocol)
    check_compress_min(compress_min)
    check_compression(compression)
    check_unpickling(encoding, errors, fix_imports)
    check_copy(copy)
    keys = check_keys(key)
    chosen = resolve(serializer, deserializer, check_protocol(protocol))
    local = not is_url(filename)
    allowed = check_safety(options.path, safe, trusted, trusted_owner, warn=local and not keys)
    if (safe or keys) and mode == 0o666:
        options = dataclasses.replace(options, mode=0o600, keys=keys)
    elif keys:
        options = dataclasses.replace(options, keys=keys)
    engine: BytesStore
    if is_url(filename):  # a namespace of a Redis server (docs/redis.md)
        from ._redis_store import open_url  # imports redis: only for such a URL

        engine = open_url(filename, options)
    else:
        engine = Engine(options)
    try:
        return Shelf(
            engine,
            protocol,
            writeback,
            compression,
            compress_min,
            encoding=encoding,
            errors=errors,
            fix_imports=fix_imports,
            serializer=chosen,
            trusted=allowed,
            copy=copy,
        )
    except BaseException:
        engine.close()
        raise
