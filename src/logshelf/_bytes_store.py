"""The bytes-store protocol: what :class:`logshelf.Shelf` needs from the layer below.

``Shelf`` (objects: pickling, writeback, the mapping API) is typed against
this protocol, not against the on-disk :class:`~logshelf._engine.Engine`, so
that another backend can sit under the same object layer. Keys are ``str``;
values are stored bytes plus the codec id and raw length that ``_codecs``
gives them, so the layer below never pickles. ``docs/design.md`` describes
the contract each method must keep (atomicity, visibility, errors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from ._buffer_format import Buffered
from ._compaction import CompactionResult, Drop
from ._records import Record

__all__ = ["BytesStore"]


class BytesStore(Protocol):
    """A store of ``str`` keys to stored values, safe for threads and processes."""

    #: Where the store lives (a directory path, or a URL for a remote backend).
    path: str
    #: The dbm flag it was opened with: "r", "w", "c" or "n".
    flag: str
    #: False for flag "r": every write raises ReadOnlyError.
    writable: bool
    #: Whether it stores values with out-of-band buffers (``_buffer_format``;
    #: ``put`` with ``BUFFERS`` in the codec). When False, the object layer
    #: keeps large arrays inside the pickle stream.
    out_of_band: bool

    @property
    def closed(self) -> bool: ...

    def get(self, key: str, copy: bool = True) -> bytes | Buffered | None:
        """The decompressed stored value of ``key``, or None if absent.
        Raises CorruptionError (naming the key) rather than return damage.
        A value put with out-of-band buffers comes back as a ``Buffered``;
        ``copy=False`` may hand out read-only views instead of copies."""

    def get_many(self, keys: Iterable[str], copy: bool = True) -> list[bytes | Buffered | None]:
        """The values of ``keys``, from one state of the store (atomic)."""

    def contains(self, key: str) -> bool: ...

    def keys(self) -> list[str]:
        """A snapshot of the live keys."""

    def __len__(self) -> int: ...

    def put(self, key: str, codec: int, data: bytes, rawlen: int) -> None:
        """Write one key; durable as the store's durability mode says when it
        returns. With ``BUFFERS`` in ``codec``, ``data`` is an ``OutOfBand``."""

    def put_many(self, records: list[Record]) -> None:
        """Write PUT records as one atomic batch (a later record of a key wins)."""

    def delete(self, key: str) -> bool:
        """Delete a key; False when it was absent (nothing written)."""

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the present keys as one atomic batch; return how many were present."""

    def transaction(self) -> AbstractContextManager[None]:
        """Writes inside become one atomic batch, isolated from other writers."""

    def sync(self) -> None: ...

    def close(self) -> None:
        """Idempotent; any other use afterwards raises StoreClosedError."""

    def stats(self) -> dict[str, int]: ...

    def verify(self, progress: Callable[[str], None] | None = None) -> list[str]: ...

    def compact(
        self, wait: bool = True, max_inputs: int | None = None, drop: Drop | None = None
    ) -> CompactionResult: ...

    def locate(self, key: str) -> tuple[str, int] | None:
        """Where the live value of ``key`` is stored (inspection only)."""
