"""Shared pieces of the argument hasher (:mod:`logshelf._hashing`): the
internal refusal, what an encoder function sees, the parallel tree hashing of
big buffers, and the encoders of scalars and standard library values that
need no dispatch of their own.

Encoder functions take the encoder (a :class:`Sink`) and a value, and append
the value's canonical, type-tagged bytes to ``sink.out``; anything nested goes
back through ``sink.encode``. Every tag and layout here is part of the
encoding: a change invalidates every digest a user's cache holds, and must
come with a new ``_PERSON`` in ``_hashing``.

Tags (one byte each, each used for one thing, so the stream parses one way;
every variable-length part carries its length or count)::

    \x01-\x04 the stream's header (arguments/value, untyped/typed)
    N None   . Ellipsis   ! NotImplemented
    i int64  I longer int   f IEEE double   q exact fraction   c complex
    D Decimal NaN   s str   b bytes inline   B length + tree digest
    w other memoryview   t tuple   l list   d mapping   e set   R back-reference
    y class   F function   C code   M bound method   W builtin function
    L reconstructor by name   m module   E enum member
    k datetime   a date   h time   z timedelta   U UUID   p/u posix/windows path
    g range   x slice   o object state   S builtin subclass   r reduction
    G global by name   Z registered substitute
    n ndarray   O its elements   v numpy scalar   j pandas extension values
    X pandas Index   K MultiIndex levels   Q Series   P DataFrame
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import os
import pathlib
import struct
import threading
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from hashlib import blake2b
from typing import Any, Protocol

#: Buffers of at least this many bytes enter the stream as their tree digest,
#: smaller ones inline. Part of the encoding: changing it changes digests.
TREE_MIN = 64 * 1024
#: Leaf size of the tree. Part of the encoding, independent of the core count.
CHUNK = 8 * 1024 * 1024
#: Past this many buffered bytes the root encoder feeds its hasher and clears
#: the buffer, so a list of many medium arrays never sits in memory twice.
FLUSH = 1024 * 1024

TAG_LEN = struct.Struct("<cQ").pack
LEN = struct.Struct("<Q").pack


class Refused(Exception):
    """Internal: a value cannot be hashed. ``parts`` collects the path from the
    failing value outwards; the public API reverses it into the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str] = []


class Sink(Protocol):
    """What an encoder function sees of the encoder (``_hashing._Encoder``)."""

    out: bytearray
    hasher: Any
    #: id -> depth of the mutable containers being encoded (for cycles).
    stack: dict[int, int]

    def encode(self, value: object) -> None: ...


# -- buffers ------------------------------------------------------------------
# A big buffer is hashed as a tree: BLAKE2b digests of fixed CHUNK-sized
# pieces, computed in a small thread pool (hashlib releases the GIL), then
# hashed together with the length. CHUNK is a constant, never derived from
# the machine, so the digest is the same on every core count.

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _leaf(chunk: memoryview) -> bytes:
    return blake2b(chunk, digest_size=32, person=b"logshelf.leaf.v1").digest()


def _get_pool() -> ThreadPoolExecutor | None:
    """The shared leaf-hashing pool, or None on a one-core machine (where
    threads would only add overhead; the digest is the same either way)."""
    global _pool
    if _pool is None:
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        if workers < 2:
            return None
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(workers, thread_name_prefix="logshelf-hash")
    return _pool


def _forget_pool() -> None:
    # A forked child inherits the executor object but not its threads.
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def tree_digest(view: memoryview) -> bytes:
    """Digest of a contiguous byte buffer: blake2b over its length and the
    blake2b digests of its ``CHUNK``-sized pieces, computed in parallel."""
    n = len(view)
    chunks = [view[i : i + CHUNK] for i in range(0, n, CHUNK)]
    pool = _get_pool() if len(chunks) > 1 else None
    digests = list(pool.map(_leaf, chunks)) if pool is not None else [_leaf(c) for c in chunks]
    root = blake2b(LEN(n), digest_size=32, person=b"logshelf.tree.v1")
    for digest in digests:
        root.update(digest)
    return root.digest()


def feed_buffer(sink: Sink, data: Any, digest: bytes | None = None) -> None:
    """Append the content of a contiguous buffer: inline below ``TREE_MIN``,
    else as tag, length and tree digest (``digest`` if the caller knows it)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    n = len(view)
    out = sink.out
    if n < TREE_MIN:
        out += TAG_LEN(b"b", n)
        out += view
        if sink.hasher is not None and len(out) > FLUSH:
            sink.hasher.update(out)
            out.clear()
        return
    if digest is None:
        digest = tree_digest(memoryview(view))
    out += TAG_LEN(b"B", n)
    out += digest


def enter(enc: Sink, obj: object) -> bool:
    """Push a container that may be part of a cycle; if it is already being
    encoded, write a back-reference (how many levels up) and return False."""
    stack = enc.stack
    depth = stack.get(id(obj))
    if depth is not None:
        enc.out += TAG_LEN(b"R", len(stack) - depth)
        return False
    stack[id(obj)] = len(stack)
    return True


PACK_INT = struct.Struct("<cq").pack
_PACK_FLOAT = struct.Struct("<cd").pack
_NAN = _PACK_FLOAT(b"f", float("nan"))
_PACK_DATETIME = struct.Struct("<ciBBBBBIB").pack
_PACK_TIME = struct.Struct("<cBBBIB").pack
_PACK_TIMEDELTA = struct.Struct("<ciii").pack


def enc_int(enc: Sink, value: int) -> None:
    try:
        enc.out += PACK_INT(b"i", value)
    except struct.error:  # outside 64 bits: length-prefixed two's complement
        data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
        enc.out += TAG_LEN(b"I", len(data))
        enc.out += data


def enc_float(enc: Sink, value: float) -> None:
    if value.is_integer():  # 1.0 == 1 and -0.0 == 0: hash as the int
        enc_int(enc, int(value))
    elif value != value:
        enc.out += _NAN
    else:
        enc.out += _PACK_FLOAT(b"f", value)


def enc_ratio(enc: Sink, numerator: int, denominator: int) -> None:
    """A non-integral rational (lowest terms): as the double equal to it, if any."""
    try:
        approx = numerator / denominator
    except OverflowError:
        approx = None
    if approx is not None and approx.as_integer_ratio() == (numerator, denominator):
        enc.out += _PACK_FLOAT(b"f", approx)
        return
    enc.out += b"q"
    enc_int(enc, numerator)
    enc_int(enc, denominator)


def enc_fraction(enc: Sink, value: fractions.Fraction) -> None:
    if value.denominator == 1:
        enc_int(enc, value.numerator)
    else:
        enc_ratio(enc, value.numerator, value.denominator)


def enc_decimal(enc: Sink, value: decimal.Decimal) -> None:
    if value.is_nan():  # NaN, -NaN, sNaN with payloads: as written
        enc.out += b"D"
        enc_str(enc, str(value))
    elif value.is_infinite():
        enc_float(enc, float(value))
    else:
        numerator, denominator = value.as_integer_ratio()
        if denominator == 1:
            enc_int(enc, numerator)
        else:
            enc_ratio(enc, numerator, denominator)


def enc_complex(enc: Sink, value: complex) -> None:
    if value.imag == 0:
        enc_float(enc, value.real)
    else:
        enc.out += b"c"
        enc_float(enc, value.real)
        enc_float(enc, value.imag)


def enc_str(enc: Sink, value: str) -> None:
    data = value.encode("utf-8", "surrogatepass")
    out = enc.out
    out += TAG_LEN(b"s", len(data))
    out += data


def enc_bytes(enc: Sink, value: bytes | bytearray) -> None:
    if len(value) < TREE_MIN:
        out = enc.out
        out += TAG_LEN(b"b", len(value))
        out += value
    else:
        feed_buffer(enc, value)


def enc_memoryview(enc: Sink, value: memoryview) -> None:
    if value.format in ("B", "b", "c") and value.ndim == 1:
        enc_bytes(enc, value.tobytes() if not value.c_contiguous else value.cast("B"))  # type: ignore[arg-type]
        return
    enc.out += b"w"
    enc_str(enc, value.format)
    enc.encode(value.shape)
    feed_buffer(enc, value.tobytes())


def constant(tag: bytes) -> Callable[[Sink, Any], None]:
    def enc_constant(enc: Sink, value: object) -> None:
        enc.out += tag

    return enc_constant


# -- containers -----------------------------------------------------------------


# -- standard library types ----------------------------------------------------

# -- standard library types -------------------------------------------------------

type_ids: dict[type, bytes] = {}


def type_id(cls: type) -> bytes:
    """Tag and "module:qualname" of a class (cached: classes are long-lived)."""
    code = type_ids.get(cls)
    if code is None:
        module = getattr(cls, "__module__", None)
        name = f"{module}:{getattr(cls, '__qualname__', cls.__name__)}"
        data = name.encode("utf-8", "surrogatepass")
        code = type_ids[cls] = TAG_LEN(b"y", len(data)) + data
    return code


def enc_type(enc: Sink, value: type) -> None:
    enc.out += type_id(value)


def enc_named(enc: Sink, tag: bytes, value: Any) -> None:
    enc.out += tag
    enc_str(enc, str(getattr(value, "__module__", None)))
    enc_str(enc, str(getattr(value, "__qualname__", getattr(value, "__name__", ""))))


def enc_module(enc: Sink, module: types.ModuleType) -> None:
    enc.out += b"m"
    enc_str(enc, module.__name__)


def enc_enum(enc: Sink, member: enum.Enum) -> None:
    enc.out += b"E"
    enc.out += type_id(type(member))
    name = member.name
    enc.encode(name if name is not None else member.value)


def enc_datetime(enc: Sink, v: datetime.datetime) -> None:
    enc.out += _PACK_DATETIME(
        b"k", v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold
    )
    enc.encode(v.tzinfo)


def enc_date(enc: Sink, v: datetime.date) -> None:
    enc.out += struct.pack("<ciBB", b"a", v.year, v.month, v.day)


def enc_time(enc: Sink, v: datetime.time) -> None:
    enc.out += _PACK_TIME(b"h", v.hour, v.minute, v.second, v.microsecond, v.fold)
    enc.encode(v.tzinfo)


def enc_timedelta(enc: Sink, v: datetime.timedelta) -> None:
    enc.out += _PACK_TIMEDELTA(b"z", v.days, v.seconds, v.microseconds)


def enc_uuid(enc: Sink, v: uuid.UUID) -> None:
    enc.out += b"U"
    enc.out += v.bytes


def enc_path(enc: Sink, v: pathlib.PurePath) -> None:
    # PurePosixPath("a") == PosixPath("a"): the flavour matters, not concreteness.
    enc.out += b"p" if isinstance(v, pathlib.PurePosixPath) else b"u"
    enc_str(enc, str(v))


def enc_range(enc: Sink, v: range) -> None:
    # Ranges compare as sequences: range(0) == range(5, 5), range(0, 3, 5) == range(1).
    n = len(v)
    enc.out += b"g"
    enc.encode((n, v.start if n else None, v.step if n > 1 else None))


def enc_slice(enc: Sink, v: slice) -> None:
    enc.out += b"x"
    enc.encode((v.start, v.stop, v.step))


# -- code ---------------------------------------------------------------------


def enc_code(enc: Sink, code: types.CodeType) -> None:
    """What a code object does: bytecode, constants, names, argument shape
    (not its file or line numbers, so moving a function keeps its digest)."""
    enc.out += b"C"
    enc.encode(
        (
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
            code.co_names,
            code.co_varnames,
            code.co_freevars,
            code.co_cellvars,
            code.co_consts,
        )
    )
    enc_bytes(enc, code.co_code)


def enc_function(enc: Sink, fn: types.FunctionType) -> None:
    if not enter(enc, fn):  # a closure can hold the function itself
        return
    enc_named(enc, b"F", fn)
    enc_code(enc, fn.__code__)
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell (a name not yet assigned)
            cells.append(_EMPTY_CELL)
    for part, value in (
        (".__defaults__", fn.__defaults__),
        (".__kwdefaults__", fn.__kwdefaults__),
        (".__closure__", tuple(cells)),
    ):
        try:
            enc.encode(value)
        except Refused as exc:
            exc.parts.append(part)
            raise
    del enc.stack[id(fn)]


class _EmptyCell:
    """Marks an empty closure cell (hashed by its class name)."""


_EMPTY_CELL = _EmptyCell()


def enc_method(enc: Sink, method: types.MethodType) -> None:
    enc.out += b"M"
    enc.encode(method.__func__)
    try:
        enc.encode(method.__self__)
    except Refused as exc:
        exc.parts.append(".__self__")
        raise


def enc_builtin(enc: Sink, fn: types.BuiltinFunctionType) -> None:
    enc_named(enc, b"W", fn)
    owner = fn.__self__
    try:  # [].append, ZoneInfo._unpickle; a module function has none
        enc.encode(None if isinstance(owner, types.ModuleType) else owner)
    except Refused as exc:
        exc.parts.append(".__self__")
        raise
