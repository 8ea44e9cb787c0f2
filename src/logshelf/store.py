"""The object layer: a ``shelve``-compatible mapping over the bytes engine.

Pickling lives here and only here; everything below handles bytes.

.. warning::
   Values are pickles, and loading a pickle can run arbitrary code. Only open
   stores you trust, exactly as with :mod:`shelve`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from types import TracebackType
from typing import Any

from . import _codecs
from ._compaction import CompactionResult
from ._engine import Engine
from ._fs import FileSystem

__all__ = ["DEFAULT_PROTOCOL", "Shelf", "open"]

#: Pickle protocol for new records when ``protocol=None``. Protocol 5 (Python
#: 3.8+) is the fastest for in-band data; stores written with it read on every
#: Python version logshelf supports.
DEFAULT_PROTOCOL = 5

_dumps = pickle.dumps
_loads = pickle.loads


def _check_key(key: object) -> str:
    if type(key) is str or isinstance(key, str):
        return key
    raise TypeError(f"keys must be str, not {type(key).__name__}: {key!r}")


class Shelf(MutableMapping[str, Any]):
    """A persistent ``MutableMapping[str, Any]``; create one with :func:`open`.

    Reading a key returns a *copy* of the stored object (it is unpickled on
    every read), so ``db["list"].append(1)`` changes nothing on disk unless the
    store was opened with ``writeback=True``, exactly as with :mod:`shelve`.
    """

    def __init__(
        self,
        engine: Engine,
        protocol: int | None = None,
        writeback: bool = False,
        compression: str | None = None,
        compress_min: int = _codecs.COMPRESS_MIN,
    ) -> None:
        if protocol is None:
            protocol = DEFAULT_PROTOCOL
        if not isinstance(protocol, int) or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"protocol must be None or 0..{pickle.HIGHEST_PROTOCOL}, not {protocol!r}"
            )
        if not isinstance(compress_min, int) or compress_min < 0:
            raise ValueError(f"compress_min must be an int >= 0, not {compress_min!r}")
        self._codec = _codecs.codec_from_name(compression)
        self._engine = engine
        # Bound once: db[key] is the "random read" the benchmarks measure.
        self._get = engine.get
        self._protocol = protocol
        self._writeback = writeback
        self._compress_min = compress_min
        self._cache: dict[str, Any] = {}

    # -- encoding ------------------------------------------------------------

    def _encode(self, value: Any) -> tuple[int, bytes, int]:
        """``(codec, stored bytes, rawlen)`` for a value. Pickling and
        compression happen before any lock is taken, so an unpicklable value
        fails here with nothing written."""
        return self._encode_pickled(_dumps(value, self._protocol))

    def _encode_pickled(self, data: bytes) -> tuple[int, bytes, int]:
        if self._codec and len(data) >= self._compress_min:
            codec, stored = _codecs.compress(self._codec, data, self._compress_min)
            if codec:
                return codec, stored, len(data)
        return 0, data, 0

    # -- the mapping ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if type(key) is not str:
            _check_key(key)
        if self._writeback:
            return self._cached(key)
        data = self._get(key)
        if data is None:
            raise KeyError(key)
        return _loads(data)

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
        value = self._cache[key] = _loads(data)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            _check_key(key)
        # _encode() inlined for the common uncompressed case: this is the
        # "insert" path benchmarks/bench_store.py measures.
        data = _dumps(value, self._protocol)
        if self._codec and len(data) >= self._compress_min:
            self._engine.put(key, *self._encode_pickled(data))
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

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    # -- bulk operations: one lock acquisition, one atomic batch -----------

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Write many keys as one atomic batch (like ``dict.update``)."""
        items: Iterable[tuple[str, Any]]
        if isinstance(other, Mapping):
            items = other.items()
        elif hasattr(other, "keys"):
            items = ((k, other[k]) for k in other.keys())  # noqa: SIM118 - not a Mapping
        else:
            items = other
        pairs = list(items) + list(kwargs.items())
        self.set_many(dict(pairs) if len(pairs) > 1 else pairs)

    def set_many(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Write many keys as one atomic batch: all become visible together,
        and after a crash either all or none are present. One lock
        acquisition and one write for the whole batch."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        encoded = []
        for key, value in pairs:
            if type(key) is not str:
                _check_key(key)
            encoded.append((key, *self._encode(value)))
        self._engine.put_many(encoded)
        if self._writeback:
            self._cache.update(pairs)

    def get_many(self, keys: Iterable[str], default: Any = None) -> dict[str, Any]:
        """Read many keys; absent keys map to ``default``."""
        return {key: self.get(key, default) for key in keys}

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete many keys as one atomic batch; return how many were present."""
        wanted = [_check_key(k) for k in keys]
        count = self._engine.delete_many(wanted)
        for key in wanted:
            self._cache.pop(key, None)
        return count

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
        """
        return self._engine.transaction()

    def stats(self) -> dict[str, int]:
        """Numbers for inspection: ``keys``, ``segments``, ``segment_bytes``
        (committed bytes on disk, live and dead), ``generation`` (of the
        MANIFEST) and ``last_txid``."""
        return self._engine.stats()

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
        """Write back the writeback cache (if any) and make every write durable."""
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
    filename: str | os.PathLike[str],
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
    _fs: FileSystem | None = None,
) -> Shelf:
    """Open a persistent object store; a drop-in for :func:`shelve.open`.

    Args:
        filename: the store's path. A store is a directory; it is created for
            flags "c" and "n".
        flag: "r" read-only, "w" read-write on an existing store, "c" create
            if needed (default), "n" always start empty.
        protocol: pickle protocol for new records (default 5).
        writeback: cache every entry read or written and write them all back
            on :meth:`Shelf.sync` and :meth:`Shelf.close`, as shelve does.
        compression: None, "lz4", "zlib" or "bz2", applied per record to
            values of at least ``compress_min`` pickled bytes, and kept only
            when it saves an eighth. Any store reads under any setting.
        durability: what a returned write survives. "none" (default): a
            process crash loses nothing; a power loss keeps a consistent prefix
            of the writes. "always": every returned write also survives a power
            loss (fdatasync before returning). "interval": like "none", plus a
            sync at most every ``sync_interval`` seconds at write time.
        lock_timeout: seconds a write may wait for another process's writer
            lock before raising :class:`~logshelf.LockTimeoutError`; None waits
            indefinitely.
        lock_backend: "auto" (flock on POSIX), "flock" or "filelock".
        max_segment_size: bytes after which writing moves on to a new segment file.
        auto_compact: compact automatically, right after a write that moved
            on to a new segment, when at least this fraction (default half)
            of the sealed segments' bytes is dead and the dead bytes reach
            ``min(64 MiB, max_segment_size)``. None: only :meth:`Shelf.compact`.

    Raises:
        ValueError: a bad flag, protocol, compression or other option (the
            message names the value).
        StoreNotFoundError: flag "r" or "w" and no store at ``filename``.
        FormatError: ``filename`` is not a logshelf store, or a newer format.
        CorruptionError: the store is damaged beyond a torn tail.
    """
    codec = _codecs.codec_from_name(compression)  # validate before touching disk
    engine = Engine(
        os.fspath(filename),
        flag,
        durability=durability,
        sync_interval=sync_interval,
        lock_timeout=lock_timeout,
        lock_backend=lock_backend,
        max_segment_size=max_segment_size,
        auto_compact=auto_compact,
        fs=_fs,
    )
    try:
        return Shelf(
            engine,
            protocol,
            writeback,
            None if codec is _codecs.Codec.NONE else compression,
            compress_min,
        )
    except BaseException:
        engine.close()
        raise
