"""Serializers: how a value becomes the bytes of a record, and back.

Pickle, the default, stores the pickle stream itself, exactly as every store
has since the first release. Any other serializer stores an *envelope*
(``docs/format.md`` §4.1)::

    0x00, version 0x01, name length N, N bytes of ASCII name, payload

No pickle stream starts with byte 0x00 (it is no pickle opcode), so the
first byte tells a reader which it holds: a store can mix records of several
serializers, each read back with its own, and reading a pickle record costs
nothing more than before (``pickle.loads`` fails at once on an envelope, and
only then is the envelope read).

The serializer runs before any lock is taken, as pickling did: a value it
cannot encode fails with nothing written.
"""

from __future__ import annotations

import functools
import importlib
import json
import pickle
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ._restricted import RestrictedLoads
from .errors import CorruptionError, SerializerUnavailableError, UntrustedGlobalError

__all__ = [
    "ENVELOPE",
    "Loads",
    "Serializer",
    "enveloped",
    "load_enveloped",
    "make_loads",
    "register_serializer",
    "resolve",
    "split_envelope",
]

#: pickle.loads's own defaults for ``encoding``, ``errors`` and ``fix_imports``.
_DEFAULT_UNPICKLING = ("ASCII", "strict", True)


class Loads(Protocol):
    """A function from stored bytes (and the out-of-band buffers of a
    value that has them) to the object: ``pickle.loads``'s shape."""

    def __call__(self, data: bytes, /, *, buffers: Iterable[Any] | None = ...) -> Any: ...


def make_loads(
    encoding: str,
    errors: str,
    fix_imports: bool,
    trusted: frozenset[tuple[str, str]] | None = None,
) -> Loads:
    """``pickle.loads`` itself for its defaults, so the hot read path makes no
    extra call; a partial carrying the settings otherwise; with ``trusted``
    (``safe=True``), the restricted unpickler of ``_restricted``."""
    if trusted is not None:
        return RestrictedLoads(trusted, encoding, errors, fix_imports)
    if (encoding, errors, fix_imports) == _DEFAULT_UNPICKLING:
        return pickle.loads
    return functools.partial(
        pickle.loads, encoding=encoding, errors=errors, fix_imports=fix_imports
    )


#: First byte of an envelope, and its version.
ENVELOPE = 0x00
_VERSION = 0x01
_MAX_NAME = 255


@runtime_checkable
class Serializer(Protocol):
    """What ``open(..., serializer=obj)`` accepts: a stable ``name`` (recorded
    with every record it writes) and the two functions."""

    name: str

    def dumps(self, obj: Any) -> bytes:
        """The bytes of ``obj``; raise ``TypeError`` for a value it cannot encode."""
        ...

    def loads(self, data: bytes) -> Any:
        """The object ``dumps`` made ``data`` from."""
        ...


class _Json:
    """UTF-8 JSON, readable from any language. Tuples come back as lists and
    dict keys as strings, as with :mod:`json`; NaN and infinities are refused
    (JSON has none)."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        try:
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except TypeError as exc:  # "Object of type X is not JSON serializable"
            raise TypeError(f"serializer='json' cannot encode this value: {exc}") from None
        except ValueError as exc:  # NaN or an infinity
            raise TypeError(f"serializer='json' cannot encode this value: {exc}") from None
        except RecursionError:
            raise TypeError(
                "serializer='json' cannot encode a value that contains itself"
            ) from None
        return text.encode("utf-8")

    def loads(self, data: bytes) -> Any:
        return json.loads(bytes(data))


class _Raw:
    """Bytes in, the same bytes out: for data that is already serialized."""

    name = "raw"

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        raise TypeError(
            f"serializer='raw' stores bytes, bytearray or memoryview, not {type(obj).__name__}"
        )

    def loads(self, data: bytes) -> Any:
        return bytes(data)


class _PickleLike:
    """dill or cloudpickle: pickle's format with more objects (lambdas,
    closures), and exactly as unsafe to load."""

    def __init__(self, name: str, protocol: int) -> None:
        self.name = name
        self._module = _import(name)
        self._protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        return bytes(self._module.dumps(obj, protocol=self._protocol))

    def loads(self, data: bytes) -> Any:
        return self._module.loads(bytes(data))


class _Callables:
    """CPython 3.15's ``shelve.open(serializer=, deserializer=)``: two
    callables, recorded under the serializer's qualified name."""

    def __init__(
        self,
        serializer: Callable[[Any, int], bytes],
        deserializer: Callable[[bytes], Any],
        protocol: int,
    ) -> None:
        module = getattr(serializer, "__module__", None) or "?"
        qualname = getattr(serializer, "__qualname__", None) or type(serializer).__qualname__
        self.name = _check_name(f"{module}.{qualname}")
        self._serializer = serializer
        self._deserializer = deserializer
        self._protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        data = self._serializer(obj, self._protocol)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"serializer {self.name} returned {type(data).__name__}, not bytes")
        return bytes(data)

    def loads(self, data: bytes) -> Any:
        return self._deserializer(bytes(data))


_OPTIONAL = ("dill", "cloudpickle")
_registered: dict[str, Serializer] = {}


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SerializerUnavailableError(
            f"serializer {name!r} needs the {name} package: pip install {name}"
        ) from None


def _check_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or not name.isascii()
        or len(name) > _MAX_NAME
        or name == "pickle"
    ):
        raise ValueError(
            f"a serializer's name must be 1 to {_MAX_NAME} ASCII characters other than "
            f"'pickle', not {name!r}"
        )
    return name


def register_serializer(serializer: Serializer) -> None:
    """Make records written with ``serializer`` readable by every handle of
    this process, whatever serializer the handle itself writes with.

    Args:
        serializer: an object with a stable ``name`` (1 to 255 ASCII
            characters, not "pickle"), ``dumps`` and ``loads``.

    Raises:
        TypeError: ``serializer`` lacks ``name``, ``dumps`` or ``loads``.
        ValueError: its name is not a valid one (the message says why).

    Examples:
        >>> import logshelf, os, tempfile
        >>> class Upper:
        ...     name = "upper-text"
        ...     def dumps(self, obj): return obj.upper().encode()
        ...     def loads(self, data): return bytes(data).decode()
        >>> path = os.path.join(tempfile.mkdtemp(), "s.db")
        >>> with logshelf.open(path, serializer=Upper()) as db:
        ...     db["greeting"] = "hello"
        >>> logshelf.register_serializer(Upper())
        >>> with logshelf.open(path, "r") as db:  # a pickle handle reads it too
        ...     db["greeting"]
        'HELLO'
    """
    if not isinstance(serializer, Serializer):
        raise TypeError(f"a serializer has name, dumps and loads; {serializer!r} has not")
    _registered[_check_name(serializer.name)] = serializer


def resolve(serializer: object, deserializer: object, protocol: int) -> Serializer | None:
    """The serializer ``open()`` was given, checked; None for pickle.

    Raises:
        ValueError: an unknown name, or only one of CPython 3.15's
            ``serializer``/``deserializer`` callables.
        TypeError: something that is neither a name, a serializer object nor
            a callable.
        SerializerUnavailableError: "dill" or "cloudpickle" is not installed.
    """
    if deserializer is not None or (
        callable(serializer) and not isinstance(serializer, Serializer)
    ):
        if serializer is None or deserializer is None:
            raise ValueError("serializer= and deserializer= must be given together (or neither)")
        if not callable(serializer) or not callable(deserializer):
            raise TypeError("serializer= and deserializer= must both be callables")
        return _Callables(serializer, deserializer, protocol)
    if serializer is None or serializer == "pickle":
        return None
    if isinstance(serializer, str):
        found = _builtin(serializer, protocol)
        if found is None:
            choices = ("pickle", "json", "raw", *_OPTIONAL)
            raise ValueError(
                f"serializer must be one of {choices}, an object with name, dumps and "
                f"loads, or a callable with deserializer=; not {serializer!r}"
            )
        return found
    if isinstance(serializer, Serializer):
        _check_name(serializer.name)
        return serializer
    raise TypeError(
        f"serializer must be a name, an object with name, dumps and loads, or a "
        f"callable; not {type(serializer).__name__}"
    )


def _builtin(name: str, protocol: int) -> Serializer | None:
    if name == "json":
        return _Json()
    if name == "raw":
        return _Raw()
    if name in _OPTIONAL:
        return _PickleLike(name, protocol)
    return None


def enveloped(serializer: Serializer, obj: Any) -> bytes:
    """The stored bytes of ``obj`` under a serializer other than pickle."""
    name = serializer.name.encode("ascii")
    return bytes((ENVELOPE, _VERSION, len(name))) + name + serializer.dumps(obj)


def split_envelope(data: bytes) -> tuple[str, bytes]:
    """``(serializer name, payload)`` of an envelope.

    Raises:
        CorruptionError: ``data`` is not an envelope of a version this reads.
    """
    if len(data) < 3 or data[0] != ENVELOPE or data[1] != _VERSION or len(data) < 3 + data[2]:
        raise CorruptionError("a stored value is neither a pickle nor a serializer envelope")
    end = 3 + data[2]
    return bytes(data[3:end]).decode("ascii", "replace"), bytes(data[end:])


def load_enveloped(data: bytes, own: Serializer | None, protocol: int, safe: bool = False) -> Any:
    """The value of an envelope: with the handle's own serializer when the
    names match, else a built-in or registered one of that name.

    Raises:
        SerializerUnavailableError: no serializer of that name here (named).
        UntrustedGlobalError: ``safe`` and a dill or cloudpickle record.
        CorruptionError: not an envelope.
    """
    name, payload = split_envelope(data)
    if safe and name in _OPTIONAL:
        raise UntrustedGlobalError(
            f"safe=True does not load records of serializer {name!r}: loading them can "
            "run any code, as pickle can"
        )
    if own is not None and own.name == name:
        return own.loads(payload)
    found = _registered.get(name) or _builtin(name, protocol)
    if found is None:
        raise SerializerUnavailableError(
            f"this record was written with serializer {name!r}, which this process does "
            "not know: open the store with that serializer, or register_serializer() it"
        )
    return found.loads(payload)
