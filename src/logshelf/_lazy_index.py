"""An index that starts empty and asks the store's INDEX file for each key.

A handle opened from a valid INDEX file (``_index_file``) gets a
:class:`LazyIndex` as ``View.index`` instead of a dict built from every
hint. It *is* a dict: ``index[key]`` on a key already looked up, and every
store into it, stay C-level dict operations, so the hot paths keep their
speed. A key not in the dict is probed in the mapped table
(``__missing__``) and remembered. Deletes of keys the dict may not hold go
to a set of removed keys, which later probes honour.

An operation that needs every key (``len``, iteration, ``keys()``,
compaction, ...) *materializes* the index: the index is loaded as it always
was (hints and scans, as far as the table covered), what this object was
told since (its dict and its removed keys) is laid over it, and
``View.index`` becomes that plain dict; this object answers from it from
then on. The overlay makes the result right whenever it happens, even in
the middle of applying a batch. A table that turns out damaged is replaced
by such a load (without the overlay, which stays in this object's dict), so
that nothing changes under a caller that holds this object.

Probing stops after 1/32 of the table's keys: the index is then
materialized, and reads go back to plain dict lookups.

Two things that used to need every key no longer do. The hint of a segment
this handle seals (``hint_parts``) takes this object's entries, plus, for
the segment that was active when the table was written, that segment's
part of the table loaded alone. And a compaction switch that retires every
segment the table names (``can_follow``) is followed in steps like any
other (``_remap``): each key the outputs hold and this object was not told
about is one the table holds in an input, so it is moved without a probe;
when the remap is done the entries this object gathered are the index
(``start_settling``, ``settle``), copied a chunk at a time.

``dict.get`` and ``in`` do not call ``__missing__``: both are overridden
here, so every caller that treats the index as a Mapping stays correct.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._table_format import DamagedTable, Table
from .errors import CorruptionError

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from ._segment import Segment

__all__ = ["BaseEntries", "LazyIndex"]

#: Loads the entries of one segment as the table saw it (up to its covered
#: length) and the keys deleted in it, for a hint (``hint_parts``).
BaseEntries = Callable[[], tuple[dict[str, int], set[str]]]

_MISSING: Any = object()
# A probe (hash, block check, the record's key read back) costs ~5 us, about
# what loading 8-10 keys of the full index costs. After probing 1/32 of the
# keys a handle materializes: a handle that reads every key then pays ~1.3x
# the eager load in all (the probes plus the load), one that reads a few
# keys pays for those few. Never fewer than this many probes first:
_MIN_PROBES = 1024
_PROBE_SHARE = 32


class LazyIndex(dict[str, int]):
    """``View.index`` of a handle opened from an INDEX file.

    Args:
        table: the decoded, mapped table (valid for the view's MANIFEST).
        key_at: the key bytes of the record at an index entry; raises
            :class:`DamagedTable` for an entry no table could hold (past a
            segment's end), :class:`CorruptionError` for a damaged record.
        load: the full index and the active segment's deleted keys as a
            load finds them, up to where the view has parsed; the view is
            left as it is.
        adopt: makes a full index (and deleted keys) the view's.
    """

    __hash__ = None

    def __init__(
        self,
        table: Table,
        key_at: Callable[[int], bytes],
        load: Callable[[], tuple[dict[str, int], set[str]]],
        adopt: Callable[[dict[str, int], set[str]], None],
        table_slots: int = 0,
        load_slot: Callable[[Segment, int], tuple[dict[str, int], set[str]]] | None = None,
    ) -> None:
        super().__init__()
        self.table: Table | None = table
        #: The slots the table's entries name (0 to table_slots - 1).
        self.table_slots = table_slots
        self._load_slot = load_slot
        #: Set when this view adopted a compaction switch (``_remap``): a
        #: load then follows the view's segments, not the table's.
        self.switched = False
        self._key_at = key_at
        self._load = load
        self._adopt = adopt
        #: A load that replaced a damaged table (then ``table`` is None).
        self._loaded: tuple[dict[str, int], set[str]] | None = None
        #: Keys removed since opening: a probe must not find them in the table.
        self._gone: set[str] = set()
        #: The view's full index once materialized; this object then forwards to it.
        self.full: dict[str, int] | None = None
        #: While a remap settles (``start_settling``): the index being built,
        #: which every store and removal also reaches.
        self._settling: dict[str, int] | None = None
        #: Probes left before materializing (see _PROBE_SHARE).
        self._probes_left = max(_MIN_PROBES, table.info.entries // _PROBE_SHARE)

    # -- probing ---------------------------------------------------------------

    def _probe(self, key: str) -> int | None:
        """The location of ``key`` from the table (or from the load that
        replaced a damaged one), None when absent; remembered in the dict."""
        if self.full is not None:
            return self.full.get(key)
        if key in self._gone or not isinstance(key, str) or self._settling is not None:
            return None  # (settling: every live key of the table is in the dict)
        if self._loaded is not None:
            found = self._loaded[0].get(key)
            if found is not None:
                dict.__setitem__(self, key, found)
            return found
        if self.table is None:
            return None  # released: the view is closed
        self._probes_left -= 1
        if self._probes_left < 0:
            # A handle that reads this many keys reads on: load them all once
            # (today's load) rather than probe each (_PROBE_SHARE).
            return self.everything().get(key)
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            return None  # such a key can never be stored
        found = damaged = None
        try:
            for loc in self.table.candidates(raw):
                try:
                    holder = self._key_at(loc)
                except CorruptionError:
                    # A damaged record: most likely this key's (the read then
                    # reports it, naming the key, as the full index would),
                    # unless another candidate holds the key.
                    damaged = loc if damaged is None else damaged
                    continue
                if holder == raw:  # else another key with the same crc32
                    found = loc
                    break
        except DamagedTable:
            # Never trust the table further: from now on, probe today's load.
            self._loaded = self._load()
            self.release()
            return self._probe(key)
        if found is None:
            found = damaged
        if found is not None:
            dict.__setitem__(self, key, found)
        return found

    def __missing__(self, key: str) -> int:
        loc = self._probe(key)
        if loc is None:
            raise KeyError(key)
        return loc

    def get(self, key: str, default: Any = None) -> Any:
        if self.full is not None:
            return self.full.get(key, default)
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if self.full is not None:
            return key in self.full
        if dict.__contains__(self, key):
            return True
        return isinstance(key, str) and self._probe(key) is not None

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        if self.full is None:
            loc = self.get(key)  # a probe, which may materialize
        if self.full is not None:
            if default is _MISSING:
                return self.full.pop(key)
            return self.full.pop(key, default)
        if loc is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        dict.pop(self, key, None)
        self._gone.add(key)
        if self._settling is not None:
            self._settling.pop(key, None)
        return loc

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    # A probe may materialize while a caller holds this object (applying a
    # batch or a scan binds the index once): stores then go to the full
    # index, which is the view's from then on.

    def __setitem__(self, key: str, value: int) -> None:
        if self.full is not None:
            self.full[key] = value
        else:
            dict.__setitem__(self, key, value)
            if self._settling is not None:
                self._settling[key] = value

    def update(self, *args: Any, **kwargs: int) -> None:
        if self.full is not None:
            self.full.update(*args, **kwargs)
        else:
            dict.update(self, *args, **kwargs)
            if self._settling is not None:
                self._settling.update(*args, **kwargs)

    # -- everything else needs every key ----------------------------------------

    def release(self) -> None:
        """Close the map of the INDEX file (the view is closing)."""
        table, self.table = self.table, None
        if table is not None:
            close = getattr(table.data, "close", None)
            if close is not None:
                close()

    def everything(self) -> dict[str, int]:
        """The full index, which becomes the view's (materialized on first use)."""
        if self.full is None:
            full, deleted = self._loaded if self._loaded is not None else self._load()
            # What happened since, even past where the view has parsed (a
            # batch being applied): puts and probed entries, then removals.
            full.update(dict.items(self))
            for key in self._gone:
                if not dict.__contains__(self, key):
                    full.pop(key, None)
            self._become(full, deleted)
            return full
        return self.full

    def _become(self, full: dict[str, int], deleted: set[str]) -> None:
        """Make ``full`` the view's index and forward to it from now on."""
        self._adopt(full, deleted)
        self.full = full
        self._loaded = None
        self.release()
        dict.clear(self)
        self._gone = set()

    def hint_parts(
        self, seg: Segment, slot: int
    ) -> tuple[dict[str, int], frozenset[str], BaseEntries | None] | None:
        """For the hint of ``seg`` (slot ``slot``), sealed now, without loading
        everything: this object's entries (copied), the keys removed since
        opening, and how to load the table's entries in the segment (None
        when it holds none: a segment begun after opening). None when only
        a whole load will do (the table's part is unknown)."""
        if self.full is not None or self._loaded is not None:
            return None
        own, gone = dict(dict.items(self)), frozenset(self._gone)
        if slot >= self.table_slots:
            return own, gone, None
        if slot == self.table_slots - 1 and self._load_slot is not None:
            return own, gone, functools.partial(self._load_slot, seg, slot)
        return None

    # -- following a compaction switch (_remap) -----------------------------------

    def can_follow(self, retired: set[int]) -> bool:
        """Can the view follow a switch that retires ``retired`` in steps,
        without loading? Yes when every slot the table names is among them:
        each entry of the table then points into an input, so a key this
        object was not told about since opening (neither in its dict nor
        removed) is exactly one whose entry the remap moves. Otherwise an
        untouched table entry might be newer than the output's copy."""
        return self.table_slots > 0 and all(s in retired for s in range(self.table_slots))

    def entry_before_switch(self, key: str, retired_entry: int) -> int | None:
        """The remap's ``get``: ``key``'s entry without probing. A key held
        by the table only is answered ``retired_entry`` (any entry in a
        retired slot, see :meth:`can_follow`); a removed key, None."""
        if self.full is not None:
            return self.full.get(key)
        found: int | None = dict.get(self, key)
        if found is None and key not in self._gone:
            return retired_entry
        return found

    def own_keys(self) -> list[str]:
        """The keys the remap's last sweep looks at: every key once
        materialized, else those of this object's dict (the table's entries
        all point into retired slots, and :meth:`settle` drops them)."""
        return list(self.full if self.full is not None else dict.keys(self))

    def start_settling(self) -> None:
        """The remap of a switch :meth:`can_follow` allowed has moved every
        key the outputs hold: every live key is in this object's dict now.
        The table is not probed again, and the dict is copied into the full
        index a chunk at a time (:meth:`settle_keys`; copying 100,000 keys
        of a dict subclass at once takes 10 ms), with every store and
        removal from now on made in both."""
        if self.full is None and self._settling is None:
            self._settling = {}

    def settle_keys(self, keys: list[str]) -> None:
        """Copy the entries of ``keys`` (some of the dict's keys when
        settling began) into the index being built."""
        settling = self._settling
        if self.full is None and settling is not None:
            get = dict.get
            for key in keys:
                loc = get(self, key)
                if loc is not None:
                    settling[key] = loc

    def settle(self) -> None:
        """Every key the dict held when settling began was copied: the built
        index becomes the view's, with no load, and the table is let go."""
        settling, self._settling = self._settling, None
        if self.full is None and settling is not None:
            self._become(settling, set())

    def __bool__(self) -> bool:
        if self.full is None:
            if dict.__len__(self):
                return True
            if self.table is not None and not self.table.info.entries:
                return False  # keys come from the table or the dict: none
            if not self._gone:
                return True  # the table's keys, none removed
        return bool(self.everything())

    def __len__(self) -> int:
        return len(self.everything())

    def __iter__(self) -> Iterator[str]:
        return iter(self.everything())

    def __reversed__(self) -> Iterator[str]:
        return reversed(self.everything())

    def keys(self) -> dict_keys[str, int]:
        return self.everything().keys()

    def values(self) -> dict_values[str, int]:
        return self.everything().values()

    def items(self) -> dict_items[str, int]:
        return self.everything().items()

    def copy(self) -> dict[str, int]:
        return self.everything().copy()

    def __eq__(self, other: object) -> bool:
        return self.everything() == other

    def __ne__(self, other: object) -> bool:
        return self.everything() != other

    def __repr__(self) -> str:
        if self.full is None:
            return f"<LazyIndex: {dict.__len__(self)} keys looked up>"
        return repr(self.full)

    def popitem(self) -> tuple[str, int]:
        return self.everything().popitem()

    def setdefault(self, key: str, default: int = 0) -> int:
        return self.everything().setdefault(key, default)

    def clear(self) -> None:
        self.everything().clear()
