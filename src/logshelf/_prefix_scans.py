"""Prefix scans of a :class:`~logshelf.Shelf`: the "tiny database" case
(``db.items("user:")``), a filter over a snapshot of the keys.

A mixin, so ``store.py`` keeps the mapping itself; there is no index by
prefix, so a scan costs O(number of keys in the store), not O(matches).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any, overload

from ._bytes_store import BytesStore
from ._serializers import Loads

__all__ = ["PrefixScans"]

#: Keys read per engine.get_many() by a prefix scan: each chunk comes from one
#: state of the store, without holding every matching value in memory at once.
_SCAN_CHUNK = 256


class PrefixScans:
    """``keys``, ``items`` and ``values`` with an optional ``prefix``."""

    _engine: BytesStore
    _loads: Loads

    def _load_many(self, keys: list[str], loads: Loads) -> dict[str, Any]:
        raise NotImplementedError  # Shelf's

    @overload
    def keys(self, prefix: None = None) -> KeysView[str]: ...
    @overload
    def keys(self, prefix: str) -> list[str]: ...

    def keys(self, prefix: str | None = None) -> KeysView[str] | list[str]:
        """Without ``prefix``: a live view of the keys, as every mapping's.
        With one: a list (a snapshot) of the keys starting with ``prefix``,
        in no promised order; ``""`` matches every key.

        There is no index by prefix: this filters a snapshot of all keys, so
        it costs O(number of keys in the store), not O(matches).

        Raises:
            TypeError: ``prefix`` is not a str.

        Examples:
            >>> import logshelf, tempfile, os
            >>> with logshelf.open(os.path.join(tempfile.mkdtemp(), "app.db")) as db:
            ...     db.update({"user:ada": 1, "user:bob": 2, "session:9": 3})
            ...     sorted(db.keys("user:"))
            ['user:ada', 'user:bob']
        """
        if prefix is None:
            return KeysView(self)  # type: ignore[arg-type]
        return self._prefixed(prefix)

    @overload
    def items(self, prefix: None = None) -> ItemsView[str, Any]: ...
    @overload
    def items(self, prefix: str) -> Iterator[tuple[str, Any]]: ...

    def items(self, prefix: str | None = None) -> ItemsView[str, Any] | Iterator[tuple[str, Any]]:
        """Without ``prefix``: a live view of the items, as every mapping's.
        With one: an iterator of ``(key, value)`` for the keys starting with
        ``prefix``, each value read and unpickled once.

        The keys are a snapshot taken by this call (O(number of keys), as
        :meth:`keys`); values are read in chunks, each chunk from one state
        of the store, and a key deleted meanwhile is skipped. For one
        consistent view of every match, scan inside ``db.transaction()``.

        Raises:
            TypeError: ``prefix`` is not a str.

        Examples:
            >>> import logshelf, tempfile, os
            >>> with logshelf.open(os.path.join(tempfile.mkdtemp(), "app.db")) as db:
            ...     db.update({"user:ada": {"age": 36}, "session:9": {}})
            ...     dict(db.items("user:"))
            {'user:ada': {'age': 36}}
        """
        if prefix is None:
            return ItemsView(self)  # type: ignore[arg-type]
        return self._scan(self._prefixed(prefix))

    @overload
    def values(self, prefix: None = None) -> ValuesView[Any]: ...
    @overload
    def values(self, prefix: str) -> Iterator[Any]: ...

    def values(self, prefix: str | None = None) -> ValuesView[Any] | Iterator[Any]:
        """Without ``prefix``: a live view of the values. With one: an
        iterator of the values of the keys starting with ``prefix``, read as
        :meth:`items` reads them.

        Raises:
            TypeError: ``prefix`` is not a str.
        """
        if prefix is None:
            return ValuesView(self)  # type: ignore[arg-type]
        return (value for _, value in self._scan(self._prefixed(prefix)))

    def _prefixed(self, prefix: str) -> list[str]:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
        # A backend that can list by prefix itself (Redis: SCAN with MATCH) does.
        by_prefix = getattr(self._engine, "keys_with_prefix", None)
        if by_prefix is not None:
            return list(by_prefix(prefix))
        keys = self._engine.keys()  # one snapshot, under the engine's lock
        return [key for key in keys if key.startswith(prefix)]

    def _scan(self, keys: list[str]) -> Iterator[tuple[str, Any]]:
        for start in range(0, len(keys), _SCAN_CHUNK):
            yield from self._load_many(keys[start : start + _SCAN_CHUNK], self._loads).items()
