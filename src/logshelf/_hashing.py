"""Structural, type-tagged hashing of call arguments, for a memoizing cache.

A cache key must be the same for equal arguments in every process, after
every restart and under every ``PYTHONHASHSEED``. So nothing here uses
``hash()``, ``id()``, ``repr()`` or pickles: each value is written as a
canonical, type-tagged byte stream (a one-byte tag, then lengths and
contents) that is fed to BLAKE2b. :func:`hash_arguments` and
:func:`hash_value` return a 32-byte digest (``DIGEST_SIZE``; 256 bits, so
collisions need not be considered even across many caches).

Equality. As ``functools.lru_cache`` does, numbers that compare equal hash
equal: ``1``, ``1.0``, ``True``, ``Fraction(1)``, ``Decimal("1.0")``,
``complex(1, 0)`` and numeric numpy scalars (``np.int64(1)``,
``np.float32(0.5) == 0.5``) all share one encoding; an integral value is
written as an int, a non-integral one as the IEEE double it equals or, if no
double equals it, as an exact fraction. All NaNs are one value. With
``typed=True`` the exact type of each top-level argument is part of the key
(nested values stay untyped, as in lru_cache). Dicts and sets hash equal
whatever their order (entries are sorted by their encoded key), a ``set``
equals the equal ``frozenset``, and ``bytes``, ``bytearray`` and a byte
``memoryview`` agree. Lists and tuples differ, as they compare unequal.

Where ``==`` and behaviour part ways the hasher prefers a cache miss to a
wrong hit: a subclass of a builtin (``Counter``, a namedtuple) is tagged with
its class; datetimes with different tzinfo differ even at the same instant;
``Decimal("1.0")`` equals ``Decimal("1.00")`` only because they are equal
numbers. Objects are hashed by their class (module and qualified name) and
their state: dataclasses and plain classes by their ``__dict__`` and
``__slots__`` (sorted by name); anything else (and any class with a C base
whose hidden state Python cannot see, such as ``socket.socket``, or a class
that customises pickling) by its ``__reduce_ex__(5)`` tuple, hashed
structurally. What cannot be reduced (sockets, locks, open files,
generators) raises :class:`UnhashableArgumentError` naming the path, e.g.
``args['model'].connection``; :func:`register_hasher` teaches the hasher a
type. Functions hash by module, qualified name, code (bytecode, constants,
names; not the line numbers) and the values of defaults and closure cells,
so two different lambdas differ. Classes and modules hash by name. A cycle
writes a back-reference to the enclosing container instead of recursing.

numpy and pandas (never imported by this module; see
:mod:`logshelf._hash_types`): an array by dtype, shape and its C-order bytes
(byte order, ``-0.0`` and NaN payloads show); a DataFrame column by column
with its index and columns. Buffers of 64 KiB and more enter the stream as a
tree digest computed in parallel 8 MiB chunks, the same on every machine.

Remembering arrays. Hashing a big array costs about a second per GiB per
core, and an array that came out of the cache is often passed straight to
the next cached function. The hasher may reuse a digest only for an array
whose bytes *provably* cannot have changed: read-only, no object references,
and a base chain that ends in an immutable ``bytes`` object. numpy refuses to
set ``writeable`` back to True on such an array and no writable view of the
memory can exist, so the only way to change it is to write into a ``bytes``
object through ctypes. Digests are kept in a memo keyed by ``id`` with a
weak reference, checked on every use together with the data pointer, shape,
strides and dtype (all of which can be reassigned on a live array). Any other
array (it owns its memory, or sits on a ``bytearray``, an ``mmap``, another
array) is hashed again each time: marking it read-only proves nothing, since
``arr.flags.writeable = True`` or a writable view can undo it. Only plain
``ndarray`` objects of 64 KiB or more are remembered, themselves or inside
lists, tuples and dict values: a pandas object is hashed afresh each time
(its column arrays are new view objects on every access).

So the cache should decode arrays onto ``bytes``. An in-band protocol-5
pickle does not (its arrays sit on a ``bytearray``, writable); pickling with
``buffer_callback`` and loading the out-of-band buffers as ``bytes``
(``pickle.loads(data, buffers=[bytes, ...])``) gives read-only arrays on
``bytes`` at no extra copy, and :func:`freeze` converts any value (one copy
per array). :func:`remember` is then called on each returned value; it
registers what qualifies and leaves the rest alone.
"""

from __future__ import annotations

import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import pathlib
import struct
import types
import uuid
from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b
from operator import eq, itemgetter
from typing import Any

from logshelf import _hash_arrays
from logshelf._hash_arrays import freeze, remember
from logshelf._hash_types import (
    PACK_INT,
    TAG_LEN,
    Refused,
    constant,
    enc_builtin,
    enc_bytes,
    enc_code,
    enc_complex,
    enc_date,
    enc_datetime,
    enc_decimal,
    enc_enum,
    enc_float,
    enc_fraction,
    enc_function,
    enc_int,
    enc_memoryview,
    enc_method,
    enc_module,
    enc_named,
    enc_path,
    enc_range,
    enc_slice,
    enc_str,
    enc_time,
    enc_timedelta,
    enc_type,
    enc_uuid,
    enter,
    type_id,
)

__all__ = [
    "DIGEST_SIZE",
    "UnhashableArgumentError",
    "freeze",
    "hash_arguments",
    "hash_value",
    "register_hasher",
    "remember",
]

#: Length of the digests returned.
DIGEST_SIZE = 32
#: BLAKE2b personalisation: the encoding's version. Changing the encoding
#: (any tag or layout here or in _hash_types) must change it, and invalidates
#: every digest a user's cache holds.
_PERSON = b"logshelf.args.v1"

Encoder = Callable[["_Encoder", Any], None]


class UnhashableArgumentError(TypeError):
    """A memoized function was called with an argument (or something inside
    one) that has no stable content to hash: an open file, a lock, a
    generator. The message names the argument, its type and how to make it
    hashable; ``ignore=`` leaves an argument out of the key. Also a
    :class:`TypeError`."""


class _Encoder:
    """Writes the canonical stream of values into ``out``; the root encoder
    feeds its ``hasher`` as ``out`` grows (a sub-encoding for sorting has none)."""

    __slots__ = ("hasher", "out", "stack")

    def __init__(self, hasher: Any) -> None:
        self.out = bytearray()
        self.hasher = hasher
        #: id -> depth of the mutable containers being encoded (for cycles).
        self.stack: dict[int, int] = {}

    def encode(self, value: object) -> None:
        fn = _dispatch.get(type(value))
        if fn is None:
            fn = _resolve(type(value))
        fn(self, value)

    def sub(self, value: object) -> bytes:
        """The encoding of ``value`` alone (to sort dict keys and set items)."""
        out, hasher = self.out, self.hasher
        self.out, self.hasher = bytearray(), None
        try:
            self.encode(value)
            return bytes(self.out)
        finally:
            self.out, self.hasher = out, hasher


# -- containers -------------------------------------------------------------


def _enc_items(enc: _Encoder, items: Iterable[object]) -> None:
    encode = enc.encode
    for i, item in enumerate(items):
        try:
            encode(item)
        except Refused as exc:
            exc.parts.append(f"[{i}]")
            raise


def _enc_tuple(enc: _Encoder, value: tuple[object, ...]) -> None:
    enc.out += TAG_LEN(b"t", len(value))
    _enc_items(enc, value)


def _list_body(enc: _Encoder, value: list[object]) -> None:
    enc.out += TAG_LEN(b"l", len(value))
    _enc_items(enc, value)


def _key_part(key: object) -> str:
    try:
        text = repr(key)
    except Exception:
        text = f"<{type(key).__qualname__} key>"
    return f"[{text if len(text) <= 60 else text[:57] + '...'}]"


def _attr_part(name: object) -> str:
    return f".{name}" if isinstance(name, str) else _key_part(name)


def _code(enc: _Encoder, value: object) -> bytes:
    """The encoding of a dict key or set element alone; str and int inline."""
    if type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
        return TAG_LEN(b"s", len(data)) + data
    if type(value) is int and -(2**63) <= value < 2**63:
        return PACK_INT(b"i", value)
    return enc.sub(value)


def _enc_mapping(
    enc: _Encoder, items: Iterable[tuple[object, object]], part: Callable[[object], str]
) -> None:
    """Entries sorted by encoded key, so insertion order never matters. Keys
    that encode alike (distinct NaN objects, or objects equal only to
    themselves with equal state) are ordered by their value too."""
    entries = []
    for key, value in items:
        try:
            entries.append((_code(enc, key), key, value))
        except Refused as exc:
            exc.parts.append(f"<key of {part(key)}>")
            raise
    entries.sort(key=itemgetter(0))
    out = enc.out
    out += TAG_LEN(b"d", len(entries))
    codes = [entry[0] for entry in entries]
    if any(map(eq, codes, codes[1:])):
        pairs = sorted((key_code, enc.sub(value)) for key_code, _, value in entries)
        for key_code, value_code in pairs:
            out += key_code
            out += value_code
        return
    encode = enc.encode
    for key_code, key, value in entries:
        out += key_code
        try:
            encode(value)
        except Refused as exc:
            exc.parts.append(part(key))
            raise


def _dict_body(enc: _Encoder, value: dict[object, object]) -> None:
    _enc_mapping(enc, value.items(), _key_part)


def _enc_set(enc: _Encoder, value: set[object] | frozenset[object]) -> None:
    codes = []
    for item in value:
        try:
            codes.append(_code(enc, item))
        except Refused as exc:
            exc.parts.append("<set element>")
            raise
    codes.sort()
    out = enc.out
    out += TAG_LEN(b"e", len(codes))
    for code in codes:
        out += code


def _tracked(body: Encoder) -> Encoder:
    """``body`` for a mutable container, with the cycle check around it."""

    def enc_tracked(enc: _Encoder, value: Any) -> None:
        if enter(enc, value):
            body(enc, value)
            del enc.stack[id(value)]

    return enc_tracked


# -- objects ----------------------------------------------------------------------

_HEAPTYPE = 1 << 9
_IMMUTABLETYPE = 1 << 8
_POINTER = struct.calcsize("P")
_OBJECT_GETSTATE = getattr(object, "__getstate__", None)


def _slots(cls: type) -> tuple[str, ...]:
    """Attribute names of every ``__slots__`` entry of ``cls`` and its bases."""
    names: list[str] = []
    for c in cls.__mro__:
        declared = c.__dict__.get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{c.__name__.lstrip('_')}{name}"  # private names are mangled
            names.append(name)
    return tuple(names)


def _python_layout(cls: type, stop: type) -> bool:
    """True when each class of ``cls``'s MRO above ``stop`` is a plain Python
    class, so an instance holds nothing but its ``__dict__``, its slots and the
    content of ``stop``. A C base (static or immutable type) may keep state
    Python cannot see (``socket.socket`` keeps its descriptor in C): such
    objects go through ``__reduce_ex__``, which knows or refuses."""
    for c in cls.__mro__:
        if c is stop or c is object:
            continue
        if not c.__flags__ & _HEAPTYPE or c.__flags__ & _IMMUTABLETYPE:
            return False
    # A mutable heap type made by C (pybind11) is bigger than its slots explain.
    return cls.__basicsize__ <= stop.__basicsize__ + (len(_slots(cls)) + 2) * _POINTER


def _custom_reduce(cls: type) -> bool:
    """The class decides what its state is (pickling hooks): ask it."""
    return (
        cls.__reduce_ex__ is not object.__reduce_ex__  # type: ignore[comparison-overlap]
        or cls.__reduce__ is not object.__reduce__  # type: ignore[comparison-overlap]
        or getattr(cls, "__getstate__", None) is not _OBJECT_GETSTATE
    )


def _state_items(obj: object) -> list[tuple[object, object]]:
    items: list[tuple[object, object]] = list(getattr(obj, "__dict__", {}).items())
    for name in _slots(type(obj)):
        try:
            items.append((name, getattr(obj, name)))
        except AttributeError:  # an unset slot
            pass
    return items


def _enc_state(enc: _Encoder, obj: object) -> None:
    """A plain object or dataclass: its class and its attributes by name."""
    if enter(enc, obj):
        enc.out += b"o"
        enc.out += type_id(type(obj))
        _enc_mapping(enc, _state_items(obj), _attr_part)
        del enc.stack[id(obj)]


def _subclass_encoder(body: Encoder) -> Encoder:
    """A Python subclass of a builtin: class, builtin content, attributes."""

    def enc_subclass(enc: _Encoder, value: Any) -> None:
        if enter(enc, value):
            enc.out += b"S"
            enc.out += type_id(type(value))
            body(enc, value)
            _enc_mapping(enc, _state_items(value), _attr_part)
            del enc.stack[id(value)]

    return enc_subclass


def _refusal(cls: type) -> str:
    name = f"{cls.__module__}.{cls.__qualname__}"
    return (
        f"{cls.__qualname__} objects have no stable content "
        f"(register_hasher({name}, ...) to hash them)"
    )


def _enc_reduce(enc: _Encoder, obj: object) -> None:
    """Anything else, by what pickle would record: the reconstructing callable
    (by name), its arguments, state and items, all hashed structurally."""
    cls = type(obj)
    reducer = copyreg.dispatch_table.get(cls)
    try:
        reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(5)
    except Exception as exc:
        raise Refused(_refusal(cls)) from exc
    if isinstance(reduced, str):  # a global singleton, by name
        enc.out += b"G"
        enc_str(enc, str(getattr(obj, "__module__", None) or cls.__module__))
        enc_str(enc, reduced)
        return
    if not enter(enc, obj):
        return
    out = enc.out
    out += b"r"
    rebuild = reduced[0]
    if isinstance(rebuild, type):
        out += type_id(rebuild)
    elif isinstance(rebuild, (types.FunctionType, types.BuiltinFunctionType)):
        enc_named(enc, b"L", rebuild)  # a reconstructor: its name, not its code
    else:
        enc.encode(rebuild)
    parts = (*reduced[1:5], None, None, None)[:4]
    for i, part in enumerate(parts):
        if i >= 2 and part is not None:  # list and dict items arrive as iterators,
            part = list(part)  # in the object's own (meaningful) order
        try:
            enc.encode(part)
        except Refused as exc:
            exc.parts.append(f".__reduce_ex__(5)[{i + 1}]")
            raise
    del enc.stack[id(obj)]


def _substitute(cls: type, fn: Callable[[Any], object]) -> Encoder:
    def enc_substitute(enc: _Encoder, value: object) -> None:
        enc.out += b"Z"
        enc.out += type_id(cls)
        try:
            replacement = fn(value)
        except Exception as exc:
            raise Refused(f"the hasher registered for {cls.__qualname__} failed: {exc!r}") from exc
        if type(replacement) is type(value):
            raise Refused(f"the hasher registered for {cls.__qualname__} returned the same type")
        try:
            enc.encode(replacement)
        except Refused as exc:
            exc.parts.append(f"<hasher of {cls.__qualname__}>")
            raise

    return enc_substitute


# -- dispatch -----------------------------------------------------------------------

_BUILTINS: dict[type, Encoder] = {
    type(None): constant(b"N"),
    type(Ellipsis): constant(b"."),
    type(NotImplemented): constant(b"!"),
    bool: enc_int,
    int: enc_int,
    float: enc_float,
    complex: enc_complex,
    str: enc_str,
    bytes: enc_bytes,
    bytearray: enc_bytes,
    memoryview: enc_memoryview,
    tuple: _enc_tuple,
    list: _tracked(_list_body),
    dict: _tracked(_dict_body),
    set: _enc_set,
    frozenset: _enc_set,
    decimal.Decimal: enc_decimal,
    fractions.Fraction: enc_fraction,
    datetime.datetime: enc_datetime,
    datetime.date: enc_date,
    datetime.time: enc_time,
    datetime.timedelta: enc_timedelta,
    uuid.UUID: enc_uuid,
    range: enc_range,
    slice: enc_slice,
    type: enc_type,
    types.FunctionType: enc_function,
    types.MethodType: enc_method,
    types.BuiltinFunctionType: enc_builtin,
    types.ModuleType: enc_module,
    types.CodeType: enc_code,
}
#: Content encoders of the builtins a Python class may subclass (no cycle check:
#: the subclass encoder makes it).
_BASES: dict[type, Encoder] = {
    tuple: _enc_tuple,
    list: _list_body,
    dict: _dict_body,
    set: _enc_set,
    frozenset: _enc_set,
    int: enc_int,
    float: enc_float,
    complex: enc_complex,
    str: enc_str,
    bytes: enc_bytes,
    bytearray: enc_bytes,
}
_registry: dict[type, Callable[[Any], object]] = {}
#: type -> encoder; builtins, then each other type once resolved.
_dispatch: dict[type, Encoder] = dict(_BUILTINS)


def _resolve(cls: type) -> Encoder:
    """Choose (once per type) how instances of ``cls`` are encoded."""
    fn = _choose(cls)
    _dispatch[cls] = fn
    return fn


def _choose(cls: type) -> Encoder:
    for base in cls.__mro__:
        if base in _registry:
            return _substitute(base, _registry[base])
    special = _hash_arrays.resolve(cls)
    if special is not None:
        return special
    if issubclass(cls, enum.Enum):
        return enc_enum
    if issubclass(cls, type):
        return enc_type
    if issubclass(cls, pathlib.PurePath):
        return enc_path
    if dataclasses.is_dataclass(cls) and _python_layout(cls, object):
        return _enc_state
    for base, body in _BASES.items():
        if issubclass(cls, base):
            return _subclass_encoder(body) if _python_layout(cls, base) else _enc_reduce
    if _python_layout(cls, object) and not _custom_reduce(cls):
        return _enc_state
    return _enc_reduce


def register_hasher(cls: type, fn: Callable[[Any], object]) -> None:
    """Hash instances of ``cls`` (and its subclasses) as ``fn(instance)``, a
    substitute value hashed structurally in their place (tagged with ``cls``).
    For types with no stable content of their own, or a cheaper one."""
    if not isinstance(cls, type) or not callable(fn):
        raise TypeError("register_hasher(cls, fn) takes a class and a callable")
    _registry[cls] = fn
    # Forget every choice a registration may change; builtins are re-resolved
    # only if they themselves are now registered.
    _dispatch.clear()
    _dispatch.update(
        (t, f) for t, f in _BUILTINS.items() if not any(issubclass(t, r) for r in _registry)
    )


# -- the API ------------------------------------------------------------------------


def _fail(root: str, exc: Refused | RecursionError) -> UnhashableArgumentError:
    if isinstance(exc, RecursionError):
        return UnhashableArgumentError(f"cannot hash {root}: nested too deeply")
    path = root + "".join(reversed(exc.parts))
    return UnhashableArgumentError(f"cannot hash {path}: {exc.reason}")


#: The hasher every digest starts from; copying it is four times cheaper
#: than constructing one with a personalisation.
_ROOT = blake2b(digest_size=DIGEST_SIZE, person=_PERSON)


def hash_arguments(arguments: Mapping[str, object], *, typed: bool = False) -> bytes:
    """Digest (``DIGEST_SIZE`` = 32 bytes) of bound call arguments, name -> value.

    Names are sorted, so the mapping's order never matters. With ``typed`` the
    exact type of each value is part of the key (``f(1)`` and ``f(1.0)``
    differ), as with ``functools.lru_cache(typed=True)``. Raises
    :class:`UnhashableArgumentError` naming the path, rooted at
    ``args['name']``, of a value with no stable content.
    """
    # The cache-hit path: the loop of _Encoder.encode inlined, no sort of one name.
    enc = _Encoder(_ROOT.copy())
    out = enc.out  # the same object throughout (flushes clear it in place)
    out += TAG_LEN(b"\x02" if typed else b"\x01", len(arguments))
    dispatch = _dispatch
    for name in sorted(arguments) if len(arguments) > 1 else arguments:
        value = arguments[name]
        data = name.encode("utf-8", "surrogatepass")
        out += TAG_LEN(b"s", len(data))
        out += data
        if typed:
            out += type_id(type(value))
        try:
            fn = dispatch.get(type(value)) or _resolve(type(value))
            fn(enc, value)
        except (Refused, RecursionError) as exc:
            raise _fail(f"args[{name!r}]", exc) from exc.__cause__
    enc.hasher.update(out)
    return enc.hasher.digest()  # type: ignore[no-any-return]


def hash_value(value: object, *, typed: bool = False) -> bytes:
    """Digest (``DIGEST_SIZE`` bytes) of one value; errors are rooted at ``value``."""
    enc = _Encoder(_ROOT.copy())
    enc.out += b"\x04" if typed else b"\x03"
    if typed:
        enc.out += type_id(type(value))
    try:
        enc.encode(value)
    except (Refused, RecursionError) as exc:
        raise _fail("value", exc) from exc.__cause__
    enc.hasher.update(enc.out)
    return enc.hasher.digest()  # type: ignore[no-any-return]
