"""Shared helpers for the crash and corruption tests.

The tests locate records by parsing segment files themselves with
``logshelf._format`` (the layouts are public in ``docs/format.md``), then damage
exact bytes and check what the store makes of them.
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import logshelf
from logshelf import _format as fmt

SEGMENT_HEADER_SIZE = fmt.SEGMENT_HEADER.size
RECORD_HEADER_SIZE = fmt.RECORD_HEADER.size


@dataclass(frozen=True)
class Rec:
    """One record found in a segment file."""

    offset: int
    end: int
    header: fmt.RecordHeader
    key: bytes

    @property
    def key_str(self) -> str:
        return self.key.decode("utf-8")

    @property
    def commit(self) -> bool:
        return bool(self.header.flags & fmt.FLAG_COMMIT)


def manifest(store: Path) -> fmt.Manifest:
    path = store / fmt.MANIFEST_NAME
    return fmt.decode_manifest(path.read_bytes(), str(path))


def active_segment(store: Path) -> Path:
    """Path of the active segment named by the store's MANIFEST."""
    return store / fmt.segment_name(manifest(store).active_id)


def hint_of(segment: Path) -> Path:
    return segment.with_suffix(".hint")


def segment_salt(data: bytes, path: str = "<segment>") -> int:
    return fmt.decode_segment_header(data[:SEGMENT_HEADER_SIZE], path).salt


def parse_records(data: bytes) -> list[Rec]:
    """Every structurally valid record (hcrc checked) from offset 64 up to the
    first thing that is not one. Values are not checked."""
    salt = segment_salt(data)
    out: list[Rec] = []
    pos = SEGMENT_HEADER_SIZE
    while pos + RECORD_HEADER_SIZE <= len(data):
        header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        if fmt.check_record_header(header, pos, len(data)) is not None:
            break
        key = data[pos + RECORD_HEADER_SIZE : pos + RECORD_HEADER_SIZE + header.klen]
        if fmt.record_hcrc(data[pos : pos + RECORD_HEADER_SIZE], key, salt) != header.hcrc:
            break
        end = pos + RECORD_HEADER_SIZE + header.klen + header.vlen
        out.append(Rec(pos, end, header, bytes(key)))
        pos = end
    return out


def last_batch(records: list[Rec]) -> list[Rec]:
    """The records of the last batch (they share the last record's txid)."""
    assert records, "segment holds no records"
    txid = records[-1].header.txid
    batch = [r for r in records if r.header.txid == txid]
    assert batch[-1].commit and batch == records[-len(batch) :]
    return batch


def snapshot(store: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``store``."""
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


def restore(store: Path, files: dict[str, bytes]) -> None:
    """Make ``store`` hold exactly ``files`` (rewriting each one in place)."""
    for p in sorted(store.rglob("*"), reverse=True):
        rel = str(p.relative_to(store))
        if p.is_dir():
            if not any(name == rel or name.startswith(rel + "/") for name in files):
                shutil.rmtree(p)
        elif rel not in files:
            p.unlink()
    for rel, data in files.items():
        target = store / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def read_all(db: logshelf.Shelf) -> dict[str, Any]:
    """Every live key with its value, reading each key through the public API."""
    return {key: db[key] for key in db.keys()}  # noqa: SIM118 - keys() is what is tested


def flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    """``data`` with the byte at ``offset`` XORed with ``mask``."""
    assert mask & 0xFF and 0 <= offset < len(data)
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def with_crc_fixed(data: bytes, crc_at: int) -> bytes:
    """``data`` with the u32 at ``crc_at`` replaced by the crc32 of the bytes before it."""
    return data[:crc_at] + zlib.crc32(data[:crc_at]).to_bytes(4, "little") + data[crc_at + 4 :]


def quarantined(store: Path) -> list[bytes]:
    """Contents of the files in quarantine/ (sorted by name: oldest first)."""
    qdir = store / fmt.QUARANTINE_DIR
    if not qdir.is_dir():
        return []
    return [p.read_bytes() for p in sorted(qdir.iterdir())]
