"""How a :class:`~logshelf.Shelf` turns what its bytes store returns into
values: pickle (with the handle's or one call's Python 2 options, or the
restricted unpickler of ``safe=True``), a value with out-of-band buffers
(a ``Buffered``), or another serializer's envelope.

A mixin, so ``store.py`` keeps the mapping itself; ``Shelf.__getitem__``
inlines the common case and comes here when pickle refuses the bytes.
"""

from __future__ import annotations

import pickle
from typing import Any

from ._buffer_format import Buffered
from ._options import check_unpickling
from ._serializers import Loads, Serializer, load_enveloped, make_loads

__all__ = ["Decoding"]

_UnpicklingError = pickle.UnpicklingError


class Decoding:
    """The decoding half of a :class:`~logshelf.Shelf`."""

    _serializer: Serializer | None
    _protocol: int
    _trusted: frozenset[tuple[str, str]] | None
    _loads: Loads
    _unpickling: tuple[str, str, bool]

    def _enveloped(self, data: bytes | Buffered, exc: Exception, loads: Loads) -> Any:
        """A value that pickle refused: one with out-of-band buffers (a
        ``Buffered``, which pickle refuses before reading anything), an
        envelope of another serializer (read with it), or else the error,
        re-raised."""
        if type(data) is Buffered:
            return loads(data.stream, buffers=data.buffers)
        if not isinstance(data, bytes) or data[:1] != b"\x00":
            raise exc
        return load_enveloped(data, self._serializer, self._protocol, self._trusted is not None)

    def _decode(self, loads: Loads, data: bytes | Buffered) -> Any:
        try:
            return loads(data)  # type: ignore[arg-type]  # see __getitem__
        except (_UnpicklingError, TypeError) as exc:
            return self._enveloped(data, exc, loads)

    def _loads_for(
        self, encoding: str | None, errors: str | None, fix_imports: bool | None
    ) -> Loads:
        """The loads function for one call's overrides (None: the handle's setting)."""
        if encoding is None and errors is None and fix_imports is None:
            return self._loads
        default_encoding, default_errors, default_fix = self._unpickling
        encoding = default_encoding if encoding is None else encoding
        errors = default_errors if errors is None else errors
        fix_imports = default_fix if fix_imports is None else fix_imports
        check_unpickling(encoding, errors, fix_imports)
        return make_loads(encoding, errors, fix_imports, self._trusted)
