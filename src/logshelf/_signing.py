"""Signed stores: a keyed MAC on every record, checked before anything of
the record is decompressed or unpickled (``docs/security.md``; the bytes
are in ``docs/format.md`` §9).

A signed store has a ``SIGNED`` file naming its identity (16 random bytes)
and carrying a key check; the keys themselves are never stored. Each record
written by a handle with ``key=`` sets flag bit 4 (SIGNED) and ends with a
32-byte tag: keyed BLAKE2b (``person=b"logshelf-record"``) over the store's
identity, the record's codec field, raw length and key, and its stored
value: the stored bytes themselves when shorter than :data:`DIGEST_FROM`,
else their SHA-256 (hash then MAC: SHA-256 runs at about 1.7 GiB/s here,
keyed BLAKE2b at 0.9), and the SHA-256 of each out-of-band buffer. A
value's tag sits at its end; a value with buffers has it at the end of its
head, so the buffer table's checksum covers it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from ._buffer_format import BUFFERS, OutOfBand
from ._crc import parallel_map
from ._fs import FileSystem
from ._options import Options
from ._records import Record, new_record
from .errors import FormatError, SigningError, TamperedError

__all__ = [
    "DIGEST_FROM",
    "SIGNED",
    "SIGNED_NAME",
    "TAG_SIZE",
    "Signer",
    "check_keys",
    "key_check",
    "latest_signed",
    "open_signer",
    "read_identity",
    "signed_record",
    "write_identity",
]

#: The bit of a record's codec field (flags bit 4) that marks a signed record.
SIGNED = 0x10 >> 1
TAG_SIZE = 32
#: Values (and buffers) at least this long are MACed through their digest.
DIGEST_FROM = 64 << 10
#: Values and buffers at least this long are digested in pieces of this size.
PIECE = 16 << 20
SIGNED_NAME = "SIGNED"
_MAGIC = b"LSHFSIG\x00"
_VERSION = 1
_ALGORITHM_BLAKE2B = 1
# magic, version, algorithm, identity, key check tag, then crc32 of all before.
_FILE = struct.Struct("<8sHH16s32s")
_CRC = struct.Struct("<I")
_CONTEXT = struct.Struct("<BIH")
#: The context of an uncompressed value without buffers, from its key's length.
_PLAIN_CONTEXT = functools.partial(_CONTEXT.pack, SIGNED, 0)
_MIN_KEY = 16


def check_keys(key: object) -> tuple[bytes, ...]:
    """``key=`` as a tuple of keys, newest first (None: no keys).

    Raises:
        TypeError: not bytes or a list of bytes.
        ValueError: an empty list, or a key shorter than 16 bytes.
    """
    if key is None:
        return ()
    keys = [key] if isinstance(key, (bytes, bytearray)) else key
    if isinstance(keys, (str, memoryview)) or not isinstance(keys, Iterable):
        raise TypeError(f"key must be bytes or a list of bytes (newest first), not {key!r}")
    found = []
    for k in keys:
        if not isinstance(k, (bytes, bytearray)):
            raise TypeError(f"each key must be bytes, not {type(k).__name__}")
        if len(k) < _MIN_KEY:
            raise ValueError(f"a key must be at least {_MIN_KEY} bytes long, not {len(k)}")
        found.append(bytes(k))
    if not found:
        raise ValueError("key= is an empty list: give at least one key")
    return tuple(found)


def _mac_key(key: bytes) -> bytes:
    # BLAKE2b takes keys of at most 64 bytes: longer ones are hashed first.
    return key if len(key) <= 64 else hashlib.blake2b(key).digest()


def key_check(key: bytes, identity: bytes) -> bytes:
    """What a store keeps to recognise its key: a MAC of its identity."""
    return hashlib.blake2b(
        _MAGIC + identity, key=_mac_key(key), digest_size=TAG_SIZE, person=b"logshelf-store"
    ).digest()


def read_identity(fs: FileSystem, path: str) -> tuple[bytes, bytes] | None:
    """``(identity, key check)`` of the store at ``path``; None when unsigned.

    Raises:
        FormatError: a SIGNED file that is not one of this version.
    """
    try:
        data = fs.read_file(os.path.join(path, SIGNED_NAME))
    except FileNotFoundError:
        return None
    size = _FILE.size + _CRC.size
    if len(data) != size or not data.startswith(_MAGIC):
        raise FormatError(f"{path}/{SIGNED_NAME} is not a logshelf SIGNED file")
    _, version, algorithm, identity, check = _FILE.unpack_from(data)
    if zlib.crc32(data[: _FILE.size]) != _CRC.unpack_from(data, _FILE.size)[0]:
        raise FormatError(f"{path}/{SIGNED_NAME} is damaged (checksum mismatch)")
    if version != _VERSION or algorithm != _ALGORITHM_BLAKE2B:
        raise FormatError(f"{path}/{SIGNED_NAME} is of a newer logshelf (upgrade logshelf)")
    return identity, check


def write_identity(fs: FileSystem, path: str, key: bytes, identity: bytes, mode: int) -> None:
    """Write the SIGNED file (atomically): ``identity``, checked with ``key``."""
    body = _FILE.pack(_MAGIC, _VERSION, _ALGORITHM_BLAKE2B, identity, key_check(key, identity))
    fs.write_file_atomic(
        os.path.join(path, SIGNED_NAME), body + _CRC.pack(zlib.crc32(body)), mode=mode
    )


class Signer:
    """Signs and checks the records of one signed store with a handle's keys."""

    def __init__(self, keys: Sequence[bytes], identity: bytes, check: bytes, path: str) -> None:
        matching = [k for k in keys if hmac.compare_digest(key_check(k, identity), check)]
        if not matching:
            raise SigningError(
                f"{path} is signed with none of the keys given: wrong key (the store's "
                "SIGNED file does not check with any of them)"
            )
        self.path = path
        self.identity = identity
        #: True when the store's key check is not the newest key's (rotation).
        self.stale_check = matching[0] is not keys[0]
        self.newest = keys[0]
        # Keyed and with the identity absorbed: a record costs a copy of one.
        self._templates = [self._template(k) for k in keys]

    def _template(self, key: bytes) -> Any:
        mac = hashlib.blake2b(key=_mac_key(key), digest_size=TAG_SIZE, person=b"logshelf-record")
        mac.update(self.identity)
        return mac

    def _tag(
        self, template: Any, key: bytes, codec: int, rawlen: int, body: Any, buffers: Any
    ) -> bytes:
        mac = template.copy()
        mac.update(_CONTEXT.pack(codec | SIGNED, rawlen, len(key)))
        mac.update(key)
        mac.update(body if len(body) < DIGEST_FROM else digest(body))
        for buffer_digest in buffers:
            mac.update(buffer_digest)
        return bytes(mac.digest())

    def sign(self, key: bytes, codec: int, data: Any, rawlen: int) -> tuple[int, Any]:
        """``(codec field, stored value)`` of a record signed with the newest key."""
        if codec & BUFFERS:
            digests = [digest(b) for b in data.buffers]
            head = _with_tag_room(data)
            tag = self._tag(self._templates[0], key, codec, rawlen, head[:-TAG_SIZE], digests)
            signed = OutOfBand(head[:-TAG_SIZE] + tag)
            signed.buffers = data.buffers
            signed.span = data.span
            return codec | SIGNED, signed
        if not codec and len(data) < DIGEST_FROM:  # the common write, in fewer steps
            mac = self._templates[0].copy()
            mac.update(_PLAIN_CONTEXT(len(key)))
            mac.update(key)
            mac.update(data)
            return SIGNED, data + mac.digest()
        return codec | SIGNED, data + self._tag(self._templates[0], key, codec, rawlen, data, ())

    def verify(
        self,
        key: bytes,
        codec: int,
        value: bytes,
        rawlen: int,
        where: tuple[str, int | None],
        buffers: Any = (),
    ) -> bytes:
        """The value of a record without its tag, once the tag checks with
        one of the keys (``buffers``: the stored bytes of its out-of-band
        buffers). ``codec`` is the record's codec field.

        Raises:
            TamperedError: the record is not signed, or its tag checks with
                no key (``where``: the file and offset).
        """
        if not codec & SIGNED or len(value) < TAG_SIZE:
            raise TamperedError(
                f"{_named(key, where)}: the record is not signed, and this handle reads "
                "signed records only"
            )
        # A large value is hashed through a view: the only copy is the one returned.
        body = value[:-TAG_SIZE] if len(value) < DIGEST_FROM else memoryview(value)[:-TAG_SIZE]
        tag = value[-TAG_SIZE:]
        digests = [digest(b) for b in buffers]
        for template in self._templates:
            expected = self._tag(template, key, codec & ~SIGNED, rawlen, body, digests)
            if hmac.compare_digest(expected, tag):
                return body if type(body) is bytes else value[:-TAG_SIZE]
        raise TamperedError(
            f"{_named(key, where)}: the record's signature does not check with any key of "
            "this handle: written without the key, or changed since"
        )

    def verify_plain(self, key: bytes, value: bytes, where: tuple[str, int | None]) -> bytes:
        """:meth:`verify` for the common read: an uncompressed value without
        buffers, shorter than :data:`DIGEST_FROM` (the same MAC, in fewer steps)."""
        if len(value) >= DIGEST_FROM:
            return self.verify(key, SIGNED, value, 0, where)
        body = value[:-TAG_SIZE]
        context = _PLAIN_CONTEXT(len(key))
        for template in self._templates:
            mac = template.copy()
            mac.update(context)
            mac.update(key)
            mac.update(body)
            if hmac.compare_digest(mac.digest(), value[-TAG_SIZE:]):
                return body
        return self.verify(key, SIGNED, value, 0, where)  # says why

    def unsigned(
        self, key: bytes, codec: int, value: Any, rawlen: int, where: tuple[str, int | None]
    ) -> tuple[int, Any]:
        """A stored record's ``(codec field, value)`` checked, then without its
        signature (as it was before signing; a value with buffers is an
        ``OutOfBand`` whose buffers are its stored ones).

        Raises:
            TamperedError: as :meth:`verify`.
        """
        if codec & BUFFERS:
            buffers = value.buffers
            self.verify(key, codec, bytes(value), rawlen, where, buffers)
            inner = _without_tag(bytes(value))
            inner.buffers = buffers
            inner.span = value.span
            return codec & ~SIGNED, inner
        return codec & ~SIGNED, self.verify(key, codec, value, rawlen, where)

    def resign(
        self, key: bytes, codec: int, value: Any, rawlen: int, where: tuple[str, int | None]
    ) -> tuple[int, Any]:
        """:meth:`unsigned`, then signed with the newest key (compaction)."""
        codec, inner = self.unsigned(key, codec, value, rawlen, where)
        return self.sign(key, codec, inner, rawlen)


def _named(key: bytes, where: tuple[str, int | None]) -> str:
    place = where[0] if where[1] is None else f"{where[0]}, offset {where[1]}"
    return f"key {key.decode('utf-8', 'replace')!r}: {place}"


def digest(data: Any) -> bytes:
    """What the MAC covers of a large value or a buffer: its SHA-256, or for
    one of :data:`PIECE` bytes or more, the SHA-256 of its pieces' SHA-256s
    (pieces of ``PIECE`` bytes, hashed on several threads)."""
    view = memoryview(data).cast("B")
    if len(view) < PIECE:
        return hashlib.sha256(view).digest()
    pieces = [view[at : at + PIECE] for at in range(0, len(view), PIECE)]
    return hashlib.sha256(b"".join(parallel_map(_sha256, pieces))).digest()


def _sha256(data: Any) -> bytes:
    return hashlib.sha256(data).digest()


def _without_tag(head: bytes) -> OutOfBand:
    """A checked head of a value with buffers, its tag and the tag's room removed."""
    head_len = int.from_bytes(head[:4], "little") - TAG_SIZE
    return OutOfBand(head_len.to_bytes(4, "little") + head[4:-TAG_SIZE])


def _with_tag_room(value: OutOfBand) -> bytes:
    """The head of a value with buffers grown by a tag's room (its
    ``head_len`` field counts the tag; the tag's bytes come last)."""
    head_len = int.from_bytes(value[:4], "little") + TAG_SIZE
    return head_len.to_bytes(4, "little") + value[4:] + bytes(TAG_SIZE)


def open_signer(options: Options, path: str, writable: bool, empty: bool) -> Signer | None:
    """The signer of a handle opened with ``options`` (None: unsigned), once
    its keys and the store agree; a writable handle (under the writer lock)
    creates the SIGNED file of a new or emptied store, removes it when a
    handle without keys empties the store (flag "n"), and re-checks it with
    the newest key after a rotation.

    Raises:
        SigningError: a signed store without keys, an unsigned store with
            data and keys, or keys none of which fits.
    """
    fs, keys, flag = options.fs, options.keys, options.flag
    found = read_identity(fs, path)
    if not keys:
        if found is None:
            return None
        if writable and flag == "n":
            fs.unlink(os.path.join(path, SIGNED_NAME))
            return None
        raise SigningError(f"{path} is a signed store: open it with key= (its key)")
    if found is None or (writable and flag == "n"):
        if found is None and not (writable and empty):
            raise SigningError(
                f"{path} is not a signed store, and key= reads signed stores only: "
                "`logshelf sign` makes a signed copy of it"
            )
        identity = os.urandom(16)
        write_identity(fs, path, keys[0], identity, options.mode)
        found = identity, key_check(keys[0], identity)
    signer = Signer(keys, found[0], found[1], path)
    if signer.stale_check and writable:
        write_identity(fs, path, keys[0], signer.identity, options.mode)
    return signer


def latest_signed(records: list[Record], signer: Signer | None) -> list[Record]:
    """A batch's records as a bytes store writes them: the last one of each
    key (a later record of a key wins), signed when ``signer`` is given."""
    latest = list({r.key: r for r in records}.values())
    return latest if signer is None else [signed_record(signer, r) for r in latest]


def signed_record(signer: Signer, record: Record) -> Record:
    """``record`` (a PUT) signed with the newest key, its checksum redone."""
    codec, data = signer.sign(record.key_bytes, record.codec, record.data, record.rawlen)
    return new_record(
        (record.kind, record.key, record.key_bytes, codec, data, zlib.crc32(data), record.rawlen)
    )
