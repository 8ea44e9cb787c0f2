"""Fuzzing damaged stores: templates, mutations, the oracle and the worker.

``test_fuzz.py`` drives this module. The pieces:

* **Templates**: four small stores built through the public API (several
  segments, hints, every codec, deletes, a transaction, non-ASCII keys, a
  compaction's output, a crash leftover, segments large enough to be read
  through the memory map), with deterministic salts so that every byte is the
  same on every run and a seed replays exactly.
* **The model**: the committed history of a template, read back from its
  bytes by this module (not by the engine) and checked against what was
  written: every batch, and the full mapping after each one.
* **Mutations**: seeded and reproducible. Bit flips, byte overwrites, zeroed
  and garbage ranges, damaged header fields, truncation, appended garbage,
  removed and duplicated ranges, deleted files, another store's hint; on
  segments (sealed and active), hints and the MANIFEST. Separately, length
  fields set to huge values with their checksums recomputed (forged).
* **The oracle**: from the template bytes and the damaged bytes alone it
  derives which states the store may show (the full state, or a prefix of the
  active segment's batches when the damage can pass for a torn tail), which
  keys may raise ``CorruptionError`` (those whose live record was damaged),
  and whether the store must refuse to open or must be entirely unaffected.
  When a range of the active segment was cut out or duplicated (records
  moved), it scans the damaged bytes itself by the rules of docs/format.md
  section 3.4: the store must show exactly what that scan commits, or raise
  when a valid record follows the point where the scan stops (unless that
  point is at or after the synced mark of section 6.2); only records
  the scan passed over as bit rot (or could not match to the template) may
  fail to read; and verify() must report what a scan without the hint finds.
* **Sabotage** (``_inject``): reads, scans, the torn-tail decision, the index
  and verify() broken on purpose, to show that the harness reports each.
* **The workers**: subprocesses (``python -m <this module> worker JOB``) run
  cases under an address-space limit and watch their own peak virtual memory,
  so that a length field driving a huge allocation is a failure even on a
  machine where the allocation would succeed. A case gets ``alarm()`` seconds;
  after a case that hangs, crashes its worker or allocates too much (the peak
  never comes down), the parent starts a fresh worker for the rest.

Replay one case: ``PYTHONPATH=tests python -m crash._fuzz replay TEMPLATE SEED``.
"""

from __future__ import annotations

import bz2
import contextlib
import itertools
import json
import logging
import os
import pickle
import random
import re
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import lz4.block  # type: ignore[import-untyped]

import logshelf
from logshelf import _format as fmt

from ._helpers import snapshot

# --------------------------------------------------------------------------
# Limits

#: A case may raise the worker's peak virtual memory by at most this much. The
#: largest template holds about 650 KB, so anything larger means a length
#: field made the store allocate what no file holds.
ALLOCATION_LIMIT = 64 << 20
#: Address space the worker may use beyond what it has after start-up. An
#: allocation below it succeeds (untouched pages cost nothing) and shows up in
#: the peak; one above it fails with MemoryError, which is a failure too.
ADDRESS_SPACE_HEADROOM = 3 << 30
#: Keys that were never written: reading them must always say "absent".
NEVER_WRITTEN = ("never-written", "ключ-которого-нет", "")
#: The key a writer adds after a damaged open, to check that writing goes on.
PROBE_KEY = "fuzz-probe-✓"
PROBE_VALUE = {"probe": True, "blob": b"\x00\xff" * 8}
#: This module's importable name (``__name__`` is "__main__" when it runs as the worker).
MODULE = __spec__.name if __spec__ is not None else __name__
#: Fixed creation time written into template segment headers (informational
#: field; fixed so that template bytes are identical on every run).
_FIXED_CREATED_NS = 1_700_000_000_000_000_000

HEADER = fmt.SEGMENT_HEADER.size  # 64
RECORD = fmt.RECORD_HEADER.size  # 32

# Offsets of the fields of a record header (docs/format.md, section 3.2).
RECORD_FIELDS: dict[str, tuple[int, int]] = {
    "hcrc": (0, 4),
    "vcrc": (4, 4),
    "txid": (8, 8),
    "vlen": (16, 8),
    "rawlen": (24, 4),
    "klen": (28, 2),
    "kind": (30, 1),
    "flags": (31, 1),
}
# Offsets of the fields of a hint header (section 5).
HINT_FIELDS: dict[str, tuple[int, int]] = {
    "version": (8, 2),
    "salt": (12, 4),
    "segment_id": (16, 8),
    "covered": (24, 8),
    "max_txid": (32, 8),
    "payload_length": (40, 8),
    "payload_crc": (48, 4),
}
HINT_HEADER_SIZE = fmt.HINT_HEADER.size + 4  # 56: the header and its crc
# Offsets of the fields of the MANIFEST head (section 2).
MANIFEST_FIELDS: dict[str, tuple[int, int]] = {
    "version": (8, 2),
    "count": (12, 4),
    "generation": (16, 8),
    "next_id": (24, 8),
}

# Values a damaged length field is set to: the extremes of each width, powers
# of two around the sizes allocators give up at, and "just past the end".
HUGE_VALUES = (2**64 - 1, 2**63, 2**40, 2**32 - 1, 2**31, 2**30, 2**24)


# --------------------------------------------------------------------------
# Templates


@contextlib.contextmanager
def deterministic_segment_headers(name: str) -> Iterator[None]:
    """Make segments created meanwhile get a salt derived from ``name`` and
    their id, and a fixed creation time, so a template is byte-identical on
    every run (a replayed seed then damages exactly the same bytes)."""
    original = fmt.encode_segment_header

    def encode(segment_id: int, base_txid: int, salt: int | None = None) -> bytes:
        if salt is None:
            salt = zlib.crc32(f"{name}/{segment_id}".encode())
        header = bytearray(original(segment_id, base_txid, salt))
        header[32:40] = _FIXED_CREATED_NS.to_bytes(8, "little")
        header[60:64] = zlib.crc32(bytes(header[:60])).to_bytes(4, "little")
        return bytes(header)

    with mock.patch.object(fmt, "encode_segment_header", encode):
        yield


def _big(tag: str, n: int) -> dict[str, Any]:
    """A value of several hundred pickled bytes that compresses well."""
    return {"tag": tag, "n": n, "text": f"{tag} lorem ipsum dolor sit amet {n} " * 14}


def _small(n: int) -> dict[str, Any]:
    return {"n": n, "name": f"item {n}", "tags": ["a", "b"][: n % 3], "f": n / 4}


def _build_mixed(store: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Several sealed segments (4 KiB each) with hints, all four codecs,
    overwrites, deletes, a batch, a transaction with a delete, non-ASCII keys.
    Automatic compaction is off so that the sealed segments keep dead records."""
    exp: dict[str, Any] = {}
    opts: dict[str, Any] = {"max_segment_size": 4096, "auto_compact": None}
    with logshelf.open(store, "c", **opts) as db:
        for round_ in range(3):  # overwrites leave dead records in sealed segments
            for i in range(18):
                exp[f"k{i:02d}"] = {**_small(i), "round": round_}
                db[f"k{i:02d}"] = exp[f"k{i:02d}"]
        for key in ("ключ-1", "clé-é", "🔑-emoji", "日本語キー"):
            exp[key] = f"value of {key}"
            db[key] = exp[key]
        batch = {"b0": b"\x00\x01" * 9, "b1": None, "k02": ("k02", "rewritten in a batch")}
        db.update(batch)
        exp.update(batch)
        del db["k03"]
        del exp["k03"]
    with logshelf.open(store, "w", compression="lz4", **opts) as db:
        for i in range(10):
            exp[f"lz{i}"] = _big("lz4", i)
            db[f"lz{i}"] = exp[f"lz{i}"]
        exp["k04"] = _big("k04 overwritten", 4)
        db["k04"] = exp["k04"]
        del db["k05"]
        del exp["k05"]
    with logshelf.open(store, "w", compression="zlib", **opts) as db:
        for i in range(5):
            exp[f"zl{i}"] = _big("zlib", i)
            db[f"zl{i}"] = exp[f"zl{i}"]
        with db.transaction():
            db["tx-a"] = _big("in a transaction", 1)
            db["tx-b"] = 3.5
            db["k06"] = "k06 rewritten in a transaction"
            del db["k07"]
        exp.update({"tx-a": _big("in a transaction", 1), "tx-b": 3.5})
        exp["k06"] = "k06 rewritten in a transaction"
        del exp["k07"]
    with logshelf.open(store, "w", compression="bz2", **opts) as db:
        for i in range(4):
            exp[f"bz{i}"] = _big("bz2", i)
            db[f"bz{i}"] = exp[f"bz{i}"]
        db.delete_many(["lz1", "zl2", "k08"])
        for key in ("lz1", "zl2", "k08"):
            del exp[key]
        for i in range(6):
            exp[f"tail{i}"] = {"tail": i, "ключ": "значение" * (i + 1)}
            db[f"tail{i}"] = exp[f"tail{i}"]
        exp["k09"] = "k09 last word"
        db["k09"] = exp["k09"]
    return snapshot(store), exp


def _build_single(store: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """One segment and its hint; the last batch is a transaction with a delete."""
    exp: dict[str, Any] = {}
    with logshelf.open(store, "c", compression="lz4") as db:
        for i in range(14):
            key = f"s{i}" if i % 4 else f"ß-ключ-{i}"
            exp[key] = _big("single", i) if i % 3 == 0 else _small(i)
            db[key] = exp[key]
        del db["s1"]
        del exp["s1"]
        db.update({"s2": "s2 again", "u1": [1, 2, 3]})
        exp.update({"s2": "s2 again", "u1": [1, 2, 3]})
        with db.transaction():
            db["s5"] = "s5 in the last batch"
            db["v-new"] = _big("last batch", 99)
            del db["s6"]
        exp.update({"s5": "s5 in the last batch", "v-new": _big("last batch", 99)})
        del exp["s6"]
    return snapshot(store), exp


def _build_crash(store: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A store as a crashed writer leaves it: segments written by a
    compaction, an active segment whose hint covers only its first part, and
    half a batch at the end (a torn tail)."""
    exp: dict[str, Any] = {}
    opts: dict[str, Any] = {"max_segment_size": 4096, "auto_compact": None}
    with logshelf.open(store, "c", compression="zlib", **opts) as db:
        for round_ in range(3):
            for i in range(10):
                exp[f"c{i}"] = {"round": round_, "i": i, "pad": "p" * 60}
                db[f"c{i}"] = exp[f"c{i}"]
        del db["c2"]
        del exp["c2"]
        result = db.compact()
        assert result.compacted, result
        for i in range(4):
            exp[f"z{i}"] = _big("after compaction", i)
            db[f"z{i}"] = exp[f"z{i}"]
    with logshelf.open(store, "w", **opts) as db:
        for key in ("late0", "поздний-ключ", "late2"):
            exp[key] = f"{key} was written after the last close"
            db[key] = exp[key]
        del db["c5"]
        del exp["c5"]
        batch = {"c6": "c6 rewritten in a batch", "new-in-batch": [None, 1.5]}
        db.update(batch)
        exp.update(batch)
        files = snapshot(store)  # the crash happens here: no close, no hint update
        active = fmt.segment_name(_manifest_of(files).active_id)
        before = len(files[active])
        db.update({"torn-a": "never committed", "c1": "never committed", "torn-b": 7})
        after = (store / active).read_bytes()
        assert len(after) > before and after[:before] == files[active], "the batch rolled over"
        files[active] = after[: before + (len(after) - before) * 2 // 3]
    return files, exp


def _build_large(store: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A sealed and an active segment of more than 256 KiB each: reads there
    take the memory-mapped fast path of ``Segment.read_value`` (segments below
    that size are read with pread). The big values are lz4-compressed to about
    half, so damage to a codec bit cannot go unnoticed."""
    rng = random.Random("large")
    exp: dict[str, Any] = {}

    def blob(n: int) -> dict[str, Any]:
        return {"n": n, "data": b"".join(rng.randbytes(64) + bytes(64) for _ in range(4700))}

    with logshelf.open(
        store, "c", compression="lz4", max_segment_size=4096, auto_compact=None
    ) as db:
        for i in range(3):
            exp[f"pre{i}"] = _small(i)
            db[f"pre{i}"] = exp[f"pre{i}"]
        exp["blob-sealed"] = blob(1)
        db["blob-sealed"] = exp["blob-sealed"]  # a segment of its own, sealed by the next put
        for i in range(5):
            exp[f"mid{i}"] = _small(10 + i)
            db[f"mid{i}"] = exp[f"mid{i}"]
    with logshelf.open(store, "w", compression="lz4", auto_compact=None) as db:
        exp["blob-active"] = blob(2)
        db["blob-active"] = exp["blob-active"]
        for i in range(8):
            key = f"post{i}" if i % 3 else f"пост-{i}"
            exp[key] = _big("after the blob", i) if i % 2 else _small(20 + i)
            db[key] = exp[key]
        batch = {"mid1": "mid1 rewritten", "post1": None}
        db.update(batch)
        exp.update(batch)
        del db["pre0"]
        del exp["pre0"]
        exp["mid3"] = "last word"
        db["mid3"] = exp["mid3"]
    return snapshot(store), exp


def _manifest_of(files: dict[str, bytes]) -> fmt.Manifest:
    return fmt.decode_manifest(files[fmt.MANIFEST_NAME], fmt.MANIFEST_NAME)


def _build_arrays(store: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Values with out-of-band buffers (format.md section 4.2: a head, an
    alignment pad, buffers on 64-byte boundaries) in a sealed and the active
    segment: one buffer and two, uncompressed and lz4-compressed, in a
    transaction, among small records. ``pickle.PickleBuffer`` is what numpy
    arrays hand pickle; it reads back as the bytearray it wraps."""
    rng = random.Random("arrays")
    exp: dict[str, Any] = {}

    def buffer(n: int, compressible: bool) -> bytearray:
        if compressible:
            return bytearray(b"".join(rng.randbytes(16) + bytes(48) for _ in range(n >> 6)))
        return bytearray(rng.randbytes(n))

    def put(db: logshelf.Shelf, key: str, value: dict[str, Any]) -> None:
        exp[key] = value
        db[key] = {
            k: pickle.PickleBuffer(v) if isinstance(v, bytearray) else v for k, v in value.items()
        }

    with logshelf.open(
        store, "c", compression="lz4", max_segment_size=4096, auto_compact=None
    ) as db:
        db["pre"] = exp["pre"] = _small(1)
        put(db, "one", {"n": 1, "buf": buffer(70_000, False)})  # sealed by the next put
        db["mid"] = exp["mid"] = _small(2)
    with logshelf.open(store, "w", compression="lz4", auto_compact=None) as db:
        put(db, "два", {"a": buffer(66_000, True), "b": buffer(65_600, False), "n": 2})
        with db.transaction():
            put(db, "tx", {"n": 3, "buf": buffer(65_536, False)})
            db["tx-small"] = exp["tx-small"] = _small(3)
        db["post"] = exp["post"] = _small(4)
        del db["pre"]
        del exp["pre"]
    return snapshot(store), exp


BUILDERS: dict[str, Callable[[Path], tuple[dict[str, bytes], dict[str, Any]]]] = {
    "mixed": _build_mixed,
    "single": _build_single,
    "crash": _build_crash,
    "large": _build_large,
    "arrays": _build_arrays,
}


def build_templates(directory: Path) -> None:
    """Build every template in a subprocess: ``directory/NAME.pickle`` holds
    ``(files, expected)``.

    The subprocess runs with a fixed ``PYTHONHASHSEED``: a hint lists deleted
    keys in set order, which depends on string hashing, and a template must be
    byte-identical on every run for a seed to replay exactly.
    """
    env = {**_child_environment(), "PYTHONHASHSEED": "0"}
    # subprocess.run kills and reaps the child if the timeout (or anything) interrupts it.
    subprocess.run(
        [sys.executable, "-m", MODULE, "build", str(directory)], check=True, env=env, timeout=120
    )


def _build_templates_here(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, builder in BUILDERS.items():
        store = directory / f"{name}.store"
        with deterministic_segment_headers(name):
            files, expected = builder(store)
        shutil.rmtree(store)
        with open(directory / f"{name}.pickle", "wb") as out:
            pickle.dump((files, expected), out)


# --------------------------------------------------------------------------
# The model: a template's committed history, read from its bytes


@dataclass(frozen=True)
class Record:
    """One record of a template segment."""

    seg: str  # file name
    offset: int
    end: int
    kind: int
    key: str
    txid: int
    commit: bool
    value: Any = None  # the unpickled value of a PUT


@dataclass(frozen=True)
class Live:
    """Where a key's live value is, and what it is."""

    value: Any
    seg: str
    offset: int


State = dict[str, Live]


@dataclass
class Batch:
    """A committed batch of the active segment."""

    start: int
    end: int
    records: list[Record]


@dataclass
class Template:
    """A template store and its history."""

    name: str
    files: dict[str, bytes]
    expected: dict[str, Any]
    segments: list[tuple[str, int]]  # (file name, readable limit), MANIFEST order
    active: str
    records: dict[str, list[Record]]  # per segment file, committed or not
    base: State  # the state before the active segment's first batch
    batches: list[Batch]  # committed batches of the active segment
    states: list[State]  # states[j]: after the first j active batches
    universe: list[str]  # every key ever written, and some never written
    #: Hints of other templates under the same file names: a hint that is
    #: checksum-valid but belongs to another store (another salt).
    foreign: dict[str, bytes] = field(default_factory=dict)

    @property
    def sealed(self) -> list[str]:
        return [name for name, _ in self.segments[:-1]]

    @property
    def hints(self) -> list[str]:
        return sorted(name for name in self.files if name.endswith(".hint"))


def _inflate(codec: int, stored: bytes, rawlen: int) -> bytes:
    if codec == 0:
        return stored
    if codec == 1:
        raw = lz4.block.decompress(stored, uncompressed_size=rawlen)
    elif codec == 2:
        raw = zlib.decompress(stored)
    else:
        raw = bz2.decompress(stored)
    assert len(raw) == rawlen
    return bytes(raw)


def _decode_value(rec: fmt.RecordHeader, data: bytes, at: int) -> Any:
    """Unpickle the value stored at ``at`` in a segment's bytes with the
    standard library (and lz4), not the engine; out-of-band buffers by the
    layout of docs/format.md section 4.2."""
    codec = rec.flags >> 1 & 3
    if not rec.flags & _BUFFERS:
        return pickle.loads(_inflate(codec, data[at : at + rec.vlen], rec.rawlen))
    head_len, count = struct.unpack_from("<II", data, at)
    first = -(-(at + head_len) // 64) * 64
    buffers = []
    for i in range(count):
        rel, stored, raw, _, buffer_codec = struct.unpack_from("<QQQIB", data, at + 8 + 32 * i)
        piece = data[first + rel : first + rel + stored]
        buffers.append(bytearray(_inflate(buffer_codec, piece, raw)))
    stream = _inflate(codec, data[at + 8 + 32 * count : at + head_len], rec.rawlen)
    return pickle.loads(stream, buffers=buffers)


def _records_of(name: str, data: bytes) -> list[Record]:
    """The complete, checksum-valid records of a template segment, parsed here
    from the layout in docs/format.md (not with the engine's validation code,
    which the fuzz is there to test: a sabotaged check must not blind the model)."""
    salt = int.from_bytes(data[12:16], "little")
    out = []
    pos = HEADER
    while pos + RECORD <= len(data):
        head = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        end = pos + RECORD + head.klen + head.vlen
        if end > len(data):
            break  # cut short: a torn tail
        key = data[pos + RECORD : pos + RECORD + head.klen]
        assert zlib.crc32(key, zlib.crc32(data[pos + 4 : pos + RECORD], salt)) == head.hcrc, (
            f"template {name}: bad record at {pos}"
        )
        value = None
        if head.kind == fmt.KIND_PUT:
            value = _decode_value(head, data, end - head.vlen)
        out.append(
            Record(
                name,
                pos,
                end,
                head.kind,
                key.decode(),
                head.txid,
                bool(head.flags & fmt.FLAG_COMMIT),
                value,
            )
        )
        pos = end
    return out


def _apply(state: State, records: list[Record]) -> State:
    new = dict(state)
    for rec in records:
        if rec.kind == fmt.KIND_PUT:
            new[rec.key] = Live(rec.value, rec.seg, rec.offset)
        elif rec.kind == fmt.KIND_DELETE:
            new.pop(rec.key, None)
    return new


def _batches(records: list[Record]) -> tuple[list[Batch], list[Record]]:
    """Committed batches, and the records after the last commit (a torn tail)."""
    batches: list[Batch] = []
    pending: list[Record] = []
    for rec in records:
        assert not pending or rec.txid == pending[0].txid, "template batches interleave"
        pending.append(rec)
        if rec.commit:
            batches.append(Batch(pending[0].offset, rec.end, pending))
            pending = []
    return batches, pending


def load_template(name: str, files: dict[str, bytes], expected: dict[str, Any]) -> Template:
    """Parse a template's segments and replay them; the result must equal
    what the builder wrote (so the model, not just the store, is checked).

    The model knows hints, not the INDEX file (with it, opening trusts the
    file as it trusts an intact hint): templates leave it out, so that "no
    hints" still means a scan. tests/crash/test_index_file_fuzz.py damages
    stores that keep it."""
    files = {name: data for name, data in files.items() if name != fmt.TABLE_NAME}
    manifest = _manifest_of(files)
    segments = []
    records: dict[str, list[Record]] = {}
    state: State = {}
    for segment_id, length in manifest.segments:
        seg = fmt.segment_name(segment_id)
        data = files[seg]
        limit = len(data) if length == fmt.ACTIVE else length
        segments.append((seg, limit))
        records[seg] = _records_of(seg, data[:limit])
        if length != fmt.ACTIVE:
            batches, torn = _batches(records[seg])
            assert not torn and batches[-1].end == limit, f"{seg} is not sealed cleanly"
            for batch in batches:
                state = _apply(state, batch.records)
    active = segments[-1][0]
    batches, _ = _batches(records[active])
    states = [state]
    for batch in batches:
        states.append(_apply(states[-1], batch.records))
    final = {key: live.value for key, live in states[-1].items()}
    assert final == expected, f"template {name}: the model disagrees with what was written"
    keys = {rec.key for recs in records.values() for rec in recs if rec.kind != fmt.KIND_SEAL}
    universe = sorted(keys) + [k for k in NEVER_WRITTEN if k not in keys]
    return Template(
        name, files, expected, segments, active, records, states[0], batches, states, universe
    )


def load_templates(directory: Path) -> dict[str, Template]:
    out = {}
    for name in BUILDERS:
        with open(directory / f"{name}.pickle", "rb") as src:
            files, expected = pickle.load(src)
        out[name] = load_template(name, files, expected)
    for t in out.values():
        for other in out.values():
            for hint in other.hints:
                if other is not t and hint in t.files and hint not in t.foreign:
                    t.foreign[hint] = other.files[hint]
    return out


# --------------------------------------------------------------------------
# Mutations

#: Operations that change a file's length (at most one per file and case,
#: applied after the byte-level ones, so positions stay template positions).
RESIZING = frozenset(("truncate", "append", "remove", "duplicate", "delete", "replace"))


@dataclass(frozen=True)
class Op:
    """One mutation of one file of a store.

    ``kind`` is one of: ``xor`` (``data`` XORed in at ``start``: bit flips and
    overwritten bytes), ``write`` (``data`` written at ``start``: zeroed and
    garbage ranges, damaged fields), ``truncate`` (to ``start`` bytes),
    ``append``, ``remove`` and ``duplicate`` (the range ``[start, end)``;
    a duplicate is inserted right after the original), ``delete`` (the file)
    and ``replace`` (the whole file by ``data``).
    """

    kind: str
    file: str
    start: int = 0
    end: int = 0
    data: bytes = b""
    label: str = ""
    #: Checksums recomputed: damage no disk makes, only a writer bug or a forger.
    forged: bool = False

    def apply(self, files: dict[str, bytes]) -> None:
        if self.file not in files:
            return
        data = files[self.file]
        if self.kind == "xor":
            span = data[self.start : self.start + len(self.data)]
            mixed = bytes(a ^ b for a, b in zip(span, self.data[: len(span)], strict=True))
            data = data[: self.start] + mixed + data[self.start + len(mixed) :]
        elif self.kind == "write":
            span = self.data[: max(0, len(data) - self.start)]
            data = data[: self.start] + span + data[self.start + len(span) :]
        elif self.kind == "truncate":
            data = data[: self.start]
        elif self.kind == "append":
            data = data + self.data
        elif self.kind == "remove":
            data = data[: self.start] + data[self.end :]
        elif self.kind == "duplicate":
            data = data[: self.end] + data[self.start : self.end] + data[self.end :]
        elif self.kind == "replace":
            data = self.data
        elif self.kind == "delete":
            del files[self.file]
            return
        else:  # pragma: no cover - a typo in this module
            raise AssertionError(self.kind)
        files[self.file] = data

    def describe(self) -> str:
        what = {
            "xor": f"xor {self.file}[{self.start}:{self.start + len(self.data)}] "
            f"with {self.data.hex()}",
            "write": f"write {self.file}[{self.start}:{self.start + len(self.data)}] "
            f"= {_short_hex(self.data)}",
            "truncate": f"truncate {self.file} to {self.start} bytes",
            "append": f"append {len(self.data)} bytes to {self.file}: {_short_hex(self.data)}",
            "remove": f"remove {self.file}[{self.start}:{self.end}]",
            "duplicate": f"duplicate {self.file}[{self.start}:{self.end}]",
            "delete": f"delete {self.file}",
            "replace": f"replace {self.file} by {_short_hex(self.data)}",
        }[self.kind]
        extra = " (checksums recomputed)" if self.forged else ""
        return f"{what} [{self.label}]{extra}" if self.label else what + extra


def _short_hex(data: bytes) -> str:
    if len(data) <= 24:
        return data.hex()
    return f"{data[:16].hex()}...({len(data)} bytes)"


def _range_length(rng: random.Random, room: int) -> int:
    """A range length of 1..room, mostly short: a few bytes, a sector, or to the end."""
    bucket = rng.random()
    if bucket < 0.4:
        length = rng.randint(1, 8)
    elif bucket < 0.7:
        length = rng.randint(9, 64)
    elif bucket < 0.9:
        length = rng.randint(65, 512)
    else:
        length = room
    return max(1, min(length, room))


def _offset(t: Template, name: str, rng: random.Random) -> int:
    """A position in a file: uniform half the time, else where the structure
    is (record headers and keys, file headers), where damage is most telling."""
    size = len(t.files[name])
    records = t.records.get(name, [])
    if rng.random() < 0.5 or size <= 1:
        return rng.randrange(max(size, 1))
    if records and rng.random() < 0.9:
        rec = rng.choice(records)
        return rec.offset + rng.randrange(min(RECORD + len(rec.key.encode()), rec.end - rec.offset))
    header = HEADER if name.endswith(".log") else HINT_HEADER_SIZE
    return rng.randrange(min(size, header))


def _field_op(t: Template, name: str, rng: random.Random) -> Op:
    """A length (or other) field of a record, hint or MANIFEST set to a huge value."""
    data = t.files[name]
    if name.endswith(".log") and t.records[name]:
        rec = rng.choice(t.records[name])
        field_name = rng.choice(("vlen", "vlen", "klen", "rawlen", "rawlen", "txid", "kind"))
        where, width = RECORD_FIELDS[field_name]
        past_end = len(data) - rec.offset - RECORD + 1  # one byte more than the file holds
        value = rng.choice((*HUGE_VALUES, past_end))
        base = rec.offset
        label = f"record at {rec.offset} ({rec.key!r}): {field_name}={value:#x}"
    elif name.endswith(".hint"):
        field_name = rng.choice(("covered", "payload_length", "payload_length", "max_txid"))
        where, width = HINT_FIELDS[field_name]
        value = rng.choice(HUGE_VALUES)
        base = 0
        label = f"hint {field_name}={value:#x}"
    else:
        count = (len(data) - 36) // 16
        if rng.random() < 0.5 and count > 1:
            where, width = 32 + 16 * rng.randrange(count - 1) + 8, 8
            field_name = "sealed length"
        else:
            field_name = rng.choice(("count", "next_id"))
            where, width = MANIFEST_FIELDS[field_name]
        value = rng.choice(HUGE_VALUES)
        base = 0
        label = f"MANIFEST {field_name}={value:#x}"
    value &= (1 << (8 * width)) - 1
    return Op("write", name, base + where, data=value.to_bytes(width, "little"), label=label)


def _aligned_range(t: Template, name: str, rng: random.Random) -> tuple[int, int]:
    """One to three whole records of a segment."""
    records = t.records[name]
    first = rng.randrange(len(records))
    last = min(len(records) - 1, first + rng.randrange(3))
    return records[first].offset, records[last].end


def _random_op(t: Template, name: str, rng: random.Random, may_resize: bool) -> Op:
    data = t.files[name]
    size = len(data)
    is_segment = name.endswith(".log")
    kinds = {"flip": 20, "bytes": 10, "zero": 12, "garbage": 10, "field": 12}
    if name in t.foreign:
        kinds["foreign"] = 6
    if may_resize:
        kinds.update(
            truncate=13,
            append=7,
            remove=7,
            duplicate=7,
            delete=2 if is_segment else (5 if name.endswith(".hint") else 1),
        )
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    start = _offset(t, name, rng)
    if kind == "flip":
        mask = bytearray(rng.randint(1, 3))
        for i in range(len(mask)):
            mask[i] = 1 << rng.randrange(8)
        return Op("xor", name, start, data=bytes(mask), label="bit flips")
    if kind == "bytes":
        mask = bytes(rng.randint(1, 255) for _ in range(rng.randint(1, 8)))
        return Op("xor", name, start, data=mask, label="bytes overwritten")
    if kind == "zero":
        return Op(
            "write", name, start, data=bytes(_range_length(rng, size - start)), label="zeroed range"
        )
    if kind == "garbage":
        return Op(
            "write",
            name,
            start,
            data=rng.randbytes(_range_length(rng, size - start)),
            label="garbage range",
        )
    if kind == "field":
        return _field_op(t, name, rng)
    if kind == "foreign":
        return Op("replace", name, data=t.foreign[name], label="the hint of another store")
    if kind == "truncate":
        if is_segment and rng.random() < 0.5:
            # Near a record boundary: where real crashes cut.
            start = rng.choice(t.records[name]).end + rng.randint(-2, 2) if t.records[name] else 0
        return Op("truncate", name, max(0, min(start, size - 1)), label="truncated")
    if kind == "append":
        choice = rng.random()
        if choice < 0.4:
            return Op(
                "append", name, data=rng.randbytes(rng.randint(1, 400)), label="appended garbage"
            )
        if choice < 0.7:
            return Op("append", name, data=bytes(rng.randint(1, 400)), label="appended zeros")
        if is_segment and t.records[name]:
            lo, hi = _aligned_range(t, name, rng)
        else:
            lo = rng.randrange(size)
            hi = lo + _range_length(rng, size - lo)
        return Op("append", name, data=data[lo:hi], label=f"appended copy of [{lo}:{hi}]")
    if kind in ("remove", "duplicate"):
        if is_segment and t.records[name] and rng.random() < 0.4:
            lo, hi = _aligned_range(t, name, rng)
            label = "whole records"
        else:
            lo, hi = start, start + _range_length(rng, size - start)
            label = "range"
        return Op(kind, name, lo, hi, label=label)
    return Op("delete", name, label="file deleted")


def _pick_file(t: Template, rng: random.Random, gone: set[str]) -> str | None:
    """A file to damage (None once every one of them is deleted)."""
    choices: dict[str, float] = {t.active: 35.0, fmt.MANIFEST_NAME: 10.0}
    for name in t.sealed:
        choices[name] = 25.0 / len(t.sealed)
    hints = [h for h in t.hints if h not in gone]
    for name in hints:
        choices[name] = 25.0 / len(hints)
    names = [n for n in choices if n not in gone]
    if not names:
        return None
    return rng.choices(names, weights=[choices[n] for n in names])[0]


def random_case(t: Template, seed: int) -> list[Op]:
    """The mutations of case ``seed``: a function of the template and the seed only."""
    rng = random.Random(f"{t.name}/{seed}")
    ops: list[Op] = []
    gone: set[str] = set()
    if rng.random() < 0.25:
        # Without hints every segment is scanned at open: damage is met there
        # rather than on reading a key.
        for name in t.hints:
            ops.append(Op("delete", name, label="no hints"))
            gone.add(name)
    resized: set[str] = set()
    for _ in range(rng.choices((1, 2, 3), weights=(60, 25, 15))[0]):
        name = _pick_file(t, rng, gone)
        if name is None:
            break
        op = _random_op(t, name, rng, may_resize=name not in resized)
        if op.kind in RESIZING:
            resized.add(name)
            if op.kind == "delete":
                gone.add(name)
        ops.append(op)
    # Byte-level damage first: then every position an op names is a template position.
    ops.sort(key=lambda op: op.kind in RESIZING)
    return ops


# -- forged length fields: checksums recomputed --------------------------------


def _salt(t: Template, seg: str) -> int:
    return fmt.decode_segment_header(t.files[seg][:HEADER], seg).salt


def _forge_record(t: Template, rec: Record, field_name: str, value: int) -> Op:
    """Set a record header field and recompute its header checksum."""
    data = t.files[rec.seg]
    where, width = RECORD_FIELDS[field_name]
    head = bytearray(data[rec.offset : rec.offset + RECORD])
    head[where : where + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    key = rec.key.encode()
    head[0:4] = fmt.record_hcrc(bytes(head), key, _salt(t, rec.seg)).to_bytes(4, "little")
    return Op(
        "write",
        rec.seg,
        rec.offset,
        data=bytes(head),
        forged=True,
        label=f"record at {rec.offset} ({rec.key!r}): {field_name}={value:#x}",
    )


def _forge_hint(t: Template, name: str, field_name: str, value: int) -> Op:
    """Set a hint header field and recompute the header checksum."""
    head = bytearray(t.files[name][:HINT_HEADER_SIZE])
    where, width = HINT_FIELDS[field_name]
    head[where : where + width] = value.to_bytes(width, "little")
    head[52:56] = zlib.crc32(bytes(head[:52])).to_bytes(4, "little")
    label = f"hint {field_name}={value:#x}"
    return Op("write", name, 0, data=bytes(head), forged=True, label=label)


def _forge_hint_payload(t: Template, name: str, payload: bytes, label: str) -> Op:
    """Replace a hint's payload, both checksums and the payload length recomputed."""
    head = bytearray(t.files[name][:HINT_HEADER_SIZE])
    head[40:48] = len(payload).to_bytes(8, "little")
    head[48:52] = zlib.crc32(payload).to_bytes(4, "little")
    head[52:56] = zlib.crc32(bytes(head[:52])).to_bytes(4, "little")
    return Op("replace", name, data=bytes(head) + payload, forged=True, label=label)


def _forge_manifest(t: Template, where: int, width: int, value: int, label: str) -> Op:
    data = bytearray(t.files[fmt.MANIFEST_NAME])
    data[where : where + width] = value.to_bytes(width, "little")
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    return Op("replace", fmt.MANIFEST_NAME, data=bytes(data), forged=True, label=label)


# Key and offset counts at the start of a hint payload (docs/format.md, section 5):
# each set to a huge value in an otherwise plausible payload.
_HINT_COUNTS = {
    "puts": lambda v: struct.pack("<QQQQII", v, 0, 0, 64, 0, 0),
    "deletes": lambda v: struct.pack("<QQQQII", 0, v, 0, 0, 0, 0),
    "both": lambda v: struct.pack("<QQQQII", v, v, 0, 64, 0, 0),
}


def forged_cases(t: Template) -> dict[str, list[Op]]:
    """Length fields set to huge values *with valid checksums*: no random damage
    gets there, so these check that every length is bounded by what the file
    holds before anything is allocated, independently of the checksums."""
    cases: dict[str, list[Op]] = {}
    no_hints = [Op("delete", h, label="no hints") for h in t.hints]
    live = t.states[-1]
    # Live PUT records: the first and last of each segment, and one per codec.
    picks: dict[str, Record] = {}
    for seg, _ in t.segments:
        puts = [
            r
            for r in t.records[seg]
            if r.kind == fmt.KIND_PUT and live.get(r.key) == Live(r.value, seg, r.offset)
        ]
        if puts:
            picks[f"{seg}-first"] = puts[0]
            picks[f"{seg}-last"] = puts[-1]
    by_codec: dict[int, Record] = {}
    for seg, _ in t.segments:
        data = t.files[seg]
        for r in t.records[seg]:
            if r.kind == fmt.KIND_PUT and live.get(r.key) == Live(r.value, seg, r.offset):
                flags = data[r.offset + 31]
                by_codec.setdefault(fmt.codec_of(flags), r)
    for where, rec in picks.items():
        size = len(t.files[rec.seg])
        past_end = size - rec.offset - RECORD - len(rec.key.encode()) + 1
        for value in (2**64 - 1, 2**40, 2**31, 2**30, past_end):
            for hints in (True, False):
                name = f"record-vlen/{where}/{value:#x}/{'hints' if hints else 'no-hints'}"
                cases[name] = [_forge_record(t, rec, "vlen", value), *([] if hints else no_hints)]
        for hints in (True, False):
            name = f"record-klen/{where}/0xffff/{'hints' if hints else 'no-hints'}"
            cases[name] = [_forge_record(t, rec, "klen", 0xFFFF), *([] if hints else no_hints)]
    for codec, rec in by_codec.items():
        codec_name = ("none", "lz4", "zlib", "bz2")[codec & 3] + ("+buffers" if codec & 4 else "")
        for value in (0xFFFF_FFFF, 0x7FFF_FFFF, 2**30):
            for hints in (True, False):
                name = f"record-rawlen/{codec_name}/{value:#x}/{'hints' if hints else 'no-hints'}"
                cases[name] = [_forge_record(t, rec, "rawlen", value), *([] if hints else no_hints)]
    for hint in t.hints:
        for field_name in ("payload_length", "covered"):
            for value in (2**64 - 1, 2**40, 2**30):
                cases[f"hint-header/{hint}/{field_name}={value:#x}"] = [
                    _forge_hint(t, hint, field_name, value)
                ]
        if hint != t.active.replace(".log", ".hint"):
            continue  # one hint per template: every hint goes through the same decoder
        for count, head in _HINT_COUNTS.items():
            for value in (2**64 - 1, 2**40, 2**31 - 1, 2**30):
                payload = head(value) + bytes(64) + b"key\xff" * 4
                cases[f"hint-payload/{hint}/{count}={value:#x}"] = [
                    _forge_hint_payload(t, hint, payload, f"hint payload: {count} {value:#x}")
                ]
    cases["manifest/count=0xffffffff"] = [
        _forge_manifest(t, 12, 4, 0xFFFF_FFFF, "MANIFEST count=0xffffffff")
    ]
    for i in range(len(t.segments) - 1):
        for value in (2**64 - 2, 2**40, 2**31):
            cases[f"manifest/sealed-length-{i}={value:#x}"] = [
                _forge_manifest(
                    t, 32 + 16 * i + 8, 8, value, f"MANIFEST sealed length of entry {i}={value:#x}"
                )
            ]
    return cases


# --------------------------------------------------------------------------
# The oracle: what a store with this damage may show


@dataclass(frozen=True)
class Allowed:
    """A state the damaged store may show."""

    label: str
    state: State
    #: End of the committed data of the active segment in this state (None:
    #: records moved, the end is not known).
    active_end: int | None
    #: When set: the (active segment, offset) of the live records that may
    #: fail to read in this state; any other live record of the active
    #: segment must read back. None: the analysis-wide rule applies.
    fragile: frozenset[tuple[str, int]] | None = None
    #: verify() must report a problem in this state (a scan of the active
    #: segment's committed bytes without the hint is not clean).
    dirty: bool = False


@dataclass
class Analysis:
    """What the damage allows, derived from template and damaged bytes alone."""

    #: Per the format nothing visible may change (hints only, bytes past a
    #: sealed length, garbage after the active segment): the store must open
    #: with exactly the template's contents, no errors, and verify() clean.
    harmless: bool
    #: Opening must raise (MANIFEST or a segment header changed, a segment
    #: missing or shorter than its sealed length).
    must_fail: bool
    why_fail: str
    #: Some checksum was recomputed: verify() is not expected to see it.
    forged: bool
    allowed: list[Allowed]
    #: (file, offset) of records whose bytes changed.
    damaged: set[tuple[str, int]]
    #: Files whose records moved (a range removed or duplicated).
    shifted: set[str]
    #: First changed offset of each changed segment file (not shifted ones).
    first_change: dict[str, int]
    #: The active segment's file name.
    active: str = ""

    def may_fail_to_read(self, live: Live, allowed: Allowed) -> bool:
        """May reading a key whose live record is ``live`` raise CorruptionError
        when the store shows ``allowed``?"""
        if allowed.fragile is not None and live.seg == self.active:
            return (live.seg, live.offset) in allowed.fragile
        return live.seg in self.shifted or (live.seg, live.offset) in self.damaged


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where ``a`` and ``b`` differ: whole pages are
    compared in C first (segments reach 300 KB), then bytes of the page that differs."""
    common = min(len(a), len(b))
    for page in range(0, common, 4096):
        end = min(page + 4096, common)
        if a[page:end] != b[page:end]:
            return next(i for i in range(page, end) if a[i] != b[i])
    return common


def _active_states(t: Template, files: dict[str, bytes]) -> list[Allowed]:
    """States of an active segment damaged in place (no bytes moved).

    State ``j`` (the first ``j`` batches applied) needs every record of those
    batches in the file, each either vouched for by the segment's intact
    hint (which spares the scan: damage then shows on reading) or acceptable
    to a scan: intact, or with only its value damaged and a valid record
    right after it (bit rot; a damaged value with nothing valid after it is a
    torn write). And for ``j`` short of all batches, the damage must pass
    for a torn tail: batch ``j+1`` is damaged and no intact record follows it,
    since a scan that stops at damage and then finds a valid record must raise
    instead (docs/format.md, section 3.4).
    """
    old = t.files[t.active]
    new = files.get(t.active, b"")
    records = t.records[t.active]

    def same(lo: int, hi: int) -> bool:
        return hi <= len(new) and new[lo:hi] == old[lo:hi]

    def head(r: Record) -> tuple[int, int]:
        return r.offset, r.offset + RECORD + len(r.key.encode())

    intact = {r.offset: same(r.offset, r.end) for r in records}
    following = {a.offset: b for a, b in itertools.pairwise(records)}
    salt = _salt(t, t.active)
    # Damage at or after the synced mark is an unsynced tail (section 6.2):
    # no value rot there, and valid records may follow it.
    floor = _synced_floor(t, files, new, salt) if same(0, HEADER) else None

    def forged_in_place(r: Record) -> bool:
        """A header rewritten with its checksum recomputed (a forged field)
        that keeps the record's lengths and value passes a scan: nothing in
        the bytes tells it from a record written that way."""
        lo, hi = head(r)
        if r.end > len(new) or not same(hi, r.end):
            return False
        h = new[lo : lo + RECORD]
        return (
            int.from_bytes(h[0:4], "little") == fmt.record_hcrc(h, new[lo + RECORD : hi], salt)
            and h[16:24] == old[lo + 16 : lo + 24]  # vlen
            and h[28:30] == old[lo + 28 : lo + 30]  # klen
        )

    def scannable(r: Record) -> bool:
        if intact[r.offset] or forged_in_place(r):
            return True
        nxt = following.get(r.offset)
        return (
            (floor is None or r.offset < floor)
            and r.end <= len(new)
            and same(*head(r))
            and nxt is not None
            and nxt.end <= len(new)
            and same(*head(nxt))
        )

    # The hint is used when it is the template's own and still fits the file.
    hint_name = t.active.replace(".log", ".hint")
    covered = HEADER
    hint = files.get(hint_name)
    if hint is not None and hint == t.files.get(hint_name) and same(0, HEADER):
        where, width = HINT_FIELDS["covered"]
        if int.from_bytes(hint[where : where + width], "little") <= len(new):
            covered = int.from_bytes(hint[where : where + width], "little")
    allowed = []
    for j in range(len(t.batches) + 1):
        if j:
            batch = t.batches[j - 1]
            if any(r.end > len(new) for r in batch.records):
                break
            if batch.end > covered and not all(scannable(r) for r in batch.records):
                break
        end = t.batches[j - 1].end if j else HEADER
        if j < len(t.batches):
            batch = t.batches[j]
            if all(intact[r.offset] for r in batch.records):
                continue
            unsynced = floor is not None and end >= floor
            if not unsynced and any(intact[r.offset] for r in records if r.offset >= batch.end):
                continue
        allowed.append(Allowed(f"after {j} of {len(t.batches)} active batches", t.states[j], end))
    return allowed


# -- records moved in the active segment: a scan of the damaged bytes -----------
#
# When a range of the active segment is cut out or duplicated, the records
# after it move and the template's offsets say nothing about them. The model
# then scans the damaged bytes itself, by the rules of docs/format.md
# section 3.4, written out here (not the engine's code, which the fuzz tests):
#
# * a record is valid when its header is (rules 1-5: it fits the file, a
#   known kind, consistent lengths, its hcrc) and its txid fits (rule 6);
# * scanning stops at the first record that is not valid; a record whose
#   value fails its vcrc is passed over (bit rot, the key raises on reading)
#   only when a record with a valid header starts right after it;
# * committed batches before the stop are the store's contents; what lies
#   after the last one is a torn tail only when no record with a valid
#   header starts anywhere after the stopping point ("damage passes for a
#   torn tail only where nothing valid follows it"), or when the stopping
#   point is at or after the synced mark (section 6.2: an unsynced tail,
#   where no value rot is passed over either); otherwise opening must
#   raise CorruptionError, whatever the flag.

_RECORD_LAYOUT = struct.Struct("<IIQQIHBB")
_KINDS = (fmt.KIND_PUT, fmt.KIND_DELETE, fmt.KIND_SEAL)
#: Where a record may start, judged by its kind and flags bytes (offsets 30
#: and 31): how a reader looks for valid records after damage.
_CANDIDATE = re.compile(rb"[\xa1\xa2\xa4][\x00-\x1f]")
_BUFFERS = 0x08


class _Unknown:
    """The value of a record the model cannot vouch for: reading it must raise."""

    def __repr__(self) -> str:
        return "<a damaged value: reading it must raise>"


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class _Head:
    """A record whose header is valid (rules 1-5)."""

    offset: int
    end: int
    txid: int
    kind: int
    commit: bool
    key: bytes
    value_ok: bool
    reserved_flags: bool


def _valid_head(data: bytes, pos: int, salt: int) -> _Head | None:
    """The record at ``pos`` if its header is valid by rules 1-5, else None."""
    if pos < HEADER or pos + RECORD > len(data):
        return None
    hcrc, vcrc, txid, vlen, rawlen, klen, kind, flags = _RECORD_LAYOUT.unpack_from(data, pos)
    end = pos + RECORD + klen + vlen
    if kind not in _KINDS or end > len(data):
        return None
    if kind == fmt.KIND_DELETE and vlen:
        return None
    if kind == fmt.KIND_SEAL and (klen or vlen != 8):
        return None
    if not flags & 0x06 and rawlen:
        return None
    if flags & _BUFFERS and kind != fmt.KIND_PUT:
        return None
    key = data[pos + RECORD : pos + RECORD + klen]
    if zlib.crc32(key, zlib.crc32(data[pos + 4 : pos + RECORD], salt)) != hcrc:
        return None
    if flags & _BUFFERS:
        value_ok = _buffers_ok(data, pos + RECORD + klen, vlen, vcrc)
    else:
        value_ok = zlib.crc32(data[pos + RECORD + klen : end]) == vcrc
    return _Head(pos, end, txid, kind, bool(flags & 1), key, value_ok, bool(flags & 0xE0))


def _buffers_ok(data: bytes, at: int, vlen: int, vcrc: int) -> bool:
    """Section 4.2: a value with out-of-band buffers is sound when its head
    matches ``vcrc``, its table describes buffers that fill the value
    exactly (each on a 64-byte boundary of the file), and each buffer
    matches its own checksum."""
    if vlen < 8:
        return False
    head_len, count = struct.unpack_from("<II", data, at)
    if count < 1 or not 8 + 32 * count <= head_len <= vlen:
        return False
    if zlib.crc32(data[at : at + head_len]) != vcrc:
        return False
    first = -(-(at + head_len) // 64) * 64
    expected = end = 0
    previous_end = at + head_len  # the pad and gaps must be zeros
    for i in range(count):
        rel, stored, _, crc, _ = struct.unpack_from("<QQQIB", data, at + 8 + 32 * i)
        if rel != expected:
            return False
        end = first + rel + stored
        if end > at + vlen or zlib.crc32(data[first + rel : end]) != crc:
            return False
        if any(data[previous_end : first + rel]):
            return False
        previous_end = end
        expected = -(-(rel + stored) // 64) * 64
    return end == at + vlen


@dataclass
class _Scan:
    batches: list[list[_Head]]
    end: int  # end of the last committed batch
    stop: int  # first byte not part of a valid record
    rot: list[int]  # records passed over with a damaged value
    #: Opening must raise: a valid header follows the stop, or a record uses
    #: flag bits of a newer format.
    refuses: bool


def _scan(data: bytes, start: int, last_txid: int, salt: int, floor: int | None = None) -> _Scan:
    """Scan ``data`` (a whole segment file) from ``start`` by section 3.4;
    ``floor``: the synced mark (section 6.2), at or after which damage is an
    unsynced tail (the scan stops there, and nothing that follows refuses)."""
    pos = start
    pending: list[_Head] = []
    batches: list[list[_Head]] = []
    end = start
    rot: list[int] = []
    reserved = False
    while pos < len(data):
        head = _valid_head(data, pos, salt)
        if head is None:
            break
        reserved = reserved or head.reserved_flags
        if pending:
            if head.txid != pending[0].txid:
                break
        elif not last_txid < head.txid <= last_txid + fmt.TXID_WINDOW:
            break
        if not head.value_ok:
            synced = floor is None or pos < floor
            if synced and head.end < len(data) and _valid_head(data, head.end, salt) is not None:
                rot.append(pos)
            else:
                break
        pending.append(head)
        pos = head.end
        if head.commit:
            batches.append(pending)
            pending = []
            last_txid = head.txid
            end = pos
    follows = pos < len(data) and any(
        _valid_head(data, m.start() - 30, salt) is not None
        for m in _CANDIDATE.finditer(data, pos + 1 + 30)
    )
    return _Scan(batches, end, pos, rot, (follows and (floor is None or pos < floor)) or reserved)


def _synced_floor(t: Template, files: dict[str, bytes], new: bytes, salt: int) -> int | None:
    """The synced floor of the damaged active segment (docs/format.md section
    6.2): the end its intact SYNCED mark names, raised to the end of its
    usable hint; None without a mark for it."""
    mark = fmt.decode_synced(files.get(fmt.SYNCED_NAME, b""))
    if mark is None or mark[:2] != (int(t.active[4:20], 16), salt):
        return None
    hint = _usable_hint(t, files, new, salt)
    return mark[2] if hint is None else max(mark[2], hint[0])


def _usable_hint(
    t: Template, files: dict[str, bytes], new: bytes, salt: int
) -> tuple[int, int] | None:
    """``(covered, max_txid)`` of the active segment's hint when a reader
    uses it: the template's own bytes (any damage fails its checksums),
    covering no more than the file holds, its check record (section 5) still
    in place."""
    name = t.active.replace(".log", ".hint")
    hint = files.get(name)
    if hint is None or hint != t.files.get(name):
        return None
    covered, max_txid = struct.unpack_from("<QQ", hint, 24)
    nputs = struct.unpack_from("<Q", hint, HINT_HEADER_SIZE)[0]
    check_offset, check_hcrc = struct.unpack_from("<QI", hint, HINT_HEADER_SIZE + 24)
    if not HEADER <= covered <= len(new):
        return None
    if nputs:
        if check_offset < HEADER or check_offset + RECORD > covered:
            return None
        klen = struct.unpack_from("<H", new, check_offset + 28)[0]
        key = new[check_offset + RECORD : check_offset + RECORD + klen]
        head = new[check_offset : check_offset + RECORD]
        if len(key) != klen or int.from_bytes(head[:4], "little") != check_hcrc:
            return None
        if zlib.crc32(key, zlib.crc32(head[4:], salt)) != check_hcrc:
            return None
    return covered, max_txid


def _moved_states(t: Template, files: dict[str, bytes]) -> list[Allowed] | None:
    """The states a store whose active segment had a range cut out or
    duplicated may show, from a scan of the damaged bytes: from the start
    (no hint), and from the end of the range the hint covers when a reader
    would use the hint. None when the model cannot tell (a SEAL or a key
    that is not UTF-8 among the scanned records: never in a template's
    active segment, so the case is judged by the loose rule)."""
    old = t.files[t.active]
    new = files.get(t.active)
    if new is None or new[:HEADER] != old[:HEADER]:
        return None  # the analysis already requires open to fail
    salt = _salt(t, t.active)
    base_txid = int.from_bytes(old[24:32], "little")
    records = {r.offset: r for r in t.records[t.active]}
    by_bytes = {old[r.offset : r.end]: r for r in t.records[t.active]}
    starts: list[tuple[str, int, int, State]] = [("no hint", HEADER, base_txid, t.base)]
    hint = _usable_hint(t, files, new, salt)
    if hint is not None:
        covered, max_txid = hint
        ends = [HEADER] + [b.end for b in t.batches]
        if covered not in ends:
            return None
        state = t.states[ends.index(covered)]
        starts.append(("hint", covered, max(base_txid, max_txid), state))
    allowed = []
    floor = _synced_floor(t, files, new, salt)
    for how, start, last_txid, base in starts:
        scan = _scan(new, start, last_txid, salt, floor)
        if scan.refuses:
            continue  # valid records follow the damage: opening must raise
        state = dict(base)
        fragile = set()
        for live in base.values():
            if live.seg == t.active:
                rec = records[live.offset]
                if new[rec.offset : rec.end] != old[rec.offset : rec.end]:
                    fragile.add((t.active, live.offset))
        for batch in scan.batches:
            for head in batch:
                if head.kind == fmt.KIND_SEAL:
                    return None
                try:
                    key = head.key.decode("utf-8")
                except UnicodeDecodeError:
                    return None
                if head.kind == fmt.KIND_DELETE:
                    state.pop(key, None)
                    continue
                # Not value_ok though its bytes are a template record's: a
                # value with buffers that moved by other than a multiple of
                # 64 bytes (its buffers are found by file offset, section 4.2).
                rec = by_bytes.get(new[head.offset : head.end]) if head.value_ok else None
                state[key] = Live(UNKNOWN if rec is None else rec.value, t.active, head.offset)
                if rec is None:
                    fragile.add((t.active, head.offset))
        # verify() scans the committed bytes again without the hint.
        check = _scan(new[: scan.end], HEADER, base_txid, salt)
        dirty = check.stop < scan.end or check.end < scan.end or bool(check.rot)
        label = f"moved records, scanned from {start} ({how}): {len(scan.batches)} batches"
        allowed.append(Allowed(label, state, scan.end, frozenset(fragile), dirty))
    return allowed


def analyse(t: Template, ops: list[Op], files: dict[str, bytes]) -> Analysis:
    """Derive the allowed outcomes of a damaged store (``files``) from the template."""
    limits = dict(t.segments)
    shifted = {
        op.file
        for op in ops
        if op.kind in ("remove", "duplicate") and files.get(op.file, b"") != t.files[op.file]
    }
    harmless = True
    why_fail = ""
    damaged: set[tuple[str, int]] = set()
    first_change: dict[str, int] = {}
    for name, old in t.files.items():
        new = files.get(name)
        if new == old or name.endswith(".hint"):
            continue  # hints are optional: nothing may change
        if name not in limits and name != fmt.MANIFEST_NAME:
            continue  # LOCK and COMPACT.LOCK hold no data
        if name == fmt.MANIFEST_NAME:
            why_fail = why_fail or "the MANIFEST changed"
            harmless = False
            continue
        limit = limits[name]
        sealed = name != t.active
        if new is None:
            why_fail = why_fail or f"{name} is missing"
            harmless = False
            continue
        if new[:HEADER] != old[:HEADER]:
            why_fail = why_fail or f"the header of {name} changed"
        if sealed and len(new) < limit:
            why_fail = why_fail or f"{name} is shorter than its sealed length"
        if sealed:
            # Bytes after the sealed length do not count; only those before do.
            harmless = harmless and new[:limit] == old[:limit]
        else:
            # Random bytes or zeros after the active segment's end are a torn
            # tail; a copy of records (appended or duplicated) may hold valid
            # ones, which the store must then refuse to cut away.
            garbage_only = all(
                op.label in ("appended garbage", "appended zeros") for op in ops if op.file == name
            )
            harmless = harmless and new[: len(old)] == old and garbage_only
        if name in shifted:
            continue
        first_change[name] = _first_difference(old, new)
        for rec in t.records[name]:
            if new[rec.offset : rec.end] != old[rec.offset : rec.end]:
                damaged.add((name, rec.offset))
    moved = _moved_states(t, files) if t.active in shifted else None
    if moved is not None:
        allowed = moved
    elif t.active in shifted:
        # What the model cannot scan (see _moved_states): any prefix.
        allowed = [Allowed(f"after {j} active batches", s, None) for j, s in enumerate(t.states)]
    else:
        allowed = _active_states(t, files)
    return Analysis(
        harmless,
        bool(why_fail),
        why_fail,
        any(op.forged for op in ops),
        allowed,
        damaged,
        shifted,
        first_change,
        t.active,
    )


# --------------------------------------------------------------------------
# Observing a damaged store through the public API

ALLOWED_ERRORS = (logshelf.CorruptionError, logshelf.FormatError)


@dataclass
class Observation:
    """What one handle showed. ``stray`` lists everything a damaged store must
    never do (another exception type, a MemoryError anywhere in the chain)."""

    flag: str
    error: str = ""  # the allowed error opening raised, if any
    stray: list[str] = field(default_factory=list)
    keys: list[str] | None = None  # None: keys() raised an allowed error
    length: int | None = None
    iterated: list[str] | None = None
    outcomes: dict[str, tuple[str, Any]] = field(default_factory=dict)
    contains: dict[str, bool] = field(default_factory=dict)
    verify: list[str] | None = None  # None: verify() raised an allowed error


def _chain_has_memory_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__}: {str(exc)[:300]} (at {where})"


def _attempt(obs: Observation, what: str, call: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``call``: ("ok", result), ("absent", None) for KeyError, ("error", message)
    for an allowed error, or ("stray", message) for anything else (recorded)."""
    try:
        return "ok", call()
    except KeyError:
        return "absent", None
    except ALLOWED_ERRORS as exc:
        if _chain_has_memory_error(exc):
            obs.stray.append(f"{what}: MemoryError behind {_describe(exc)}")
            return "stray", str(exc)
        return "error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # anything else is exactly what the fuzz looks for
        obs.stray.append(f"{what}: {_describe(exc)}")
        return "stray", str(exc)


def observe(db: logshelf.Shelf, obs: Observation, universe: list[str]) -> None:
    """len(), keys(), iteration, ``in`` and a read of every key, then verify()."""
    kind, result = _attempt(obs, "len()", lambda: len(db))
    obs.length = result if kind == "ok" else None
    kind, result = _attempt(obs, "keys()", lambda: list(db.keys()))
    obs.keys = result if kind == "ok" else None
    kind, result = _attempt(obs, "iteration", lambda: list(db))
    obs.iterated = result if kind == "ok" else None
    for key in dict.fromkeys([*universe, *(obs.keys or [])]):
        kind, result = _attempt(obs, f"db[{key!r}]", lambda key=key: db[key])  # type: ignore[misc]
        obs.outcomes[key] = ("value" if kind == "ok" else kind, result)
        kind, result = _attempt(obs, f"{key!r} in db", lambda key=key: key in db)  # type: ignore[misc]
        if kind == "ok":
            obs.contains[key] = result
    kind, result = _attempt(obs, "verify()", db.verify)
    obs.verify = result if kind == "ok" else None


def open_and_observe(
    store: Path, flag: str, universe: list[str]
) -> tuple[Observation, logshelf.Shelf | None]:
    """Open ``store`` with ``flag`` and observe it; the handle stays open."""
    obs = Observation(flag)
    kind, result = _attempt(obs, f"open(flag={flag!r})", lambda: logshelf.open(store, flag))
    if kind != "ok":
        obs.error = result if kind == "error" else ""
        return obs, None
    observe(result, obs, universe)
    return obs, result


def _close(obs: Observation, db: logshelf.Shelf) -> None:
    _attempt(obs, "close()", db.close)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mismatches(a: Analysis, allowed: Allowed, obs: Observation) -> list[str]:
    """How ``obs`` differs from ``allowed``; empty: it is that state."""
    state = allowed.state
    out: list[str] = []
    if obs.keys is not None:
        got = set(obs.keys)
        if got != set(state):
            out.append(
                f"keys() has unexpected {sorted(got - set(state))[:5]} and lacks "
                f"{sorted(set(state) - got)[:5]}"
            )
        if len(got) != len(obs.keys):
            out.append("keys() lists a key twice")
        if obs.length is not None and obs.length != len(obs.keys):
            out.append(f"len() is {obs.length} but keys() has {len(obs.keys)}")
        if obs.iterated is not None and obs.iterated != obs.keys:
            out.append("iteration and keys() differ")
    for key, (kind, value) in obs.outcomes.items():
        live = state.get(key)
        if kind == "value":
            if live is None:
                out.append(f"{key!r} read {_short(value)} but must be absent")
            elif not _same(value, live.value):
                out.append(f"{key!r} read {_short(value)}, expected {_short(live.value)}")
        elif kind == "absent":
            if live is not None:
                out.append(f"{key!r} is missing (KeyError), expected {_short(live.value)}")
        elif kind == "error":
            if live is None:
                out.append(f"{key!r} raised {value[:120]} but must be absent")
            elif a.harmless or not a.may_fail_to_read(live, allowed):
                out.append(
                    f"{key!r} raised {value[:160]} although its record "
                    f"({live.seg} at {live.offset}) is intact"
                )
        if key in obs.contains and obs.contains[key] != (live is not None):
            out.append(f"{key!r} in db is {obs.contains[key]}")
    return out


def judge(t: Template, a: Analysis, obs: Observation) -> tuple[list[str], Allowed | None]:
    """Problems with one observation, and the allowed state it matched."""
    problems = [f"flag {obs.flag!r}: {s}" for s in obs.stray]
    if obs.error:
        if a.harmless:
            problems.append(
                f"flag {obs.flag!r}: open raised {obs.error[:200]} although the "
                "damage changes nothing the format counts"
            )
        return problems, None
    if obs.keys is None and not obs.outcomes:
        return problems, None  # opening itself raised something stray
    if a.must_fail:
        problems.append(f"flag {obs.flag!r}: opened although {a.why_fail}")
    allowed = a.allowed
    if a.harmless:
        allowed = [Allowed("the template", t.states[-1], None)]
    best: tuple[str, list[str]] | None = None
    chosen = None
    for candidate in reversed(allowed):
        found = _mismatches(a, candidate, obs)
        if not found:
            chosen = candidate
            break
        if best is None or len(found) < len(best[1]):
            best = (candidate.label, found)
    if chosen is None and best is None:
        problems.append(
            f"flag {obs.flag!r}: opened, but this damage leaves no state to show "
            "(valid records follow damage that no intact hint covers): opening "
            "must raise CorruptionError"
        )
    elif chosen is None and best is not None:
        problems.append(
            f"flag {obs.flag!r}: the store shows a state the damage cannot "
            f"explain (closest: {best[0]}): {'; '.join(best[1][:6])}"
        )
    if obs.verify is not None:
        problems += [f"flag {obs.flag!r}: {p}" for p in _verify_problems(t, a, obs, chosen)]
    return problems, chosen


def _verify_problems(
    t: Template, a: Analysis, obs: Observation, chosen: Allowed | None
) -> list[str]:
    """verify() must be clean for harmless damage and must report damage to
    committed bytes and every key that failed to read."""
    assert obs.verify is not None
    if a.harmless:
        return [f"verify() reports {obs.verify[:2]} for harmless damage"] if obs.verify else []
    if a.forged or obs.verify:
        return []
    failed = [k for k, (kind, _) in obs.outcomes.items() if kind == "error"]
    if failed:
        return [f"verify() is clean although reading {failed[:3]} raised CorruptionError"]
    if chosen is not None and chosen.dirty:
        return [f"verify() is clean although the active segment's records moved ({chosen.label})"]
    for name, first in a.first_change.items():
        if name == t.active:
            end = chosen.active_end if chosen is not None else None
            if end is None:
                continue
        else:
            end = dict(t.segments)[name]
        if HEADER <= first < end:
            return [f"verify() is clean although committed bytes of {name} changed at {first}"]
    return []


def _differ(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    """Do two outcomes of reading a key differ?"""
    return a[0] != b[0] or (a[0] == "value" and not _same(a[1], b[1]))


def _same_observation(a: Observation, b: Observation) -> str:
    """Why two handles on the same bytes disagree ('' when they agree)."""
    if bool(a.error) != bool(b.error):
        return (
            f"flag {a.flag!r} {'raised ' + a.error if a.error else 'opened'}, "
            f"flag {b.flag!r} {'raised ' + b.error if b.error else 'opened'}"
        )
    if a.keys is not None and b.keys is not None and set(a.keys) != set(b.keys):
        return f"keys() differ: {sorted(set(a.keys) ^ set(b.keys))[:5]}"
    for key, (kind, value) in a.outcomes.items():
        other = b.outcomes.get(key)
        if other is not None and _differ((kind, value), other):
            return f"{key!r}: {kind} {_short(value)} vs {other[0]} {_short(other[1])}"
    return ""


# --------------------------------------------------------------------------
# Running a case


def _write_store(path: Path, files: dict[str, bytes]) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def run_case(t: Template, ops: list[Op], workdir: Path) -> list[str]:
    """Damage a copy of ``t`` with ``ops``; open it read-only and, on a fresh
    copy, for writing; judge both. A writer that opened must then take a write,
    and a reader reopening must see the same store plus that write."""
    files = dict(t.files)
    for op in ops:
        op.apply(files)
    a = analyse(t, ops, files)
    store = workdir / "store"

    _write_store(store, files)
    reader, db = open_and_observe(store, "r", t.universe)
    if db is not None:
        _close(reader, db)
    problems, _ = judge(t, a, reader)
    if snapshot(store) != files:
        problems.append("flag 'r': the reader changed files of the store")

    _write_store(store, files)
    writer, db = open_and_observe(store, "w", t.universe)
    found, _ = judge(t, a, writer)
    problems += found
    differ = _same_observation(reader, writer)
    if differ:
        problems.append(f"readers and writers disagree: {differ}")
    if db is not None:
        seen = len(writer.stray)
        kind, _ = _attempt(
            writer, "writing after the open", lambda: db.__setitem__(PROBE_KEY, PROBE_VALUE)
        )
        _close(writer, db)
        problems += [f"flag 'w': {s}" for s in writer.stray[seen:]]
        if kind == "ok":
            problems += _check_reopen(t, writer, store)
        elif kind == "error":
            problems.append("flag 'w': writing after a successful open raised CorruptionError")
    return list(dict.fromkeys(problems))


def _check_reopen(t: Template, writer: Observation, store: Path) -> list[str]:
    """After the writer's probe write: a reader sees what the writer saw, plus the probe."""
    again, db = open_and_observe(store, "r", [*t.universe, PROBE_KEY])
    if db is not None:
        _close(again, db)
    problems = [f"reopen after a write: {s}" for s in again.stray]
    if again.error:
        return [*problems, f"reopen after a write raised {again.error[:200]}"]
    probe = again.outcomes.get(PROBE_KEY)
    if probe is None or probe[0] != "value" or not _same(probe[1], PROBE_VALUE):
        problems.append(f"reopen after a write: the probe write reads back as {probe}")
    if again.keys is not None and writer.keys is not None:
        before = set(writer.keys) | {PROBE_KEY}
        if set(again.keys) != before:
            changed = sorted(set(again.keys) ^ before)[:5]
            problems.append(f"reopen after a write: keys changed: {changed}")
    for key, (kind, value) in writer.outcomes.items():
        now = again.outcomes.get(key)
        if now is not None and _differ((kind, value), now):
            problems.append(
                f"reopen after a write: {key!r} was {kind} {_short(value)}, "
                f"now {now[0]} {_short(now[1])}"
            )
    return problems


# --------------------------------------------------------------------------
# The worker process


def _vm_peak() -> int:
    """Peak virtual memory of this process in bytes (Linux), or 0.

    A huge ``malloc`` raises it even when the pages are never touched and the
    block is freed at once, which is exactly how an over-allocation driven by
    a damaged length field looks (``os.pread(fd, 2**30)`` allocates 1 GiB up
    front and returns a few bytes).
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _vm_size() -> int:
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _start_lease_thread(workdir: Path) -> None:
    """Write once to a scratch store before any case: the first writer lease
    of a process starts its one releaser thread (logshelf._lease), whose
    malloc arena reserves about 128 MiB of address space, untouched. That is
    once per process and unrelated to what a case's damage makes the store
    allocate, which is what the peak check below is for."""
    scratch = workdir.parent / "lease-warm-up"
    with logshelf.open(str(scratch)) as db:
        db["warm"] = 1
    shutil.rmtree(scratch, ignore_errors=True)


def _limit_address_space() -> None:
    """Cap this process's address space a few GiB above its current size, so a
    runaway allocation fails (MemoryError, a failure) instead of taking the
    machine's memory."""
    size = _vm_size()
    if not size:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _rot_target(t: Template, candidates: list[Record]) -> Record:
    """A committed PUT with a value, right before a committed batch that
    holds a live record: losing that batch would show in the store."""
    live = {(v.seg, v.offset) for v in t.states[-1].values()}
    batch_at = {b.start: b for b in t.batches}
    for rec, nxt in itertools.pairwise(candidates):
        batch = batch_at.get(nxt.offset)
        if (
            rec.kind == fmt.KIND_PUT
            and rec.commit
            and rec.end > rec.offset + RECORD + len(rec.key.encode())
            and batch is not None
            and any((t.active, r.offset) in live for r in batch.records)
        ):
            return rec
    raise AssertionError(f"template {t.name}: no record to damage for value-rot")


def scenario_ops(t: Template, name: str) -> list[Op]:
    """Fixed damage for the harness self-tests, all without hints (so that
    opening scans every segment):

    * ``no-hints``: nothing else;
    * ``value-rot``: one bit of a value in the middle of the active segment
      flipped (bit rot: reading that key raises, every other key reads);
    * ``cut-middle``: an unaligned range cut out of the middle of the active
      segment, with whole valid records after it (opening must raise).
    """
    ops = [Op("delete", hint, label="no hints") for hint in t.hints]
    records = t.records[t.active]
    middle = len(records) // 3
    if name == "value-rot":
        rec = _rot_target(t, records[middle:-1])
        value_at = rec.offset + RECORD + len(rec.key.encode())
        ops.append(Op("xor", t.active, value_at, data=b"\x01", label="value bit flipped"))
    elif name == "cut-middle":
        assert len(records) - middle >= 4, f"template {t.name}: too few active records"
        lo, hi = records[middle].offset + 7, records[middle + 1].end - 5
        ops.append(Op("remove", t.active, lo, hi, label="unaligned range"))
    elif name != "no-hints":
        raise KeyError(name)
    return ops


#: Named cases of scenario_ops (a case "TEMPLATE:scenario/NAME").
SCENARIOS = ("no-hints", "value-rot", "cut-middle")


def case_ops(t: Template, case: str, cache: dict[str, dict[str, list[Op]]]) -> list[Op]:
    """The ops of a case named by a seed ("123"), a forged case name,
    "scenario/NAME" (see scenario_ops) or "intact" (no damage: for the
    harness self-test). ``cache`` keeps each template's forged cases, built
    on first use."""
    if case.isdigit():
        return random_case(t, int(case))
    if case == "intact":
        return []
    if case.startswith("scenario/"):
        return scenario_ops(t, case.removeprefix("scenario/"))
    if t.name not in cache:
        cache[t.name] = forged_cases(t)
    return cache[t.name][case]


def _inject_damage_path(kind: str) -> bool:
    """Self-test of the harness: break how a store is opened, scanned,
    indexed or checked, in the modules below the engine (``_segment``,
    ``_index``) and the public API; return False for a kind that is not one
    of these."""
    from logshelf import _index, _segment

    if kind == "scan-skips-batch-after-rot":
        # After a record whose value is damaged, silently leave out the next batch.
        original_iter = _segment.SegmentScan.__iter__

        def iterate(self: _segment.SegmentScan) -> Iterator[list[_segment.ScannedRecord]]:
            skipped = False
            for batch in original_iter(self):
                if self.damaged and not skipped and batch[0].offset > self.damaged[0]:
                    skipped = True
                    continue
                yield batch

        _segment.SegmentScan.__iter__ = iterate  # type: ignore[method-assign]
    elif kind == "damage-taken-for-torn-tail":
        # Never look for valid records after the point where a scan stopped:
        # damage in the middle of the active segment passes for a torn tail.
        def find_nothing(self: _segment.Segment, start: int, limit: int) -> int | None:
            return None

        _segment.Segment.find_valid_record = find_nothing  # type: ignore[method-assign]
    elif kind == "index-drops-last-batch":
        original_apply = _index.apply_scan

        class Replay:
            """The batches of a finished scan, all but the last."""

            def __init__(self, scan: _segment.SegmentScan) -> None:
                self.segment = scan.segment
                self.batches = list(scan)[:-1]

            def __iter__(self) -> Iterator[list[_segment.ScannedRecord]]:
                return iter(self.batches)

        def apply(scan: Any, slot: int, index: dict[str, int], deletes: set[str] | None) -> int:
            return original_apply(Replay(scan), slot, index, deletes)  # type: ignore[arg-type]

        _index.apply_scan = apply  # type: ignore[assignment]
    elif kind == "verify-sees-nothing":
        logshelf.Shelf.verify = lambda self, progress=None: []  # type: ignore[method-assign]
    else:
        return False
    return True


def _inject(kind: str) -> None:
    """Self-test of the harness: break reads on purpose, in one of the ways the
    fuzz must catch, to show that it does."""
    if _inject_damage_path(kind):
        return
    from logshelf._engine import Engine

    original = Engine.get
    allocated: list[bool] = []

    def get(self: Engine, key: str) -> bytes | None:
        data = original(self, key)
        if kind == "resurrect" and key == NEVER_WRITTEN[0]:
            return pickle.dumps("a value nobody wrote")
        if data is None or key == PROBE_KEY:
            return data
        if kind == "wrong-value":
            return pickle.dumps("not the value that was stored")
        if kind == "allocate" and not allocated:
            allocated.append(True)
            bytearray(ALLOCATION_LIMIT * 2)  # allocated and freed at once: only the peak shows
        elif kind == "stray-exception":
            raise struct.error("unpack requires a buffer of 32 bytes")
        elif kind == "memory-error":
            raise logshelf.CorruptionError("value does not decompress") from MemoryError()
        elif kind == "hang":
            time.sleep(3600)
        return data

    Engine.get = get  # type: ignore[method-assign]


#: Exit status of a worker that stops after a case that allocated too much,
#: so that a fresh process measures the next case (the peak never comes down).
RESTART = 3


def worker(job_path: str) -> None:
    """Run the cases of a job file, one JSON line per case on stdout:
    ``{"start": id}`` before it, ``{"done": id, "ops": [...], "problems": [...]}``
    after it. A case that runs longer than the job's ``alarm`` seconds ends
    the process (SIGALRM's default action); the parent then knows from the
    last "start" which case hung, and starts a new worker for the rest."""
    with open(job_path) as src:
        job = json.load(src)
    logging.getLogger("logshelf").setLevel(logging.ERROR)  # "cut a torn tail" is expected
    templates = load_templates(Path(job["templates"]))
    workdir = Path(job["workdir"])
    if job.get("inject"):
        _inject(job["inject"])
    _start_lease_thread(workdir)
    _limit_address_space()
    forged: dict[str, dict[str, list[Op]]] = {}
    for case_id in job["cases"]:
        print(json.dumps({"start": case_id}), flush=True)
        name, case = case_id.split(":", 1)
        t = templates[name]
        ops: list[Op] = []
        peak = _vm_peak()
        signal.alarm(job["alarm"])
        try:
            ops = case_ops(t, case, forged)
            problems = run_case(t, ops, workdir)
        except Exception as exc:  # a harness bug, or an error escaping the guards
            problems = [f"the case itself failed: {''.join(traceback.format_exception(exc))}"]
        signal.alarm(0)
        grown = _vm_peak() - peak
        if grown > ALLOCATION_LIMIT:
            problems.append(
                f"peak virtual memory grew by {grown >> 20} MiB during the case: a length "
                "field made the store allocate far more than the files hold"
            )
        print(
            json.dumps(
                {"done": case_id, "ops": [op.describe() for op in ops], "problems": problems}
            ),
            flush=True,
        )
        if grown > ALLOCATION_LIMIT:
            sys.exit(RESTART)


# --------------------------------------------------------------------------
# The parent side: workers, watchdog, results


@dataclass
class Failure:
    case: str
    ops: list[str]
    problems: list[str]

    def report(self) -> str:
        template, case = self.case.split(":", 1)
        lines = [f"case {self.case}:"]
        lines += [f"    damage: {op}" for op in self.ops]
        lines += [f"    problem: {p}" for p in self.problems[:8]]
        lines.append(f"    replay: PYTHONPATH=tests python -m {MODULE} replay {template} '{case}'")
        return "\n".join(lines)


@dataclass
class RunResult:
    failures: list[Failure]
    done: int
    seconds: float

    def message(self, limit: int = 12) -> str:
        failures = self.failures
        head = f"{len(failures)} of {self.done} fuzz cases failed"
        body = "\n".join(f.report() for f in failures[:limit])
        more = len(failures) - limit
        return f"{head}\n{body}" + (f"\n... and {more} more" if more > 0 else "")


def _child_environment() -> dict[str, str]:
    """This environment, with the directory ``MODULE`` imports from put first
    on PYTHONPATH (kept, so that a run against another source tree, e.g.
    ``PYTHONPATH=/elsewhere/src``, reaches the workers too)."""
    root = str(Path(__file__).resolve().parents[MODULE.count(".")])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


@contextlib.contextmanager
def scratch_directory(fallback: Path) -> Iterator[Path]:
    """A directory for the damaged copies: on tmpfs when there is one (the
    fuzz is about damage, not durability, and fsyncs there cost nothing)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="logshelf-fuzz-", dir=shm))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        fallback.mkdir(parents=True, exist_ok=True)
        yield fallback


class _Worker:
    """One worker process and the cases it still has to run."""

    def __init__(self, slot: int, cases: list[str], job: dict[str, Any], workdir: Path) -> None:
        self.slot = slot
        self.remaining = list(cases)
        self.job = job
        self.workdir = workdir / f"worker{slot}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.current: str | None = None
        self.buf = b""
        self.ops: dict[str, list[str]] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.last = time.monotonic()

    def start(self) -> None:
        """Start a process for the remaining cases."""
        job = {**self.job, "workdir": str(self.workdir / "store-dir"), "cases": self.remaining}
        job_path = self.workdir / "job.json"
        job_path.write_text(json.dumps(job))
        env = _child_environment()
        with open(self.workdir / "stderr.txt", "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "worker", str(job_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.current = None
        self.buf = b""
        self.last = time.monotonic()

    def stderr_tail(self) -> str:
        return (self.workdir / "stderr.txt").read_bytes()[-3000:].decode(errors="replace")


def run_cases(
    templates: Path,
    cases: list[str],
    workdir: Path,
    *,
    workers: int = 2,
    case_timeout: int = 60,
    inject: str = "",
) -> RunResult:
    """Run ``cases`` ("template:seed" or "template:forged-name") in worker
    subprocesses and collect the failures.

    A case running longer than ``case_timeout`` seconds is a hang; a case
    that kills its worker is reported with the worker's stderr; after either,
    and after a case that allocated too much, a new worker takes the rest.
    """
    started = time.monotonic()
    job = {"templates": str(templates), "inject": inject, "alarm": case_timeout}
    pool = [_Worker(i, cases[i::workers], job, workdir) for i in range(workers)]
    failures: list[Failure] = []
    done = 0
    selector = selectors.DefaultSelector()
    for w in pool:
        if w.remaining:
            w.start()
            selector.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[union-attr]
    try:
        while selector.get_map():
            for key, _ in selector.select(timeout=1.0):
                w = key.data
                assert w.proc is not None and w.proc.stdout is not None
                chunk = w.proc.stdout.read()
                w.last = time.monotonic()
                if chunk:
                    w.buf += chunk
                    *lines, w.buf = w.buf.split(b"\n")
                    for line in lines:
                        msg = json.loads(line)
                        if "start" in msg:
                            w.current = msg["start"]
                        else:
                            w.current = None
                            w.remaining.remove(msg["done"])
                            done += 1
                            if msg["problems"]:
                                failures.append(Failure(msg["done"], msg["ops"], msg["problems"]))
                    continue
                # End of output: the worker finished, or stopped early.
                selector.unregister(w.proc.stdout)
                w.proc.stdout.close()
                status = w.proc.wait()
                if w.current is not None:
                    if status == -signal.SIGALRM:
                        problem = f"hang: the case did not finish within {case_timeout} s"
                    else:
                        problem = (
                            f"the worker died (status {status}) in this case:\n{w.stderr_tail()}"
                        )
                    failures.append(Failure(w.current, [], [problem]))
                    w.remaining.remove(w.current)
                    done += 1
                elif status not in (0, RESTART):
                    failures.append(Failure("?:?", [], [f"a worker failed: {w.stderr_tail()}"]))
                    w.remaining = []
                if w.remaining:
                    w.start()
                    selector.register(w.proc.stdout, selectors.EVENT_READ, w)
            for w in pool:
                # A worker stuck where SIGALRM cannot end it (it never should be).
                if (
                    w.proc is not None
                    and w.proc.poll() is None
                    and time.monotonic() - w.last > case_timeout + 60
                ):
                    w.proc.kill()
    finally:
        for w in pool:
            if w.proc is not None:
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
                if w.proc.stdout is not None and not w.proc.stdout.closed:
                    w.proc.stdout.close()
    return RunResult(failures, done, time.monotonic() - started)


# --------------------------------------------------------------------------
# Command line: the worker, template building, and replaying one case


def _replay(template: str, case: str) -> int:
    """Rebuild the templates, run one case in this process, print the verdict."""
    with tempfile.TemporaryDirectory(prefix="logshelf-fuzz-") as tmp:
        build_templates(Path(tmp) / "templates")
        t = load_templates(Path(tmp) / "templates")[template]
        ops = case_ops(t, case, {})
        for op in ops:
            print(f"damage: {op.describe()}")
        logging.getLogger("logshelf").setLevel(logging.ERROR)
        problems = run_case(t, ops, Path(tmp) / "work")
        for problem in problems:
            print(f"problem: {problem}")
        print("FAILED" if problems else "passed")
        return 1 if problems else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"] and len(argv) == 2:
        worker(argv[1])
        return 0
    if argv[:1] == ["build"] and len(argv) == 2:
        _build_templates_here(Path(argv[1]))
        return 0
    if argv[:1] == ["replay"] and len(argv) == 3:
        return _replay(argv[1], argv[2])
    print(
        f"usage: python -m {MODULE} worker JOB | build DIR | replay TEMPLATE CASE", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
