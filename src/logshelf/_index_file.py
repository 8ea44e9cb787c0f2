"""The store's INDEX file in use: open a view from it, materialize the full
index when an operation needs it, and write the file at close.

Opening from the INDEX file (``_table_format``, docs/format.md §5.1) maps it
and scans only the active segment's tail beyond what it covers: O(1) in the
number of keys, where building the dict from every hint is O(n) (about
0.6 s at a million keys). The view's index is then a :class:`LazyIndex`.
Anything the file does not match (another MANIFEST generation, another
active segment, records that moved, a failed checksum, a missing file) makes
the open fall back to :meth:`View.load_latest`, as before: the file is only
ever an optimisation.
"""

from __future__ import annotations

import os
import zlib
from array import array

from . import _format as fmt
from . import _index
from ._lazy_index import LazyIndex
from ._segment import Segment, check_tail
from ._table_format import HEADER_SIZE, TABLE_NAME, DamagedTable, Table, TableInfo, encode_table
from ._view import HEADER_END, View
from .errors import CorruptionError

__all__ = [
    "MIN_KEYS",
    "TAIL_LIMIT",
    "load_full",
    "load_index",
    "open_view",
    "remove_stale_table",
    "write_table_at_close",
]

#: At close, a handle whose index is still lazy leaves the INDEX file (and the
#: active segment's hint) as they are while the tail after the file's covered
#: length stays below this: the next open parses that tail (a few ms per
#: 256 KiB of small records) rather than this close rebuilding the whole
#: table, which costs as much as the load the file saves (about 1 s at a
#: million keys).
TAIL_LIMIT = 256 * 1024
#: Stores with fewer live keys get no INDEX file: loading their hints takes
#: well under a millisecond, less than mapping and checking the file, and
#: the file's write and fsync at every close would cost more than it saves.
MIN_KEYS = 1000
_SLOT_SHIFT = _index.SLOT_SHIFT
_OFFSET_MASK = _index.OFFSET_MASK


def _manifest_crc(manifest: fmt.Manifest) -> int:
    # The encoding is deterministic: equal manifests give equal bytes.
    return zlib.crc32(fmt.encode_manifest(manifest))


def read_table(view: View) -> Table | None:
    """The store's INDEX file, mapped and decoded, or None."""
    path = os.path.join(view.path, TABLE_NAME)
    fs = view.fs
    try:
        fd = fs.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = fs.size(fd)
        if size < HEADER_SIZE:
            return None
        # Replaced only by rename, never truncated in place: the map stays valid.
        data = fs.map(fd, size)
    except (OSError, ValueError):
        return None
    finally:
        fs.close(fd)
    table = Table.decode(data)
    if table is None:
        data.close()
    return table


def _describes(table: Table, manifest: fmt.Manifest) -> bool:
    info = table.info
    return (
        info.generation == manifest.generation
        and info.segment_id == manifest.active_id
        and info.manifest_crc == _manifest_crc(manifest)
        and 0 < len(manifest.segments) <= _index.MAX_SEGMENTS
        and len(info.sealed_checks) == len(manifest.segments) - 1
    )


def open_view(view: View, manifest: fmt.Manifest) -> None:
    """Load the fresh ``view`` from ``manifest``: from the INDEX file when it
    describes exactly this state of the store, else as always."""
    if not view.segments:
        table = read_table(view)
        if table is not None:
            if _describes(table, manifest) and _open_lazily(view, manifest, table):
                return
            _release(table)
    view.load_latest(manifest)


def _release(table: Table) -> None:
    data = table.data
    if hasattr(data, "close"):
        data.close()


def _open_lazily(view: View, manifest: fmt.Manifest, table: Table) -> bool:
    """Set ``view`` up from ``table``; False (the view untouched) when
    anything does not match, or fails: the caller then loads as before."""
    info = table.info
    segments: list[Segment] = []
    try:
        last = len(manifest.segments) - 1
        for slot, (segment_id, sealed_len) in enumerate(manifest.segments):
            seg = Segment.open(view.fs, view.path, segment_id, view.writable and slot == last)
            segments.append(seg)
            if slot < last:
                check = info.sealed_checks[slot]
                if sealed_len > seg.size() or not _matches(seg, sealed_len, *check):
                    return _give_up(segments)
                seg.readable_end = sealed_len
        active = segments[-1]
        size = active.size()
        if (
            active.salt != info.salt
            or not HEADER_END <= info.covered <= size
            or not _matches(active, info.covered, info.check_offset, info.check_hcrc)
        ):
            return _give_up(segments)
        index = LazyIndex(
            table,
            lambda loc: _key_at(segments, loc),
            lambda: _load(view, index, last, info.covered),
            lambda full, deleted: _adopt(view, full, deleted),
            table_slots=last + 1,
            load_slot=lambda seg, slot: _load_slot(view, seg, slot, info.covered),
        )
        deletes: set[str] = set()
        end, txid, max_txid, seal_next, unsynced = info.covered, info.txid, info.max_txid, 0, 0
        if size > info.covered:
            # The tail written after the file, exactly as a load scans an
            # active segment after its hint (torn tail, damage, synced mark).
            active.readable_end = info.covered
            floor = view.floor_of(active)
            scan = active.scan(info.covered, size, txid, floor=floor)
            seal_next = _index.apply_scan(scan, last, index, deletes)
            if (scan.stop < size or scan.end < size) and check_tail(active, scan, size, floor):
                unsynced = size - scan.end
            end, txid = scan.end, max(txid, scan.last_committed)
            max_txid = max(max_txid, scan.max_txid)
    except Exception:
        # Whatever it is (a missing segment, damage), the ordinary load
        # meets it too and reports it as it always has.
        return _give_up(segments)
    view.manifest = manifest
    view.segments = segments
    view.renumber()  # slots in MANIFEST order: the table's numbering
    view.index = index
    view.reset_active(end)
    view.active_deletes = deletes
    view.txid = txid
    view.max_txid = max(view.max_txid, max_txid, txid)
    view.seal_next = seal_next
    view.unsynced_tail = unsynced
    return True


def _give_up(segments: list[Segment]) -> bool:
    for seg in segments:
        seg.close()
    return False


def _matches(seg: Segment, covered: int, check_offset: int, check_hcrc: int) -> bool:
    """Do the records of ``seg`` sit where the table says? The check of a
    hint (``Segment.hint_matches``) on the table's check record of ``seg``."""
    if not check_offset:
        return True
    offsets = array("Q", [check_offset])
    hint = fmt.Hint(seg.id, seg.salt, covered, 0, [], offsets, [], 0, check_offset, check_hcrc)
    return seg.hint_matches(hint)


def _key_at(segments: list[Segment], loc: int) -> bytes:
    """The key of the record at index entry ``loc``, header checked.
    ``segments`` is the view's list (a rollover appends to it in place; a
    reload replaces it, and the view's index with it)."""
    slot, offset = loc >> _SLOT_SHIFT, loc & _OFFSET_MASK
    if slot >= len(segments) or not HEADER_END <= offset < segments[slot].readable_end:
        raise DamagedTable(f"the INDEX file names no record at slot {slot}, offset {offset}")
    return segments[slot].read_key(offset)


def _load(
    view: View, index: LazyIndex, table_last: int, covered: int
) -> tuple[dict[str, int], set[str]]:
    if view.index is not index:
        # Still opening (a damaged table met while parsing the tail): the
        # caller gives up on the table and loads as before.
        raise CorruptionError("the INDEX file is damaged")
    if index.switched:
        # After a compaction switch the table's segments are not the view's:
        # load everything the view holds, as far as it has parsed.
        return load_full(view, len(view.segments) - 1, view.end)
    return load_full(view, table_last, covered)


def _load_slot(
    view: View, seg: Segment, slot: int, covered: int
) -> tuple[dict[str, int], set[str]]:
    """The entries (under ``slot``) and deleted keys of ``seg``, the table's
    active segment, up to ``covered``, as a load finds them (for its hint,
    once sealed)."""
    index: dict[str, int] = {}
    deletes: set[str] = set()
    loaded, _ = view._load_segment(seg, slot, covered, 0, index, deletes)
    if loaded.end != covered:
        raise CorruptionError(f"{seg.path}: damaged record at offset {loaded.end}")
    return index, deletes


def load_index(view: View) -> None:
    """Materialize a lazy index now: it reads only files, so it is done
    before taking the writer lock for work that needs every key."""
    if isinstance(view.index, LazyIndex):
        view.index.everything()


def load_full(view: View, table_last: int, covered: int) -> tuple[dict[str, int], set[str]]:
    """The full index of ``view`` as the INDEX file described it, and the
    keys deleted in its active segment, built as a load does (hints, then
    scans): the segments up to ``table_last`` (the table's active one, read
    up to ``covered``). Everything after that the view parsed went into the
    lazy index itself, which the caller merges in: no scan of what this
    handle wrote since opening. The view is not changed (but for
    ``hinted_end``)."""
    index: dict[str, int] = {}
    deletes: set[str] = set()
    txid = 0
    last = len(view.segments) - 1
    for position, seg in enumerate(view.segments[: table_last + 1]):
        # The table's active segment, sealed since, is loaded whole (its
        # hint then covers it): the records past ``covered`` are in the
        # lazy index too, and applying them twice changes nothing.
        limit = covered if position == last else view.manifest.segments[position][1]
        active = deletes if position == last else None
        # Entries name slots, which a compaction switch leaves apart from
        # MANIFEST positions (View.slot_ids).
        slot = view.slot_ids[position]
        loaded, _ = view._load_segment(seg, slot, limit, txid, index, active)
        if loaded.end != limit:
            # Damage the lazy view never parsed (it trusted the INDEX file,
            # as a load trusts an intact hint): refuse, as a load without
            # the file would have refused to open the store.
            raise CorruptionError(f"{seg.path}: damaged record at offset {loaded.end}")
        txid = loaded.txid
        if position == last and loaded.hinted == view.end:
            view.hinted_end = view.end  # its hint covers it: none to write at close
    return index, deletes


def _adopt(view: View, full: dict[str, int], deleted: set[str]) -> None:
    """Make ``full`` the view's index. The active segment's deleted keys are
    those the load found or this view applied since opening, less the live
    ones (a key deleted and put again since)."""
    # In place: a batch or scan being applied holds the set (the probe that
    # materializes can come in the middle of it, _lazy_index._PROBE_SHARE).
    kept = {key for key in deleted | view.active_deletes if key not in full}
    view.active_deletes.clear()
    view.active_deletes.update(kept)
    view.index = full


def _on_disk(view: View) -> tuple[TableInfo | None, bool]:
    """The header of the INDEX file (None without a valid one), and whether
    it describes the view's MANIFEST."""
    table = read_table(view)
    if table is None:
        return None, False
    fits = _describes(table, view.manifest)
    _release(table)
    return table.info, fits


def write_table_at_close(view: View, mode: int) -> bool:
    """At close, after the active segment was synced: should the active hint
    and INDEX file be written? Writes the INDEX file when the view has its
    full index and the file on disk does not cover it; returns False when a
    lazy view leaves both as they are. A table that covers all but less than
    :data:`TAIL_LIMIT` of the active segment is left as it is either way, and
    so is one of a newer MANIFEST (this view missed a compaction meanwhile)."""
    if view.seal_next:
        return True
    info, fits = _on_disk(view)
    newer = info is not None and info.generation > view.manifest.generation
    # A file newer than this view (covering more) counts as fresh: never undo it.
    fresh = newer or (fits and info is not None and view.end - info.covered < TAIL_LIMIT)
    index = view.index
    if isinstance(index, LazyIndex) and index.full is None:
        if fresh:
            return False
        index.everything()
    if not fresh:
        if len(view.index) >= MIN_KEYS:
            write_table(view, mode)
        elif info is not None:
            _remove(view)  # the store shrank: loading it is cheaper now
    return True


def write_table(view: View, mode: int) -> bool:
    """Write the INDEX file from the view's full index (best effort)."""
    index = view.index
    if isinstance(index, LazyIndex):
        index = index.everything()
    if view.pending_remap is not None and not view.pending_remap.indexed:
        return False  # entries in retired slots: the next close writes it
    seg = view.active
    # The table numbers segments by MANIFEST position; the view's slots
    # stay fixed across compaction switches (_remap), so translate.
    position = {slot: i for i, slot in enumerate(view.slot_ids)}
    locations = []
    # The largest offset of an entry in each segment: its check record.
    largest = [0] * len(view.segments)
    for loc in index.values():
        slot, offset = position[loc >> _SLOT_SHIFT], loc & _OFFSET_MASK
        locations.append((slot << _SLOT_SHIFT) | offset)
        if offset > largest[slot]:
            largest[slot] = offset
    try:
        checks = []
        for segment, offset in zip(view.segments, largest, strict=True):
            hint = segment.make_hint(0, 0, [], array("Q", [offset] if offset else []), [])
            checks.append((hint.check_offset, hint.check_hcrc))
        info = TableInfo(
            seg.salt,
            view.manifest.generation,
            seg.id,
            view.end,
            view.txid,
            view.max_txid,
            len(index),
            *checks[-1],
            _manifest_crc(view.manifest),
            tuple(checks[:-1]),
        )
        data = encode_table(info, [key.encode("utf-8") for key in index], locations)
        view.fs.write_file_atomic(
            os.path.join(view.path, TABLE_NAME), data, sync_dir=False, mode=mode
        )
    except OSError:
        return False  # the next open loads as before
    return True


def remove_stale_table(view: View) -> None:
    """Delete an INDEX file that describes no longer the MANIFEST (under the
    writer and compaction locks, like the rest of garbage collection)."""
    table = read_table(view)
    path = os.path.join(view.path, TABLE_NAME)
    if table is not None:
        stale = table.info.generation < view.manifest.generation
        _release(table)
    else:
        stale = os.path.exists(path)  # damaged, or of another version
    if stale:
        _remove(view)


def _remove(view: View) -> None:
    try:
        view.fs.unlink(os.path.join(view.path, TABLE_NAME))
    except OSError:
        pass
