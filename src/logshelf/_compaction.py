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
   every other handle reload on its next access. Then delete the inputs.

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
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _format as fmt
from ._segment import Segment
from .errors import CorruptionError, LockTimeoutError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["CompactionResult", "Plan", "compact"]

_HEADER_END = fmt.SEGMENT_HEADER.size
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
    #: 40 | offset); those with a slot below ``len(inputs)`` point into inputs.
    index: dict[str, int]
    #: Read-only handles on the inputs, owned by the compaction.
    segments: list[Segment] = field(default_factory=list)
    segments_before: int = 0
    bytes_before: int = 0


@dataclass
class _Output:
    """The output segment being filled."""

    segment: Segment
    size: int = _HEADER_END
    last_txid: int = 0
    keys: list[str] = field(default_factory=list)
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    buffer: list[bytes] = field(default_factory=list)
    buffered: int = 0


def compact(engine: Engine, *, wait: bool) -> CompactionResult:
    """Compact ``engine``'s store; see the module docstring.

    ``wait=False`` returns at once (``compacted=False``) when another
    compaction holds the compaction lock; ``wait=True`` waits for it, at most
    the engine's lock timeout.

    Raises:
        CorruptionError: an input record failed its checksum; nothing changed
            (``logshelf.salvage`` copies what is intact).
        LockTimeoutError: a lock was not acquired within the lock timeout.
        OSError: a file operation failed; nothing changed.
    """
    started = time.perf_counter()
    lock = engine.compaction_lock()
    timeout = engine.lock_timeout if wait else 0.0
    if not lock.acquire(timeout):
        if wait:
            raise LockTimeoutError(
                f"timed out after {timeout} s waiting for another compaction of {engine.path}"
            )
        return CompactionResult(False, "another compaction of this store is running")
    created: list[str] = []
    plan: Plan | None = None
    try:
        plan = engine.compaction_plan()
        if plan is None:
            return CompactionResult(False, "there are no sealed segments to compact")
        entries, copied, copied_bytes = _copy(engine, plan, created)
        try:
            switched = engine.compaction_switch(plan, entries)
        except BaseException:
            if entries and _listed(engine, entries[0][0]):
                # The MANIFEST switch happened before the failure (a failed
                # directory sync): the outputs are the store now.
                created = []
            raise
        if not switched:
            return CompactionResult(False, "the store was reset while compacting")
        created = []  # committed: the outputs are the store now
        _remove_segments(engine, [segment_id for segment_id, _ in plan.inputs])
        after = engine.stats()
        return CompactionResult(
            True,
            segments_before=plan.segments_before,
            segments_after=after["segments"],
            bytes_before=plan.bytes_before,
            bytes_after=after["segment_bytes"],
            records_copied=copied,
            bytes_copied=copied_bytes,
            seconds=time.perf_counter() - started,
        )
    finally:
        if plan is not None:
            for seg in plan.segments:
                seg.close()
        for path in created:
            try:
                engine.fs.unlink(path)
            except OSError:
                pass  # left for the garbage collection at the next writer's open
        lock.release()


def _copy(
    engine: Engine, plan: Plan, created: list[str]
) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """Write the live records of the inputs into output segments.

    Returns the MANIFEST entries of the outputs, the number of records and
    the bytes copied. Every file made is listed in ``created`` as soon as it
    exists, so the caller can delete them if anything fails.
    """
    directory = engine.path
    limit = engine.max_segment_size
    ids = list(plan.output_ids)
    limit_entry = len(plan.inputs) << 40
    live = {key: loc for key, loc in plan.index.items() if loc < limit_entry}
    # Log order: by input, then offset. A packed entry sorts exactly that way.
    keys = sorted(live, key=live.__getitem__)
    outputs: list[_Output] = []
    current: _Output | None = None
    # Records keep their batches (one txid, COMMIT on the last record), but
    # batches are renumbered densely from the first input's base txid: the
    # new txids never exceed the old ones, so the segments after the inputs
    # still carry larger ones, and no gap can exceed the scan's window.
    txid = plan.segments[0].base_txid
    old_txid = -1
    batch: list[tuple[int, str, bytes, int, bytes, int, int]] = []
    batch_keys: list[str] = []
    batch_size = 0
    copied_bytes = 0

    for key in keys:
        loc = live[key]
        seg = plan.segments[loc >> 40]
        offset = loc & ((1 << 40) - 1)
        try:
            kind, record_txid, flags, rawlen, vcrc, kb, value = seg.read_raw(offset)
        except CorruptionError as exc:
            raise CorruptionError(
                f"compaction stopped, the store is unchanged: key {key!r}: {exc}"
            ) from None
        if kind != fmt.KIND_PUT or kb != key.encode("utf-8"):
            raise CorruptionError(
                f"compaction stopped, the store is unchanged: the index entry of key "
                f"{key!r} points at another record ({seg.path}, offset {offset})"
            )
        if record_txid != old_txid:
            # A new input batch: write out the previous one, and start a new
            # output first if this one is full (a batch never spans segments).
            if batch:
                assert current is not None
                copied_bytes += _add_batch(current, txid, batch, batch_keys, batch_size)
                batch, batch_keys, batch_size = [], [], 0
            old_txid = record_txid
            txid += 1
            size = fmt.RECORD_HEADER.size + len(kb) + len(value)
            full = current is not None and current.size + size > limit
            if current is None or (full and current.size > _HEADER_END and ids):
                if current is not None:
                    _finish(engine, current)
                current = _start(engine, directory, ids, txid - 1, created, outputs)
        batch.append((fmt.KIND_PUT, key, bytes(kb), fmt.codec_of(flags), value, vcrc, rawlen))
        batch_keys.append(key)
        batch_size += fmt.RECORD_HEADER.size + len(kb) + len(value)
    if batch:
        assert current is not None
        copied_bytes += _add_batch(current, txid, batch, batch_keys, batch_size)
    if current is not None:
        _finish(engine, current)
    if outputs:
        engine.fs.sync_directory(directory)
    entries = tuple((out.segment.id, out.size) for out in outputs)
    return entries, len(keys), copied_bytes


def _add_batch(
    out: _Output,
    txid: int,
    batch: list[tuple[int, str, bytes, int, bytes, int, int]],
    keys: list[str],
    size: int,
) -> int:
    """Append one batch to an output's buffer and record where its keys went."""
    data, offsets = fmt.pack_batch(out.segment.salt, txid, batch, out.size)
    assert len(data) == size
    out.keys += keys
    out.offsets.extend(offsets)
    out.size += size
    out.last_txid = txid
    out.buffer.append(data)
    out.buffered += size
    if out.buffered >= _WRITE_CHUNK:
        _flush(out)
    return size


def _start(
    engine: Engine,
    directory: str,
    ids: list[int],
    base_txid: int,
    created: list[str],
    outputs: list[_Output],
) -> _Output:
    """Create the next output segment with a reserved id."""
    # The reservation is generous (one more than the inputs); if a store mixes
    # segment sizes so that it runs out anyway, the last output just grows
    # past max_segment_size, which is a target, not a limit.
    segment_id = ids.pop(0)
    path = os.path.join(directory, fmt.segment_name(segment_id))
    created.append(path)
    created.append(os.path.join(directory, fmt.hint_name(segment_id)))
    out = _Output(Segment.create(engine.fs, directory, segment_id, base_txid))
    out.last_txid = base_txid
    outputs.append(out)
    return out


def _flush(out: _Output) -> None:
    if out.buffer:
        out.segment.append(b"".join(out.buffer))
        out.buffer = []
        out.buffered = 0


def _finish(engine: Engine, out: _Output) -> None:
    """Write out, fsync and close an output segment, then write its hint."""
    try:
        _flush(out)
        out.segment.sync()
        hint = out.segment.make_hint(out.size, out.last_txid, out.keys, out.offsets, [])
    finally:
        out.segment.close()
    engine.fs.write_file_atomic(
        os.path.join(engine.path, fmt.hint_name(out.segment.id)),
        fmt.encode_hint(hint),
        sync_dir=False,
    )


def _listed(engine: Engine, segment_id: int) -> bool:
    """Does the MANIFEST on disk name ``segment_id``? (True if it cannot be read:
    when in doubt, keep the files; garbage collection removes them later.)"""
    try:
        manifest = fmt.decode_manifest(
            engine.fs.read_file(os.path.join(engine.path, fmt.MANIFEST_NAME)), engine.path
        )
    except (OSError, ValueError, CorruptionError):
        return True
    return any(listed == segment_id for listed, _ in manifest.segments)


def _remove_segments(engine: Engine, segment_ids: list[int]) -> None:
    """Delete replaced segments and their hints. Handles that still read them
    keep their open descriptors (POSIX); anything left behind by an error is
    unreferenced and goes at the next writer's garbage collection."""
    for segment_id in segment_ids:
        for name in (fmt.segment_name(segment_id), fmt.hint_name(segment_id)):
            try:
                engine.fs.unlink(os.path.join(engine.path, name))
            except OSError:
                pass
