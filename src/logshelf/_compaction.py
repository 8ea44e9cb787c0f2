"""Compaction: rewrite the live records of sealed segments into new ones.

An append-only log keeps every overwritten and deleted value until something
rewrites it. Compaction does that while other handles and processes keep
reading and writing (``docs/compaction.md`` has the whole protocol):

1. *Plan*, under the writer lock (a few milliseconds): seal the active
   segment if it holds records, reserve segment ids for the output files in
   the same MANIFEST switch, snapshot the index. The sealed segments at that
   moment, a prefix of the MANIFEST, are the inputs.
2. *Copy*, holding no writer lock: read every record the snapshot points at
   in an input (both checksums verified: compaction is also a scrub), and
   append it to output segments; write their hints; fsync files and
   directory. Tombstones are simply not copied: the inputs are a prefix of
   the log, so there is nothing older for them to hide.
3. *Switch*, under the writer lock: check that the MANIFEST still starts
   with the inputs, then roll the active segment over with a MANIFEST that
   lists the outputs in place of the inputs. That MANIFEST replacement is the
   commit point; the SEAL it writes into the active segment is what makes
   every other handle follow the switch on its next access (``_remap``:
   the keys that moved are remapped in steps, no index is reloaded). Then
   delete the inputs.

A crash before the switch leaves unreferenced output files (deleted by the
next writer that opens the store); a crash after it leaves unreferenced input
files. Either way the MANIFEST names one complete segment set.

A record that was overwritten or deleted while the copy ran is copied
anyway. That is harmless: its newer version or its tombstone lives in a
segment after the inputs and still wins on replay; the next compaction drops
the copy.
"""

from __future__ import annotations

import os
import time
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from . import _format as fmt
from ._buffer_format import ALIGN, OutOfBand, pack_parts
from ._buffer_io import out_of_band
from ._fs import FileSystem
from ._index import OFFSET_MASK, SLOT_SHIFT
from ._options import Options
from ._pieces import pieces
from ._records import Record, new_record
from ._segment import Segment
from ._segment_set import remove_segments, write_manifest
from ._signing import Signer
from ._view import HEADER_END, View
from ._writer import Writer
from .errors import CorruptionError, LockTimeoutError, TamperedError

__all__ = ["CompactionResult", "Job", "Plan", "copy", "listed", "plan", "run", "switch"]

# Output records are gathered and appended in pieces of about this size.
_WRITE_CHUNK = 1 << 20


@dataclass(frozen=True)
class CompactionResult:
    """What one call of :meth:`logshelf.Shelf.compact` did.

    Attributes:
        compacted: True when a new segment set was committed.
        reason: why nothing was committed (empty when ``compacted``).
        segments_before: segments in the store before compaction.
        segments_after: segments afterwards.
        bytes_before: bytes of all segment files before compaction.
        bytes_after: bytes of all segment files afterwards.
        records_copied: live records rewritten.
        bytes_copied: bytes of live records rewritten (headers and keys included).
        seconds: wall-clock time the call took.
    """

    compacted: bool
    reason: str = ""
    segments_before: int = 0
    segments_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    records_copied: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0


@dataclass
class Plan:
    """What the planning step decided, under the writer lock."""

    #: ``(segment id, sealed length)`` of the inputs: a prefix of the MANIFEST.
    inputs: tuple[tuple[int, int], ...]
    #: Ids reserved for output segments, in order.
    output_ids: list[int]
    #: A copy of the index when the inputs were chosen: packed entries (slot <<
    #: 40 | offset); those with a slot of ``input_slots`` point into inputs.
    index: dict[str, int]
    #: The view's slot of each input, in order (``View.slot_ids``).
    input_slots: list[int] = field(default_factory=list)
    #: Read-only handles on the inputs, owned by the compaction.
    segments: list[Segment] = field(default_factory=list)
    segments_before: int = 0
    bytes_before: int = 0

    def close(self) -> None:
        """Close the input handles (the compaction's own descriptors)."""
        for seg in self.segments:
            seg.close()
        self.segments = []


class Drop(Protocol):
    """Which live records of the inputs a compaction leaves out (eviction)."""

    def select(self, keys: list[str], sizes: list[int], read: Callable[[str], bytes]) -> None:
        """Called once before copying, with the live keys of the inputs in
        log order, the bytes each record takes (up to the next live one) and
        ``read(key)``, the stored value of a key (checksums verified)."""

    def __call__(self, key: str, value: bytes, codec: int) -> bool:
        """True: leave this record out."""


@dataclass
class _Output:
    """The output segment being filled."""

    segment: Segment
    size: int = HEADER_END
    last_txid: int = 0
    keys: list[str] = field(default_factory=list)
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    buffer: list[bytes] = field(default_factory=list)
    buffered: int = 0


_T = TypeVar("_T")


class LockedStep(Protocol):
    """The engine's way to run a step under its mutex and the writer lock
    (after catching up outside the lock); ``deadline`` bounds the waits."""

    def __call__(self, deadline: float | None, step: Callable[[Writer], _T]) -> _T: ...


@dataclass(frozen=True)
class Job:
    """What a compaction needs of the handle that runs it."""

    options: Options
    view: View
    writer: Writer
    signer: Signer | None
    locked_step: LockedStep


def run(
    job: Job,
    wait: bool,
    timeout: float | None,
    max_inputs: int | None,
    drop: Drop | None,
    stats: Callable[[], dict[str, int]],
) -> CompactionResult:
    """Plan, copy and switch (the module docstring), holding the store's
    compaction lock throughout; ``timeout`` bounds the waits for it and for
    the writer lock before the plan (0: give up at once). Outputs of a
    compaction that did not commit are removed; the inputs of one that did
    are deleted."""
    started = time.perf_counter()
    fs, path, view = job.options.fs, job.options.path, job.view
    deadline = None if timeout is None else time.monotonic() + timeout
    lock = job.writer.compaction_lock()
    if not lock.acquire(timeout):
        if wait:
            raise LockTimeoutError(
                f"timed out after {timeout} s waiting for another compaction of {path}"
            )
        return CompactionResult(False, "another compaction of this store is running")
    created: list[str] = []
    planned: Plan | None = None
    try:
        planned = job.locked_step(deadline, lambda w: plan(view, w, max_inputs))
        if planned is None:
            return CompactionResult(False, "there are no sealed segments to compact")
        the_plan = planned
        entries, copied, copied_bytes = copy(job.options, the_plan, created, drop, job.signer)
        try:
            switched = job.locked_step(None, lambda w: switch(view, w, the_plan, entries))
        except BaseException:
            if entries and listed(fs, path, entries[0][0]):
                # The MANIFEST switch happened before the failure (a failed
                # directory sync): the outputs are the store now.
                created = []
            raise
        if not switched:
            return CompactionResult(False, "the store was reset while compacting")
        created = []  # committed: the outputs are the store now
        remove_segments(fs, path, [segment_id for segment_id, _ in the_plan.inputs])
        after = stats()
        return CompactionResult(
            True,
            segments_before=the_plan.segments_before,
            segments_after=after["segments"],
            bytes_before=the_plan.bytes_before,
            bytes_after=after["segment_bytes"],
            records_copied=copied,
            bytes_copied=copied_bytes,
            seconds=time.perf_counter() - started,
        )
    finally:
        if planned is not None:
            planned.close()
        for created_path in created:
            try:
                fs.unlink(created_path)
            except OSError:
                pass  # left for the garbage collection at the next writer's open
        lock.release()


def plan(view: View, writer: Writer, max_inputs: int | None = None) -> Plan | None:
    """Step 1, under the writer lock (the engine holds it, after
    ``Writer.prepare``): seal the active segment if it holds records,
    reserve ids for the outputs, snapshot the live entries of the sealed
    segments. None when nothing is sealed.

    ``max_inputs`` limits the inputs to the oldest segments (the cache's
    eviction rewrites only those); when at least that many are sealed, the
    active segment is left as it is."""
    view.refresh_manifest()
    # The snapshot below must name only slots the view holds (rare: a
    # failed write of this handle left a switch's remap pending).
    view.finish_remap()
    sealed = len(view.segments) - 1
    if max_inputs is not None and 0 < max_inputs <= sealed:
        # Only a prefix: no segment needs sealing. Replacing a prefix keeps
        # every later segment in place, and dropping a prefix's tombstones is
        # safe: no older segment holds a record they could hide.
        _reserve_ids(view, writer, max_inputs + 1)
        return _plan_inputs(view, max_inputs, max_inputs + 1)
    # Next-fit packing of a subset of the records needs no more segments
    # than the inputs used; one spare for mixed sizes.
    reserve = len(view.segments) + 1
    if view.end > HEADER_END:
        writer.roll(drop_old=False, reserve_ids=reserve)
    elif len(view.segments) > 1:
        # The active segment is empty: leave it be, just reserve ids.
        _reserve_ids(view, writer, reserve)
    else:
        return None
    # Every segment but the (new) active one is an input.
    return _plan_inputs(view, len(view.segments) - 1, reserve)


def _reserve_ids(view: View, writer: Writer, count: int) -> None:
    """Allocate ``count`` segment ids in a new MANIFEST, segments unchanged."""
    m = view.manifest
    manifest = fmt.Manifest(m.generation + 1, m.next_segment_id + count, m.segments)
    write_manifest(writer.fs, writer.path, manifest, writer.options.mode)
    view.manifest = manifest
    error = writer.sync_manifest_rename()
    if error is not None:
        raise error


def _plan_inputs(view: View, count: int, reserve: int) -> Plan:
    """The plan compacting the first ``count`` segments into ids reserved last."""
    manifest = view.manifest
    inputs = manifest.segments[:count]
    result = Plan(
        inputs,
        list(range(manifest.next_segment_id - reserve, manifest.next_segment_id)),
        # Copying the dict is C-speed; filtering and sorting it happen in
        # the copy step, outside the lock.
        view.index.copy(),
        view.slot_ids[:count],
        segments_before=len(view.segments),
        bytes_before=sum(seg.size() for seg in view.segments),
    )
    try:
        for segment_id, length in inputs:
            seg = Segment.open(view.fs, view.path, segment_id, writable=False)
            seg.readable_end = length
            result.segments.append(seg)
    except BaseException:
        result.close()
        raise
    return result


def switch(view: View, writer: Writer, plan: Plan, entries: tuple[tuple[int, int], ...]) -> bool:
    """Step 3, under the writer lock: commit the outputs in place of the
    inputs. False if the MANIFEST no longer starts with the inputs (flag "n"
    reset the store meanwhile)."""
    view.refresh_manifest()
    count = len(plan.inputs)
    if view.manifest.segments[:count] != plan.inputs:
        return False
    writer.roll(drop_old=False, replace=(count, entries))
    return True


def copy(
    options: Options,
    plan: Plan,
    created: list[str],
    drop: Drop | None = None,
    signer: Signer | None = None,
) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """Step 2, holding no lock: write the live records of the inputs into
    output segments.

    ``drop``, when given, first sees every live key with its size, then is
    asked about each record; those it answers True for are left out, which
    deletes them from the store when the outputs replace the inputs (the
    cache evicts so).

    Returns the MANIFEST entries of the outputs, the number of records and
    the bytes copied. Every file made is listed in ``created`` as soon as it
    exists, so the caller can delete them if anything fails.
    """
    fs, max_segment_size = options.fs, options.max_segment_size
    target = _Target(fs, options.path, options.mode, created)
    ids = list(plan.output_ids)
    # Entries renumbered by input position (slots need not be in MANIFEST
    # order after an earlier switch), the others left out.
    position = {slot: i << SLOT_SHIFT for i, slot in enumerate(plan.input_slots)}
    live = {
        key: position[loc >> SLOT_SHIFT] | (loc & OFFSET_MASK)
        for key, loc in plan.index.items()
        if loc >> SLOT_SHIFT in position
    }
    # Log order: by input, then offset. A packed entry sorts exactly that way.
    keys = sorted(live, key=live.__getitem__)
    if drop is not None:

        def read(key: str) -> bytes:
            loc = live[key]
            return plan.segments[loc >> SLOT_SHIFT].read_raw(loc & OFFSET_MASK)[6]

        drop.select(keys, _sizes(keys, live, plan), read)
    outputs: list[_Output] = []
    current: _Output | None = None
    # Records keep their batches (one txid, COMMIT on the last record), but
    # batches are renumbered densely from the first input's base txid: the
    # new txids never exceed the old ones, so the segments after the inputs
    # still carry larger ones, and no gap can exceed the scan's window.
    txid = plan.segments[0].base_txid
    old_txid = -1
    batch: list[Record] = []
    batch_keys: list[str] = []
    batch_size = 0
    copied_bytes = 0
    dropped: list[str] = []

    for key in keys:
        loc = live[key]
        seg = plan.segments[loc >> SLOT_SHIFT]
        offset = loc & OFFSET_MASK
        try:
            kind, record_txid, flags, rawlen, vcrc, kb, value = seg.read_raw(offset)
            if flags & fmt.FLAG_BUFFERS and kind == fmt.KIND_PUT:
                # Its buffers, checked, copied from maps when the batch is written.
                value = out_of_band(seg.fs, seg.fd, offset, value)
            codec = fmt.codec_of(flags)
            if signer is not None and kind == fmt.KIND_PUT:
                # Checked, and signed again with the newest key.
                codec, value = signer.resign(kb, codec, value, rawlen, (seg.path, offset))
                vcrc = zlib.crc32(value)
        except TamperedError as exc:  # its message names the key
            raise TamperedError(f"compaction stopped, the store is unchanged: {exc}") from None
        except CorruptionError as exc:
            raise CorruptionError(
                f"compaction stopped, the store is unchanged: key {key!r}: {exc}"
            ) from None
        if kind != fmt.KIND_PUT or kb != key.encode("utf-8"):
            raise CorruptionError(
                f"compaction stopped, the store is unchanged: the index entry of key "
                f"{key!r} points at another record ({seg.path}, offset {offset})"
            )
        if drop is not None and drop(key, value, codec):
            dropped.append(key)
            continue
        size = fmt.RECORD_HEADER.size + len(kb) + len(value)
        if isinstance(value, OutOfBand):
            size += ALIGN + value.span  # a bound: the pad is chosen when packed
        if record_txid != old_txid:
            # A new input batch: write out the previous one, and start a new
            # output first if this one is full (a batch never spans segments).
            if batch:
                assert current is not None
                copied_bytes += _add_batch(current, txid, batch, batch_keys, batch_size)
                batch, batch_keys, batch_size = [], [], 0
            old_txid = record_txid
            txid += 1
            full = current is not None and current.size + size > max_segment_size
            if current is None or (full and current.size > HEADER_END and ids):
                if current is not None:
                    _finish(target, current)
                current = _start(target, ids, txid - 1, outputs)
        batch.append(new_record((fmt.KIND_PUT, key, kb, codec, value, vcrc, rawlen)))
        batch_keys.append(key)
        batch_size += size
    if batch:
        assert current is not None
        copied_bytes += _add_batch(current, txid, batch, batch_keys, batch_size)
    if current is not None:
        # Its hint lists the keys left out as deleted: a no-op where the
        # outputs stand, at the front of the log, but it tells the handles
        # that follow the switch to drop them at once (``_remap``).
        _finish(target, current, dropped)
    if outputs:
        fs.sync_directory(options.path)
    entries = tuple((out.segment.id, out.size) for out in outputs)
    copied = sum(len(out.keys) for out in outputs)
    return entries, copied, copied_bytes


def _sizes(keys: list[str], live: dict[str, int], plan: Plan) -> list[int]:
    """Bytes from each live record to the next live one (or its segment's
    end): the record's size, plus dead records behind it."""
    sizes = []
    for i, key in enumerate(keys):
        loc = live[key]
        following = live[keys[i + 1]] if i + 1 < len(keys) else -1
        if following >> SLOT_SHIFT == loc >> SLOT_SHIFT:
            sizes.append(following - loc)
        else:
            sizes.append(plan.inputs[loc >> SLOT_SHIFT][1] - (loc & OFFSET_MASK))
    return sizes


@dataclass(frozen=True)
class _Target:
    """Where outputs go, and the list of files made so far."""

    fs: FileSystem
    directory: str
    mode: int
    created: list[str]


def _add_batch(
    out: _Output,
    txid: int,
    batch: list[Record],
    keys: list[str],
    size: int,
) -> int:
    """Append one batch to an output's buffer and record where its keys went;
    return its size (``size`` is exact unless values have buffers, whose
    alignment pads are only known here: then it is a bound)."""
    try:
        data, offsets = fmt.pack_batch(out.segment.salt, txid, batch, out.size)
    except fmt.HasBuffers:
        # Written at once, part by part: buffers are never joined in memory.
        parts, offsets, size = pack_parts(out.segment.salt, txid, batch, out.size)
        _flush(out)
        for piece in pieces(parts):
            out.segment.append(piece)
        _placed(out, keys, offsets, size, txid)
        return size
    assert len(data) == size
    _placed(out, keys, offsets, size, txid)
    out.buffer.append(data)
    out.buffered += size
    if out.buffered >= _WRITE_CHUNK:
        _flush(out)
    return size


def _placed(out: _Output, keys: list[str], offsets: list[int], size: int, txid: int) -> None:
    out.keys += keys
    out.offsets.extend(offsets)
    out.size += size
    out.last_txid = txid


def _start(target: _Target, ids: list[int], base_txid: int, outputs: list[_Output]) -> _Output:
    """Create the next output segment with a reserved id."""
    # The reservation is generous (one more than the inputs); if a store mixes
    # segment sizes so that it runs out anyway, the last output just grows
    # past max_segment_size, which is a target, not a limit.
    segment_id = ids.pop(0)
    target.created.append(os.path.join(target.directory, fmt.segment_name(segment_id)))
    target.created.append(os.path.join(target.directory, fmt.hint_name(segment_id)))
    seg = Segment.create(target.fs, target.directory, segment_id, base_txid, target.mode)
    out = _Output(seg)
    out.last_txid = base_txid
    outputs.append(out)
    return out


def _flush(out: _Output) -> None:
    if out.buffer:
        out.segment.append(b"".join(out.buffer))
        out.buffer = []
        out.buffered = 0


def _finish(target: _Target, out: _Output, dropped: list[str] | None = None) -> None:
    """Write out, fsync and close an output segment, then write its hint
    (listing ``dropped`` as deleted)."""
    try:
        _flush(out)
        out.segment.sync()
        hint = out.segment.make_hint(out.size, out.last_txid, out.keys, out.offsets, dropped or [])
    finally:
        out.segment.close()
    target.fs.write_file_atomic(
        os.path.join(target.directory, fmt.hint_name(out.segment.id)),
        fmt.encode_hint(hint),
        sync_dir=False,
        mode=target.mode,
    )


def listed(fs: FileSystem, directory: str, segment_id: int) -> bool:
    """Does the MANIFEST on disk name ``segment_id``? (True if it cannot be read:
    when in doubt, keep the files; garbage collection removes them later.)"""
    try:
        manifest = fmt.decode_manifest(
            fs.read_file(os.path.join(directory, fmt.MANIFEST_NAME)), directory
        )
    except (OSError, ValueError, CorruptionError):
        return True
    return any(number == segment_id for number, _ in manifest.segments)
