"""Salvage: copy every intact, committed record of a damaged store into a new one.

Opening a store refuses damage it cannot explain as a torn tail (valid records
after a bad one), because guessing could return stale values. Salvage is the
explicit way out: it reads every segment, skips over damaged byte ranges by
searching for the next record whose header checksum validates, and writes the
final state of every key it could read into a fresh store, reporting exactly
what it skipped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import _format as fmt
from ._buffer_format import BUFFERS
from ._buffer_io import out_of_band
from ._engine import Engine
from ._fs import FileSystem
from ._options import make_options
from ._records import encode_key, put_record
from ._segment import Segment
from ._signing import Signer, check_keys, read_identity
from .errors import CorruptionError, FormatError, SigningError, StoreNotFoundError

__all__ = ["SalvageReport", "salvage"]


@dataclass
class SalvageReport:
    """What :func:`salvage` copied and what it could not.

    Attributes:
        keys: keys in the copy.
        records: valid records read from the source.
        skipped: ``(file, start offset, end offset, reason)`` of every byte
            range left out.
        lost_keys: keys whose latest record was damaged (or, for a signed
            store, failed its signature); they are absent from the copy.
    """

    keys: int = 0
    records: int = 0
    #: ``(file, start offset, end offset, reason)`` of every byte range skipped.
    skipped: list[tuple[str, int, int, str]] = field(default_factory=list)
    #: Keys whose latest record was damaged; they are absent from the copy.
    lost_keys: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"recovered {self.keys} keys from {self.records} records"]
        lines += [
            f"skipped {path} [{start}, {end}): {why}" for path, start, end, why in self.skipped
        ]
        if self.lost_keys:
            lines.append(
                f"lost {len(self.lost_keys)} keys whose latest value was damaged: "
                + ", ".join(repr(k) for k in self.lost_keys[:20])
            )
        return "\n".join(lines)


def _segment_plan(
    fs: FileSystem, source: str, report: SalvageReport
) -> list[tuple[int, int | None]]:
    """Segments to read, in log order, with their sealed length if known."""
    try:
        manifest = fmt.decode_manifest(
            fs.read_file(os.path.join(source, fmt.MANIFEST_NAME)), source
        )
        return [
            (sid, None if length == fmt.ACTIVE else length) for sid, length in manifest.segments
        ]
    except (OSError, CorruptionError, FormatError) as exc:
        report.skipped.append(
            (os.path.join(source, fmt.MANIFEST_NAME), 0, 0, f"unreadable MANIFEST: {exc}")
        )
    order: list[tuple[int, int]] = []
    for name in fs.listdir(source):
        if name.startswith("seg-") and name.endswith(".log") and len(name) == 24:
            try:
                segment_id = int(name[4:20], 16)
            except ValueError:
                continue
            order.append((_base_txid(fs, source, segment_id), segment_id))
    # Id order is not log order: a compaction's outputs get ids above the
    # segment that was active during its copy, but hold older records. Base
    # txids follow the log (outputs take their first input's), so sort by them.
    return [(segment_id, None) for _, segment_id in sorted(order)]


def _base_txid(fs: FileSystem, source: str, segment_id: int) -> int:
    """The base txid in a segment's header; 0 if it cannot be read (the
    segment is then reported as skipped when salvage tries to open it)."""
    try:
        seg = Segment.open(fs, source, segment_id, writable=False)
    except (OSError, CorruptionError, FormatError):
        return 0
    try:
        return seg.base_txid
    finally:
        seg.close()


def salvage(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    progress: Callable[[str], None] | None = None,
    key: bytes | Iterable[bytes] | None = None,
) -> SalvageReport:
    """Copy every valid committed record of ``source`` into a new store at ``destination``.

    Values are copied as stored (compressed or not, never unpickled), so
    salvage is safe to run on a store you do not trust. The source is only
    read. Batches stay atomic: a batch is copied whole or not at all. The
    first batch after a damaged range is copied only when the damage is
    exactly one record (by its own, unverified, lengths) that ended another
    batch; otherwise the damage may have held earlier records of that batch,
    and it is skipped and reported rather than made half visible.

    Args:
        source: the damaged store directory.
        destination: where to write the copy; must not hold a store yet.
        progress: called with one line per segment processed.
        key: the key (or keys, newest first) of a signed ``source``: every
            record's signature is checked, those that fail are skipped and
            reported, and the copy is signed with the newest key. Given for
            an unsigned ``source``, it makes a signed copy (``logshelf sign``).

    Raises:
        StoreNotFoundError: ``source`` is not a directory.
        FormatError: ``source`` holds neither a MANIFEST nor a segment file.
        FileExistsError: ``destination`` already exists.
        SigningError: ``source`` is signed and no key (or a wrong one) was given.

    Returns:
        A :class:`SalvageReport`; ``str()`` of it is a readable summary.
    """
    fs = FileSystem()
    source = os.path.abspath(os.fspath(source))
    destination = os.path.abspath(os.fspath(destination))
    if not os.path.isdir(source):
        raise StoreNotFoundError(f"no store directory at {source}")
    names = fs.listdir(source)
    if fmt.MANIFEST_NAME not in names and not any(
        n.startswith("seg-") and n.endswith(".log") for n in names
    ):
        # Nothing of a store is left (or there never was one): salvaging would
        # only make an empty store and call the directory damaged.
        raise FormatError(
            f"{source} holds neither a MANIFEST nor a segment file: not a logshelf store"
        )
    if os.path.exists(destination):
        raise FileExistsError(f"salvage destination {destination} already exists")
    keys = check_keys(key)
    signer = _source_signer(fs, source, keys)
    report = SalvageReport()
    state: dict[str, tuple[int, bytes, int] | None] = {}
    for segment_id, sealed in _segment_plan(fs, source, report):
        try:
            seg = Segment.open(fs, source, segment_id, writable=False)
        except (OSError, CorruptionError, FormatError) as exc:
            report.skipped.append(
                (os.path.join(source, fmt.segment_name(segment_id)), 0, -1, str(exc))
            )
            continue
        try:
            _salvage_segment(seg, sealed, state, report, signer)
        finally:
            seg.close()
        if progress is not None:
            progress(f"{seg.path}: {len(state)} keys so far")
    options = make_options(destination, "n", mode=0o600 if keys else 0o666)
    engine = Engine(dataclasses.replace(options, keys=keys))
    try:
        items = [put_record(k, *v) for k, v in state.items() if v is not None]
        for start in range(0, len(items), 10_000):
            engine.put_many(items[start : start + 10_000])
        engine.sync()
    finally:
        engine.close()
    report.keys = len(items)
    return report


def _salvage_segment(
    seg: Segment,
    sealed: int | None,
    state: dict[str, tuple[int, bytes, int] | None],
    report: SalvageReport,
    signer: Signer | None = None,
) -> None:
    limit = seg.size() if sealed is None else min(sealed, seg.size())
    pos = fmt.SEGMENT_HEADER.size
    last_txid = seg.base_txid
    after_gap = False
    gap = (pos, pos)
    while pos < limit:
        scan = seg.scan(pos, limit, last_txid)
        for batch in scan:
            if after_gap and not _gap_ends_a_batch(seg, gap, batch[0].txid):
                # The batch may have begun inside the damaged range before it.
                after_gap = False
                report.skipped.append(
                    (
                        seg.path,
                        batch[0].offset,
                        batch[-1].offset + batch[-1].length,
                        f"batch {batch[0].txid} of {len(batch)} records right after damage: "
                        "it may have lost records to the damage, so none are copied",
                    )
                )
                continue
            after_gap = False
            for rec in batch:
                report.records += 1
                try:
                    key = rec.key.decode("utf-8")
                    encode_key(key)
                except (UnicodeDecodeError, ValueError):
                    report.skipped.append(
                        (seg.path, rec.offset, rec.offset + rec.length, "key is not UTF-8")
                    )
                    continue
                if rec.kind == fmt.KIND_DELETE:
                    state[key] = None
                elif rec.kind == fmt.KIND_PUT:
                    try:
                        codec, data, rawlen = seg.read_value(rec.offset, rec.key)
                        if codec & BUFFERS:  # its buffers checked, mapped for the copy
                            data = out_of_band(seg.fs, seg.fd, rec.offset, data)
                        if signer is not None:  # checked; the copy signs it again
                            where = (seg.path, rec.offset)
                            codec, data = signer.unsigned(rec.key, codec, data, rawlen, where)
                        state[key] = codec, data, rawlen
                    except CorruptionError as exc:
                        state[key] = None
                        report.lost_keys.append(key)
                        report.skipped.append(
                            (seg.path, rec.offset, rec.offset + rec.length, str(exc))
                        )
        last_txid = scan.last_committed
        if scan.stop >= limit and scan.end >= limit:
            return
        found = seg.find_valid_record(scan.stop + 1, limit) if scan.stop < limit else None
        end = limit if found is None else found
        report.skipped.append((seg.path, scan.end, end, scan.problem or "uncommitted batch"))
        if found is None:
            return
        pos = found
        after_gap = True
        gap = (scan.stop, found)
        last_txid = seg.base_txid  # txids after damage are only known to exceed the base


def _source_signer(fs: FileSystem, source: str, keys: tuple[bytes, ...]) -> Signer | None:
    """The signer that checks ``source``'s records (None: it is unsigned)."""
    found = read_identity(fs, source)
    if found is None:
        return None
    if not keys:
        raise SigningError(f"{source} is a signed store: salvage it with key= (its key)")
    return Signer(keys, found[0], found[1], source)


def _gap_ends_a_batch(seg: Segment, gap: tuple[int, int], txid: int) -> bool:
    """Is the damaged range ``gap`` one record that ended a batch other than
    ``txid``'s, judging by its own header (whose checksum failed)?

    A bit flip in one record's header leaves its lengths, flags and txid
    mostly intact: if they describe exactly the damaged range, say COMMIT and
    name another txid, the batch after it began after it. Torn or zeroed
    pages, or garbage, almost never pass all three.
    """
    start, end = gap
    head = seg.fs.pread(seg.fd, fmt.RECORD_HEADER.size, start)
    if len(head) < fmt.RECORD_HEADER.size:
        return False
    header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack(head))
    return (
        start + fmt.RECORD_HEADER.size + header.klen + header.vlen == end
        and bool(header.flags & fmt.FLAG_COMMIT)
        and header.txid != txid
    )
