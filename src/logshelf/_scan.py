"""``logshelf scan``: the globals a record's pickle would import, found
without loading it.

A pickle imports a global at four opcodes: ``GLOBAL`` and ``INST`` (the
names are text lines in the stream), ``STACK_GLOBAL`` (protocol 4 and 5: the
two names are whatever strings are on top of the stack, often fetched from
the memo) and ``EXT1``/``EXT2``/``EXT4`` (a number looked up in
:mod:`copyreg`'s extension registry). This module walks the opcodes with
:mod:`pickletools`' opcode table and argument readers, executing nothing:
it keeps a model of the stack that knows which items are string constants
and what the memo holds, so a ``STACK_GLOBAL`` whose names were memoized
earlier is still resolved. Names that only exist once the pickle runs (a
string built by a call) are reported as *unresolved*, which counts as
outside the allow-list.

The walk is :func:`pickletools.genops`'s loop with three readers replaced:
genops decodes ``GLOBAL``/``INST`` names with backslash escapes the
unpickler does not apply, and refuses the Latin-1 ``STRING`` arguments of
Python 2 protocol 0 pickles, which the unpickler reads. Here the names are
decoded exactly as the unpickler decodes them.

Names are checked as ``safe=True`` checks them (``_restricted``): after
Python 2 names are mapped to Python 3 ones, against the exact allow-list
plus ``trusted=`` pairs. Records of other serializers: ``json`` and ``raw``
have no globals; ``dill`` and ``cloudpickle`` payloads are pickles and are
scanned, but ``safe=True`` refuses them whatever they hold, so they never
pass; any other serializer cannot be scanned and does not pass either.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import copyreg
import io
import os
import pickle
import pickletools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import _cache_format as cfmt
from . import _codecs
from ._buffer_format import Buffered
from ._restricted import SAFE_GLOBALS, trusted_pairs
from ._serializers import ENVELOPE, split_envelope
from .errors import CorruptionError, StoreError
from .store import open as open_store

__all__ = [
    "Global",
    "RecordScan",
    "allowed_globals",
    "pickle_globals",
    "scan_record",
    "scan_store",
]

#: Serializers whose records ``safe=True`` refuses (``_serializers.load_enveloped``).
_PICKLE_LIKE = ("dill", "cloudpickle")
#: Serializers whose records hold no pickle at all.
_NO_GLOBALS = ("json", "raw")
#: Keys read per engine.get_many() while scanning a store.
_CHUNK = 256


@dataclass(frozen=True)
class Global:
    """One global a pickle imports. ``module`` and ``qualname`` are None when
    the names cannot be known without running the pickle (``why`` says so)."""

    module: str | None
    qualname: str | None
    opcode: str
    position: int
    #: ``module:qualname`` as written in the stream, when that is a Python 2
    #: name which the unpickler maps to ``module``/``qualname``.
    pickled_as: str | None = None
    why: str = ""

    @property
    def name(self) -> str:
        """``module:qualname`` (the form ``--trusted`` takes), or ``?``."""
        if self.module is None or self.qualname is None:
            return "?"
        return f"{self.module}:{self.qualname}"

    def allowed(self, allowed: frozenset[tuple[str, str]]) -> bool:
        if self.module is None or self.qualname is None:
            return False
        return (self.module, self.qualname) in allowed


@dataclass(frozen=True)
class RecordScan:
    """What one stored value would import.

    ``format`` is ``pickle``, ``cache entry``, the name of the serializer
    of an envelope, ``envelope`` (one this version cannot read) or
    ``damaged`` (its checksums fail); ``problems`` are reasons the record
    cannot pass whatever its globals (a malformed stream, a serializer
    ``safe=True`` refuses or that cannot be scanned, damage).
    """

    format: str
    globals: tuple[Global, ...] = ()
    problems: tuple[str, ...] = ()

    def outside(self, allowed: frozenset[tuple[str, str]]) -> list[Global]:
        return [g for g in self.globals if not g.allowed(allowed)]

    def passes(self, allowed: frozenset[tuple[str, str]]) -> bool:
        """No problem and every global allowed."""
        return not self.problems and not self.outside(allowed)


def allowed_globals(trusted: Iterable[object] = ()) -> frozenset[tuple[str, str]]:
    """The allow-list of ``safe=True`` plus ``trusted`` (as ``trusted=`` takes it)."""
    return SAFE_GLOBALS | trusted_pairs(trusted)


# -- one pickle stream -------------------------------------------------------

_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_MARKOBJECT = pickletools.markobject


class _Mark:
    def __repr__(self) -> str:
        return "MARK"


_MARK = _Mark()
#: An item whose value the walk does not know (anything but a string constant).
_UNKNOWN = object()
# Python 2 str (STRING, BINSTRING, SHORT_BINSTRING) is text to the unpickler,
# unless a store is read with encoding="bytes".
_STRINGS = frozenset(
    {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
    | {"STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_GETS = frozenset(["GET", "BINGET", "LONG_BINGET"])
_PUTS = frozenset(["PUT", "BINPUT", "LONG_BINPUT"])
_EXTS = frozenset(["EXT1", "EXT2", "EXT4"])


class _Malformed(Exception):
    """The stream is not one the unpickler would run to its end."""


def _line(f: io.BytesIO, what: str) -> bytes:
    data = f.readline()
    if not data.endswith(b"\n"):
        raise _Malformed(f"the stream ends inside the {what}")
    return data[:-1]


def _name_pair(f: io.BytesIO, op: str) -> tuple[str, str]:
    """The module and name lines of GLOBAL (UTF-8) or INST (ASCII), decoded
    as the unpickler decodes them (no escapes)."""
    encoding = "ascii" if op == "INST" else "utf-8"
    names = []
    for what in ("module name", "global name"):
        raw = _line(f, f"{op} {what}")
        if not raw:
            raise _Malformed(f"{op} has an empty {what}")
        try:
            names.append(raw.decode(encoding))
        except UnicodeDecodeError:
            raise _Malformed(f"the {op} {what} is not {encoding} text") from None
    return names[0], names[1]


def _string_arg(f: io.BytesIO) -> str:
    """A protocol 0 ``STRING``: quoted, with Python 2 escapes, any bytes
    (read as Latin-1: a name that is not ASCII is on no allow-list)."""
    raw = _line(f, "STRING argument")
    if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
        raise _Malformed("a STRING argument is not quoted")
    try:
        return codecs.escape_decode(raw[1:-1])[0].decode("latin-1")
    except ValueError as exc:
        raise _Malformed(f"a STRING argument has a bad escape: {exc}") from None


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The names ``safe=True`` checks: Python 2 names mapped as the
    unpickler's ``fix_imports`` maps them (as ``_restricted`` does)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        mapped: tuple[str, str] = _compat_pickle.NAME_MAPPING[(module, name)]
        return mapped
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def _global(module: str, name: str, op: str, pos: int) -> Global:
    mapped = _python3_name(module, name)
    was = None if mapped == (module, name) else f"{module}:{name}"
    return Global(mapped[0], mapped[1], op, pos, pickled_as=was)


def _unresolved(op: str, pos: int, why: str) -> Global:
    return Global(None, None, op, pos, why=why)


class _Walk:
    """The stack and memo model of one stream: string constants are known,
    everything else is ``_UNKNOWN``; marks are ``_MARK``."""

    def __init__(self) -> None:
        self.stack: list[object] = []
        #: Where the marks are in ``stack``: nothing pops past the topmost.
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.found: list[Global] = []

    def pop(self, n: int, op: str) -> list[object]:
        floor = self.marks[-1] + 1 if self.marks else 0
        if len(self.stack) - floor < n:
            raise _Malformed(f"{op} pops more than the stack holds (stack underflow)")
        if not n:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def pop_mark(self, op: str) -> None:
        if not self.marks:
            raise _Malformed(f"{op} needs a MARK and there is none")
        del self.stack[self.marks.pop() :]

    def step(self, op: pickletools.OpcodeInfo, arg: Any, pos: int) -> None:
        name = op.name
        if name in _STRINGS:
            self.stack.append(arg if isinstance(arg, str) else _UNKNOWN)
        elif name in _GETS:
            if arg not in self.memo:
                raise _Malformed(f"{name} reads memo slot {arg}, which nothing stored")
            self.stack.append(self.memo[arg])
        elif name in _PUTS or name == "MEMOIZE":
            (value,) = self.pop(1, name)
            self.stack.append(value)
            if name == "MEMOIZE":
                arg = len(self.memo)
            elif arg < 0:
                raise _Malformed(f"{name} stores into a negative memo slot")
            self.memo[arg] = value
        elif name == "DUP":
            (value,) = self.pop(1, name)
            self.stack += [value, value]
        elif name == "STACK_GLOBAL":
            module, qualname = self.pop(2, name)
            if isinstance(module, str) and isinstance(qualname, str):
                self.found.append(_global(module, qualname, name, pos))
            else:
                self.found.append(
                    _unresolved(name, pos, "its names are computed while the pickle runs")
                )
            self.stack.append(_UNKNOWN)
        else:
            if name in ("GLOBAL", "INST"):
                self.found.append(_global(arg[0], arg[1], name, pos))
            elif name in _EXTS:
                self.found.append(_extension(name, arg, pos))
            elif name == "PROTO" and not 0 <= arg <= pickle.HIGHEST_PROTOCOL:
                raise _Malformed(f"protocol {arg} is not one this Python reads")
            self._generic(op)

    def _generic(self, op: pickletools.OpcodeInfo) -> None:
        """The stack effect pickletools documents for ``op``, values unknown."""
        before, after = op.stack_before, op.stack_after
        if _MARKOBJECT in before:
            self.pop_mark(op.name)
            self.pop(before.index(_MARKOBJECT), op.name)
        elif op.name == "POP" and self.stack and self.stack[-1] is _MARK:
            self.pop_mark(op.name)  # POP on an empty frame drops the mark
        else:
            self.pop(len(before), op.name)
        for item in after:
            if item is _MARKOBJECT:
                self.marks.append(len(self.stack))
                self.stack.append(_MARK)
            else:
                self.stack.append(_UNKNOWN)


def _extension(op: str, code: int, pos: int) -> Global:
    # The registry of this process: an unpickler looks the code up in its own.
    registry: dict[int, tuple[str, str]] = getattr(copyreg, "_inverted_registry", {})
    pair = registry.get(code)
    if pair is None:
        return _unresolved(op, pos, f"extension code {code} is not in copyreg's registry")
    return _global(pair[0], pair[1], op, pos)


def _ops(data: bytes) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int]]:
    """``(opcode, argument, position)`` up to and including STOP, as
    :func:`pickletools.genops` yields them, with the unpickler's readings of
    ``GLOBAL``, ``INST`` and ``STRING``.

    An opcode that straddles the end of a protocol 4 ``FRAME`` is malformed:
    ``pickle.loads`` reads across the end, pickle's Python unpickler refuses
    it, and the C unpickler reading from a file (as ``safe=True`` does) drops
    the bytes before the end. No pickler writes one; a stream with one could
    name one global to one reader and another to the next.
    """
    f = io.BytesIO(data)
    frame_end = overrun = -1
    while True:
        pos = f.tell()
        code = f.read(1)
        if not code:
            raise _Malformed(f"the stream ends at byte {pos}, before its STOP opcode (truncated)")
        op = _OPS.get(code)
        if op is None:
            raise _Malformed(f"byte {pos} is {code!r}, no pickle opcode")
        try:
            arg = _arg(op, f)
        except _Malformed as exc:
            raise _Malformed(f"at byte {pos} ({op.name}): {exc}") from None
        if pos < frame_end < f.tell():
            raise _Malformed(
                f"at byte {pos} ({op.name}): the opcode crosses the end of its FRAME "
                f"(byte {frame_end}); unpicklers disagree on what such a stream holds"
            )
        if op.name == "FRAME":
            frame_end = f.tell() + arg
            if frame_end > len(data) and overrun < 0:
                overrun = pos  # unpicklers stop here; the walk goes on to list globals
        yield op, arg, pos
        if op.name == "STOP":
            if overrun >= 0:
                raise _Malformed(f"the FRAME at byte {overrun} runs past the end (truncated)")
            return


def _arg(op: pickletools.OpcodeInfo, f: io.BytesIO) -> Any:
    if op.name in ("GLOBAL", "INST"):
        return _name_pair(f, op.name)
    if op.name == "STRING":
        return _string_arg(f)
    if op.arg is None:
        return None
    try:
        return op.arg.reader(f)
    except ValueError as exc:  # short reads, bad numbers, bad UTF-8
        raise _Malformed(f"bad argument: {exc}") from None


def pickle_globals(data: bytes) -> tuple[list[Global], str | None]:
    """The globals ``data`` (a pickle stream) would import, in stream order,
    and a description of what is wrong with the stream, or None.

    Nothing is imported or called. On a malformed stream the globals before
    the fault are returned (an unpickler stops there too).
    """
    walk = _Walk()
    problem = None
    try:
        for op, arg, pos in _ops(data):
            try:
                walk.step(op, arg, pos)
            except _Malformed as exc:
                raise _Malformed(f"at byte {pos} ({op.name}): {exc}") from None
    except _Malformed as exc:
        problem = f"malformed pickle: {exc}"
    return walk.found, problem


def _unique(found: Iterable[Global]) -> tuple[Global, ...]:
    """Each resolved global once (its first use); unresolved ones all."""
    seen: set[tuple[str, str]] = set()
    out = []
    for g in found:
        if g.module is not None and g.qualname is not None:
            if (g.module, g.qualname) in seen:
                continue
            seen.add((g.module, g.qualname))
        out.append(g)
    return tuple(out)


def _scan_pickle(data: bytes, format: str, problems: tuple[str, ...] = ()) -> RecordScan:
    found, problem = pickle_globals(data)
    if problem is not None:
        problems = (*problems, problem)
    return RecordScan(format, _unique(found), problems)


# -- one record ----------------------------------------------------------------


def scan_record(data: bytes) -> RecordScan:
    """What a record's stored (decompressed) bytes would import: a pickle,
    a serializer envelope (``docs/format.md`` §4.1) or a cache entry
    (``docs/format.md`` §8)."""
    if data[:1] == bytes((ENVELOPE,)):
        return _scan_envelope(data)
    if data[: len(cfmt.ENTRY_MAGIC)] == cfmt.ENTRY_MAGIC:
        # No pickle starts so: its first opcode would be LONG, whose
        # argument is a decimal number.
        return _scan_entry(data)
    return _scan_pickle(data, "pickle")


def _scan_envelope(data: bytes) -> RecordScan:
    try:
        name, payload = split_envelope(data)
    except CorruptionError as exc:
        return RecordScan("envelope", problems=(str(exc),))
    if name in _NO_GLOBALS:
        return RecordScan(name)
    if name in _PICKLE_LIKE:
        refused = f"safe=True refuses every record of serializer {name!r}"
        return _scan_pickle(payload, name, (refused,))
    return RecordScan(name, problems=(f"cannot scan: serializer {name!r}",))


def _scan_entry(data: bytes) -> RecordScan:
    try:
        entry = cfmt.decode_entry(data, "")
        payload = bytes(entry.payload)
        if entry.codec:
            payload = _codecs.decompress(entry.codec, payload, entry.rawlen)
        if entry.serializer == cfmt.SERIALIZER_PICKLE_OOB:
            payload = bytes(cfmt.decode_oob(payload)[0])
    except StoreError as exc:  # CorruptionError, CodecUnavailableError
        return RecordScan("cache entry", problems=(f"cannot read the cache entry: {exc}",))
    return _scan_pickle(payload, "cache entry")


# -- a store -------------------------------------------------------------------


def scan_store(
    path: str | os.PathLike[str],
    prefix: str = "",
    progress: Callable[[int, int], None] | None = None,
    signing_key: bytes | list[bytes] | None = None,
) -> Iterator[tuple[str, RecordScan]]:
    """``(key, scan)`` for every key of the store at ``path`` starting with
    ``prefix``, in key order. The store (or cache) is opened read-only and
    no value is unpickled. ``progress(done, total)`` is called after each
    chunk of records. A record whose checksums fail is reported as a
    problem of that key, and the scan goes on.

    Raises:
        StoreNotFoundError, FormatError, OSError: as :func:`logshelf.open` with "r".
    """
    # A signed store (``signing_key``, newest first) has its tags checked first.
    with open_store(path, "r", key=signing_key) as db:
        engine = db._engine  # the stored bytes: nothing goes through loads
        every = engine.keys()  # a snapshot (a list)
        keys = sorted(k for k in every if k.startswith(prefix))
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            values: list[bytes | Buffered | CorruptionError | None]
            try:
                # copy=False: large arrays' buffers are mapped, never read.
                values = list(engine.get_many(chunk, False))
            except CorruptionError:
                values = [_get_or_damage(engine.get, key) for key in chunk]
            for key, data in zip(chunk, values, strict=True):
                if isinstance(data, CorruptionError):
                    yield key, RecordScan("damaged", problems=(f"damaged record: {data}",))
                elif isinstance(data, Buffered):  # out-of-band buffers hold no globals
                    yield key, _scan_pickle(data.stream, "pickle with buffers")
                elif data is not None:  # deleted meanwhile
                    yield key, scan_record(data)
            if progress is not None:
                progress(start + len(chunk), len(keys))


def _get_or_damage(
    get: Callable[[str, bool], bytes | Buffered | None], key: str
) -> bytes | Buffered | CorruptionError | None:
    try:
        return get(key, False)
    except CorruptionError as exc:
        return exc
