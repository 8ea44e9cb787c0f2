"""Bulk operations of a :class:`~logshelf.Shelf`: many keys in one lock
acquisition and one atomic batch (``update``, ``set_many``, ``get_many``,
``delete_many``).

A mixin, so ``store.py`` keeps the mapping itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._bytes_store import BytesStore
from ._records import put_record
from ._serializers import Loads

__all__ = ["BulkOperations", "check_key"]


def check_key(key: object) -> str:
    """``key`` if it is a ``str``.

    Raises:
        TypeError: it is not (the message names its type).
    """
    if type(key) is str or isinstance(key, str):
        return key
    raise TypeError(f"keys must be str, not {type(key).__name__}: {key!r}")


class BulkOperations:
    """The bulk calls; a :class:`~logshelf.Shelf` provides what they use."""

    _engine: BytesStore
    _writeback: bool
    _cache: dict[str, Any]

    def _encode(self, value: Any) -> tuple[int, bytes, int]:
        raise NotImplementedError  # Shelf's

    def _load_many(self, keys: list[str], loads: Loads) -> dict[str, Any]:
        raise NotImplementedError  # Shelf's

    def _loads_for(
        self, encoding: str | None, errors: str | None, fix_imports: bool | None
    ) -> Loads:
        raise NotImplementedError  # Shelf's

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Write many keys as one atomic batch (like ``dict.update``).

        Args:
            other: a mapping, an object with ``keys()``, or ``(key, value)`` pairs.
            **kwargs: more keys and values.

        Raises:
            TypeError: a key that is not a ``str``.
            pickle.PicklingError: a value that cannot be pickled (nothing is written).
        """
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
        acquisition and one write for the whole batch.

        Args:
            items: a mapping, or ``(key, value)`` pairs (a later pair of a
                key wins).

        Raises:
            TypeError: a key that is not a ``str``.
            pickle.PicklingError: a value that cannot be pickled (nothing is written).
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        records = []
        for key, value in pairs:
            if type(key) is not str:
                check_key(key)
            records.append(put_record(key, *self._encode(value)))
        self._engine.put_many(records)
        if self._writeback:
            self._cache.update(pairs)

    def get_many(
        self,
        keys: Iterable[str],
        default: Any = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        fix_imports: bool | None = None,
    ) -> dict[str, Any]:
        """Read many keys from one state of the store (another process's
        batch is either wholly visible or not at all); absent keys map to
        ``default``. ``encoding``, ``errors`` and ``fix_imports`` override
        the handle's settings for this call, as in :meth:`get`.

        Args:
            keys: the keys to read.
            default: the value of an absent key.
            encoding: as :func:`pickle.loads`'s, for this call (None: the handle's).
            errors: as :func:`pickle.loads`'s, for this call.
            fix_imports: as :func:`pickle.loads`'s, for this call.

        Raises:
            TypeError: a key that is not a ``str``.
            CorruptionError: a value fails its checksum (naming the key).
        """
        loads = self._loads_for(encoding, errors, fix_imports)
        wanted = [check_key(k) for k in keys]
        found = self._load_many(wanted, loads)
        return {key: found.get(key, default) for key in wanted}

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete many keys as one atomic batch; return how many were present.

        Args:
            keys: the keys to delete (absent ones are skipped).

        Raises:
            TypeError: a key that is not a ``str``.
        """
        wanted = [check_key(k) for k in keys]
        count = self._engine.delete_many(wanted)
        for key in wanted:
            self._cache.pop(key, None)
        return count
