"""RedisStore: the bytes-store protocol over one namespace of a Redis server.

The second implementation of ``_bytes_store.BytesStore`` (the disk
``Engine`` is the first): :class:`logshelf.Shelf` sits on it unchanged, so
pickling, serializers, codecs and ``writeback`` behave as on disk. The
bytes it stores are defined in ``_redis_format`` (``docs/format.md`` §9);
the scripts and the namespace lock in ``_redis_scripts``; what it promises
in ``docs/redis.md``.

* Reads: ``GET`` / ``MGET`` of value records, checksums verified; a chunked
  value's chunks are immutable (a new version on every write), so a pointer
  read once names exactly one value.
* Writes: one ``WRITE`` script per call (``put``, ``put_many``,
  ``delete_many``, a transaction's commit), atomic on the server. A value of
  more than ``chunk_size`` stored bytes is first written as chunks that
  expire unless a committed pointer claims them.
* ``transaction()`` takes the namespace lock, buffers writes (reads see
  them), and commits them with the lock's token as the fencing token.
* ``keys()``, ``len()`` and prefix listings use ``SCAN``, never ``KEYS``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import _redis_format as rfmt
from ._buffer_format import Buffered
from ._compaction import CompactionResult, Drop
from ._options import Options
from ._records import Record, delete_record, put_record
from ._redis_chunks import read_value, write_chunks
from ._redis_client import UNAVAILABLE, connect, master_of, rexc
from ._redis_client import close as close_client
from ._redis_durability import Durable, write_and_wait
from ._redis_scripts import (
    FENCED,
    LOCKED,
    LOST,
    MISSING_CHUNK,
    PUT_ONE,
    WRITE,
    Lock,
    wait_steps,
)
from ._redis_signing import open_signer
from ._redis_url import RedisTarget, parse_url
from ._signing import Signer, latest_signed
from ._txn import Transaction
from .errors import (
    BackendUnavailableError,
    CorruptionError,
    FormatError,
    ReadOnlyError,
    StoreClosedError,
    StoreError,
    StoreNotFoundError,
)

__all__ = ["RedisStore", "open_url"]

_PUT = 0xA1
#: Milliseconds old chunks live after their pointer was replaced (readers
#: holding the old pointer still find them; PUT_ONE has the same figure).
_OLD_CHUNK_GRACE_MS = 60_000
#: Keys per SCAN step, per UNLINK of a namespace reset.
_SCAN_COUNT = 1000
#: Attempts of a read that met a chunk an overwrite had just let expire.
_READ_ATTEMPTS = 5

#: The namespace locks this process holds, by (client URL, namespace):
#: (process, thread, token); a forked child finds its parent's entries and
#: ignores them. Another handle on the same namespace, used by the
#: holding thread, writes with that token instead of waiting for itself
#: (on disk, handles of one process share the writer lock the same way).
_HELD: dict[tuple[str, str], tuple[int, int, str]] = {}


class _Present(Mapping[str, int]):
    """The committed keys as ``_txn.Transaction`` wants its index: asks the server."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._store._exists(key))

    def __getitem__(self, key: str) -> int:
        if key in self:
            return 0
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store._scan_keys())

    def __len__(self) -> int:
        return len(self._store._scan_keys())


class RedisStore:
    """A handle on one namespace of a Redis server; see the module docstring."""

    #: Values are stored whole: the object layer keeps arrays inside the
    #: pickle stream (no out-of-band buffers, docs/format.md section 4.2).
    out_of_band = False

    def __init__(self, target: RedisTarget, options: Options) -> None:
        self.path = target.display
        self.flag = options.flag
        self.writable = options.writable
        self._target = target
        self._timeout = options.lock_timeout
        self._durability = options.durability
        self._keys = rfmt.Keys(target.namespace)
        self._scope = (target.client_url, target.namespace)
        self._mutex = threading.RLock()
        self._txn: Transaction | None = None
        self._closed = False
        self._durable: Durable | None = None
        self._keys_given = options.keys
        self._signer: Signer | None = None
        with self._translate("connecting"):
            self._client: Any = connect(target, self._durability, self.path)
        try:
            with self._translate("open"):
                self._write_script = self._client.register_script(WRITE)
                self._put_one = self._client.register_script(PUT_ONE)
                self._open_namespace()
                if self._durability == "always":
                    master = master_of(self._client, self._keys.lock)
                    self._durable = Durable.for_server(master, self.path, target.replicas)
        except BaseException:
            close_client(self._client)
            raise

    # -- errors --------------------------------------------------------------

    @contextmanager
    def _translate(self, what: str, write: bool = False) -> Iterator[None]:
        """Raise the server's failures as logshelf's errors, naming the store."""
        try:
            yield
        except UNAVAILABLE as exc:
            applied = (
                " The write was applied wholly or not at all (never in part); "
                "read the keys back to know which."
                if write
                else ""
            )
            raise BackendUnavailableError(
                f"Redis at {self.path} is unavailable during {what}: {str(exc).rstrip('.')}."
                f"{applied}"
            ) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"Redis at {self.path} refused {what}: {exc}") from exc

    def _where(self, rkey: bytes) -> str:
        return f"{self.path} key {rkey.decode('utf-8', 'backslashreplace')!r}"

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError(f"invalid operation on closed store {self.path}")

    def _writable(self) -> None:
        self._check()
        if not self.writable:
            raise ReadOnlyError(f"store {self.path} was opened read-only (flag 'r')")

    def _run_lock(self, script: str, args: list[Any]) -> Any:
        return self._client.eval(script, 1, self._keys.lock, *args)

    def script_on(self, keys: list[bytes], what: str) -> Callable[[str, list[Any]], Any]:
        """``run(script, args)`` evaluating scripts on ``keys`` of this
        namespace, failures raised as logshelf's errors (for the cache's
        single-flight locks)."""

        def run(script: str, args: list[Any]) -> Any:
            with self._translate(what):
                return self._client.eval(script, len(keys), *keys, *args)

        return run

    @property
    def names(self) -> rfmt.Keys:
        """The Redis key names of this namespace."""
        return self._keys

    @property
    def lock_ttl(self) -> float:
        return self._target.lock_ttl

    # -- open: the namespace and its flag ------------------------------------

    def _open_namespace(self) -> None:
        meta = self._keys.meta
        client = self._client
        try:
            if self.flag in ("c", "n"):
                client.hsetnx(meta, "format", rfmt.FORMAT)
            version = client.hget(meta, "format")
        except rexc.ResponseError as exc:
            raise FormatError(f"{self.path}: {meta!r} is not a logshelf namespace: {exc}") from exc
        if version is None:
            raise StoreNotFoundError(
                f"no logshelf namespace {self._target.namespace!r} at {self.path} "
                f"(flag {self.flag!r} opens an existing one; 'c' creates it)"
            )
        if version != str(rfmt.FORMAT).encode():
            raise FormatError(
                f"namespace {self._target.namespace!r} at {self.path} has format "
                f"{version!r}; this logshelf reads format {rfmt.FORMAT}"
            )
        if self.flag == "n":
            self._reset()
        self._signer = open_signer(
            self._client, self._keys, self.path, self.flag, self._keys_given, _SCAN_COUNT
        )

    def _reset(self) -> None:
        """Flag "n": delete every key of the namespace but its meta and lock,
        under the namespace lock (no other writer runs meanwhile)."""
        lock = Lock(self._run_lock, self._target.lock_ttl)
        lock.acquire(self._timeout, self.path)
        try:
            keep = {self._keys.meta, self._keys.lock}
            batch: list[bytes] = []
            for rkey in self._client.scan_iter(match=self._keys.all_pattern(), count=_SCAN_COUNT):
                if rkey not in keep:
                    batch.append(rkey)
                if len(batch) >= _SCAN_COUNT:
                    self._client.unlink(*batch)
                    batch = []
            if batch:
                self._client.unlink(*batch)
        finally:
            lock.release()

    # -- reads ------------------------------------------------------------------

    def _rkey(self, key: str) -> bytes:
        return self._keys.value(key.encode("utf-8", "surrogatepass"))

    def _exists(self, key: str) -> int:
        with self._translate("a read"):
            return int(self._client.exists(self._rkey(key)))

    def _decode(self, key: str, record: bytes, rkey: bytes) -> bytes | None:
        """The value in ``record`` (chunks joined, decompressed), or None when
        a chunk is gone (an overwrite let it expire: read the key again)."""
        return read_value(self._client, self._keys, key, record, self._where(rkey), self._signer)

    def _read(self, keys: list[str]) -> list[bytes | None]:
        """Values of ``keys`` from one state of the namespace (one MGET)."""
        rkeys = [self._rkey(key) for key in keys]
        for _ in range(_READ_ATTEMPTS):
            records = self._client.mget(rkeys) if rkeys else []
            values: list[bytes | None] = []
            for key, rkey, record in zip(keys, rkeys, records, strict=True):
                value = None if record is None else self._decode(key, record, rkey)
                if record is not None and value is None:
                    if self._client.get(rkey) == record:
                        raise CorruptionError(
                            f"a chunk of the value of key {key!r} at {self._where(rkey)} "
                            "is missing (deleted by someone else, or evicted by maxmemory)"
                        )
                    break  # overwritten meanwhile, its old chunks expired: read again
                values.append(value)
            else:
                return values
        raise CorruptionError(
            f"chunks of a value at {self.path} keep disappearing while read "
            f"(keys {keys[:3]!r}...): a value rewritten faster than it can be read"
        )

    def get(self, key: str, copy: bool = True) -> bytes | Buffered | None:
        if self._txn is None and not self._closed:
            # The common read in one GET (the benchmarked path); a chunked
            # value whose chunks moved on, and every other case, below.
            rkey = self._keys.value_prefix + key.encode("utf-8", "surrogatepass")
            with self._translate("a read"):
                record = self._client.get(rkey)
                if record is None:
                    return None
                value = self._decode(key, record, rkey)
            if value is not None:
                return value
        with self._mutex:
            self._check()
            txn = self._txn
            if txn is not None and key in txn.records and txn.mine():
                return txn.value(key)
            with self._translate("a read"):
                return self._read([key])[0]

    def get_many(self, keys: Iterable[str], copy: bool = True) -> list[bytes | Buffered | None]:
        with self._mutex:
            self._check()
            wanted = list(keys)
            txn = self._txn if self._txn is not None and self._txn.mine() else None
            remote = [k for k in wanted if txn is None or k not in txn.records]
            with self._translate("a read"):
                found = dict(zip(remote, self._read(remote), strict=True))
            return [
                txn.value(k) if txn is not None and k in txn.records else found[k] for k in wanted
            ]

    def contains(self, key: str) -> bool:
        with self._mutex:
            self._check()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.present(key, _Present(self))
            return bool(self._exists(key))

    def _scan_keys(self, prefix: str = "") -> list[str]:
        """The live keys (starting with ``prefix``), by SCAN (which may
        repeat a key: each is listed once)."""
        base = len(self._keys.value_prefix)
        pattern = self._keys.value_pattern(prefix.encode("utf-8", "surrogatepass"))
        found: dict[str, None] = {}
        with self._translate("a key listing"):
            for rkey in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
                try:
                    found[rkey[base:].decode("utf-8")] = None
                except UnicodeDecodeError:
                    raise CorruptionError(
                        f"{self._where(rkey)} is not a key logshelf wrote (not UTF-8)"
                    ) from None
        return list(found)

    def keys(self) -> list[str]:
        with self._mutex:
            self._check()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.keys(dict.fromkeys(self._scan_keys(), 0))
            return self._scan_keys()

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """The live keys starting with ``prefix``: SCAN with a MATCH pattern."""
        with self._mutex:
            self._check()
            txn = self._txn
            if txn is not None and txn.mine():
                return [k for k in self.keys() if k.startswith(prefix)]
            return self._scan_keys(prefix)

    def __len__(self) -> int:
        with self._mutex:
            self._check()
            txn = self._txn
            if txn is not None and txn.mine():
                return txn.count(dict.fromkeys(self._scan_keys(), 0))
            return len(self._scan_keys())

    # -- writes -------------------------------------------------------------

    def put(self, key: str, codec: int, data: bytes, rawlen: int) -> None:
        if self._signer is not None:
            kb = key.encode("utf-8", "surrogatepass")
            codec, data = self._signer.sign(kb, codec, data, rawlen)
        record = put_record(key, codec, data, rawlen)
        if (
            self._txn is None
            and self.writable
            and self._durable is None
            and not self._closed
            and len(data) <= self._target.chunk_size
        ):
            # The common write in one small script (the benchmarked path);
            # when the lock is held, the general path below waits for it.
            packed = rfmt.pack_inline(record.key_bytes, codec, data, record.vcrc, rawlen)
            rkey = self._keys.value_prefix + record.key_bytes
            with self._translate("a write", write=True):
                try:  # EVALSHA itself: the Script wrapper costs a tenth more
                    done = self._client.evalsha(self._put_one.sha, 2, self._keys.lock, rkey, packed)
                except rexc.NoScriptError:  # a restarted server: load it again
                    done = self._put_one(keys=[self._keys.lock, rkey], args=[packed])
                if done:
                    return
        self._write([record])

    def put_expiring(
        self, key: str, data: bytes, expire_at: float, fence: int | None = None
    ) -> bool:
        """Write one key (codec 0) that the server deletes at ``expire_at``
        (seconds since the epoch; 0: never), the cache's entries. With
        ``fence``, a fencing token: refused (False, nothing written) when a
        write with a newer token already stored this key."""
        with self._mutex:
            self._writable()
            expire_ms = int(expire_at * 1000) if expire_at else 0
            return self._commit([put_record(key, 0, data, 0)], "", expire_ms, fence) >= 0

    def put_many(self, records: list[Record]) -> None:
        if records:
            self._write(latest_signed(records, self._signer))

    def delete(self, key: str) -> bool:
        return self._write([delete_record(key)]) > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        records = {key: delete_record(key) for key in keys}
        return self._write(list(records.values())) if records else 0

    def _write(self, records: list[Record]) -> int:
        with self._mutex:
            self._writable()
            txn = self._txn
            if txn is not None and txn.mine():
                present = _Present(self)
                return sum(txn.buffer(record, present) for record in records)
            return self._commit(records, "")

    def _encode(self, record: Record) -> tuple[bytes, list[bytes]]:
        """``(record bytes, new chunk keys)``; b"" for a delete. A large value's
        chunks are written here, expiring unless the commit claims them."""
        if record.kind != _PUT:
            return b"", []
        if len(record.data) <= self._target.chunk_size:
            return rfmt.pack_inline(
                record.key_bytes, record.codec, record.data, record.vcrc, record.rawlen
            ), []
        return write_chunks(self._client, self._keys, record, self._target.chunk_size)

    def _commit(
        self, records: list[Record], token: str, expire_at_ms: int = 0, fence: int | None = None
    ) -> int:
        """Write ``records`` with one WRITE script; wait while another
        client's transaction holds the lock. Returns the deletes that hit,
        or -1 when ``fence`` (a fencing token for the one key written) is
        older than the last one that wrote it (nothing written)."""
        with self._translate("a write", write=True):
            encoded = [self._encode(record) for record in records]
        rkeys = [self._keys.value(r.key_bytes) for r in records]
        chunks = [name for _, names in encoded for name in names]
        fence_key = self._keys.lock if fence is None else self._keys.fence(records[0].key_bytes)
        args: list[Any] = [token, len(records), _OLD_CHUNK_GRACE_MS, self._keys.base + b"c:"]
        args += [expire_at_ms, "" if fence is None else fence]
        args.extend(value for value, _ in encoded)
        if not token:
            token = self._held_token() or ""
            args[0] = token
        wait = wait_steps(self._timeout, "a write", self.path)
        keys = [self._keys.lock, fence_key, *rkeys, *chunks]
        durable = self._durable.command() if self._durable is not None else None
        while True:
            with self._translate("a write", write=True):
                if durable is None:
                    status, deleted = self._write_script(keys=keys, args=args)
                else:
                    (status, deleted), reply = write_and_wait(
                        self._client, self._keys.lock, self._write_script, keys, args, durable
                    )
            if status == LOCKED:
                wait()
                continue
            if status == LOST:
                raise StoreError(
                    f"the transaction on {self.path} lost its lock (held past lock_ttl="
                    f"{self._target.lock_ttl} s without renewal): nothing was written"
                )
            if status == FENCED:
                return -1
            if status == MISSING_CHUNK:
                raise StoreError(
                    f"the chunks of a large value written to {self.path} expired before "
                    "its commit: nothing was written"
                )
            break
        if durable is not None and self._durable is not None:
            self._durable.check(reply)
        return int(deleted)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._mutex:
            self._writable()
            if self._txn is not None:
                yield
                return
            held = self._held_token()
            lock = None
            if held is None:
                lock = Lock(self._run_lock, self._target.lock_ttl)
                with self._translate("a transaction's lock"):
                    lock.acquire(self._timeout, self.path)
                _HELD[self._scope] = (os.getpid(), threading.get_ident(), lock.token)
            failed = True
            pid = os.getpid()
            try:
                txn = self._txn = Transaction()
                try:
                    yield
                    if os.getpid() != pid:
                        pid = 0  # forked inside: the lock and the commit are the parent's
                        raise RuntimeError(
                            f"a transaction on {self.path} cannot end in a process forked "
                            "inside it: nothing was written (the parent commits its own)"
                        )
                    if txn.records:
                        token = lock.token if lock is not None else held
                        self._commit(list(txn.records.values()), token or "")
                    failed = False
                finally:
                    self._txn = None
            finally:
                if lock is not None and pid:
                    del _HELD[self._scope]
                    try:
                        with self._translate("a transaction's unlock"):
                            lock.release()
                    except BackendUnavailableError:
                        if not failed:
                            raise
                        # The block's own error says more; the lock expires
                        # after lock_ttl by itself.

    def _held_token(self) -> str | None:
        """The token of this namespace's lock if this thread holds it (through
        another handle's open transaction), else None."""
        held = _HELD.get(self._scope)
        if held is None or held[:2] != (os.getpid(), threading.get_ident()):
            return None
        return held[2]

    # -- lifecycle and inspection ------------------------------------------------

    def sync(self) -> None:
        """A round trip; with durability="always" every write already waited."""
        with self._mutex:
            self._check()
            with self._translate("sync"):
                self._client.ping()

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            close_client(self._client)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        with self._mutex:
            self._check()
            keys = len(self._scan_keys())
            with self._translate("stats"):
                total = sum(1 for _ in self._client.scan_iter(match=self._keys.all_pattern()))
            return {"keys": keys, "redis_keys": total}

    def verify(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Read and check every value of the namespace; return the problems."""
        problems: list[str] = []
        keys = self.keys()
        for start in range(0, len(keys), _SCAN_COUNT):
            for key in keys[start : start + _SCAN_COUNT]:
                try:
                    self.get(key)
                except (CorruptionError, FormatError) as exc:
                    problems.append(str(exc))
        if progress is not None:
            progress(f"{self.path}: {len(keys)} values checked, {len(problems)} problems")
        return problems

    def compact(
        self, wait: bool = True, max_inputs: int | None = None, drop: Drop | None = None
    ) -> CompactionResult:
        self._writable()
        return CompactionResult(
            False, "a Redis namespace needs no compaction: the server frees what is replaced"
        )

    def locate(self, key: str) -> tuple[str, int] | None:
        """``(the Redis key holding the record, 0)``, or None when absent."""
        if not self.contains(key):
            return None
        return self._where(self._rkey(key)), 0


def open_url(url: str, options: Options) -> RedisStore:
    """The Redis store ``url`` names, opened with ``options``' flag,
    durability and lock timeout (``store.open`` imports this module only
    for a Redis URL: the ``redis`` package is needed only then).

    Raises:
        ValueError: a bad URL parameter (the message names it).
        BackendUnavailableError: the server cannot be reached.
        StoreNotFoundError: flag "r" or "w" and no such namespace.
    """
    return RedisStore(parse_url(url), options)
