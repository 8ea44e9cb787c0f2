"""verify() finds damage; salvage() copies what is intact and reports the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt


def _record_offsets(segment: Path) -> list[int]:
    """Offsets of the records in a segment file (assumed undamaged)."""
    data = segment.read_bytes()
    offsets = []
    pos = fmt.SEGMENT_HEADER.size
    while pos < len(data):
        header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        offsets.append(pos)
        pos += 32 + header.klen + header.vlen
    return offsets


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def filled(store_path: Path) -> Path:
    with logshelf.open(store_path) as db:
        for i in range(20):
            db[f"key{i:02d}"] = {"n": i, "pad": "x" * 50}
    for hint in [*store_path.glob("*.hint"), store_path / "INDEX"]:
        hint.unlink(missing_ok=True)  # so that opening scans every record
    return store_path


def test_verify_is_empty_for_a_healthy_store(filled: Path) -> None:
    """A store that was written normally verifies clean, also after rollovers."""
    with logshelf.open(filled, max_segment_size=4096) as db:
        for i in range(200):
            db[f"more{i}"] = i
        assert db.verify() == []


def test_verify_reports_a_damaged_value(filled: Path) -> None:
    """A flipped bit inside a value in the middle is reported by verify() and
    by reading that key."""
    segment = next(filled.glob("seg-*.log"))
    offset = _record_offsets(segment)[5]
    _flip(segment, offset + 32 + 5 + 10)
    with logshelf.open(filled, "r") as db:
        problems = db.verify()
        assert any("key05" in p for p in problems)
        with pytest.raises(logshelf.CorruptionError, match="key05"):
            db["key05"]
        assert db["key06"] == {"n": 6, "pad": "x" * 50}


def test_damaged_header_mid_segment_refuses_open_and_salvage_recovers(
    filled: Path, tmp_path: Path
) -> None:
    """A damaged header with valid records after it makes open() raise; salvage copies the rest."""
    segment = next(filled.glob("seg-*.log"))
    offset = _record_offsets(segment)[7]
    _flip(segment, offset + 10)  # inside the txid field: header checksum fails
    with pytest.raises(logshelf.CorruptionError, match="salvage"):
        logshelf.open(filled, "r")
    before = segment.read_bytes()
    report = logshelf.salvage(filled, tmp_path / "copy.db")
    assert segment.read_bytes() == before  # the source is only read
    assert report.keys == 19
    assert any(start == offset for _, start, _, _ in report.skipped)
    with logshelf.open(tmp_path / "copy.db", "r") as copy:
        assert "key07" not in copy
        assert {k: v["n"] for k, v in copy.items()} == {
            f"key{i:02d}": i for i in range(20) if i != 7
        }
        assert copy.verify() == []


@pytest.mark.parametrize(
    "damage", ["first-record-zeroed", "first-record-flags-flipped", "first-record-txid-flipped"]
)
def test_salvage_never_copies_part_of_a_batch(filled: Path, tmp_path: Path, damage: str) -> None:
    """A batch whose first record is damaged is skipped whole: its surviving
    records (and commit) are not copied alone, and the batches after it are.

    The txid flip is the case that only the COMMIT condition of salvage's
    gap check catches: the damaged record's lengths still describe the gap
    exactly and its txid now differs from the batch's, so without that
    condition the gap would pass for a whole batch of its own."""
    with logshelf.open(filled) as db:
        db["x"] = "old x"
        db.update({"x": "new x", "y": "new y", "z": "new z"})  # one batch
        db["after"] = 1
    for hint in filled.glob("*.hint"):
        hint.unlink()
    segment = next(filled.glob("seg-*.log"))
    first = _record_offsets(segment)[21]  # 20 keys, old x, then the batch
    data = bytearray(segment.read_bytes())
    if damage == "first-record-zeroed":
        data[first : first + 40] = bytes(40)
    elif damage == "first-record-txid-flipped":
        data[first + 8] ^= 0x01  # the low byte of the txid: the header checksum fails
    else:
        data[first + 31] |= fmt.FLAG_COMMIT  # claims to end a batch: checksum fails
    segment.write_bytes(bytes(data))
    report = logshelf.salvage(filled, tmp_path / "copy.db")
    assert any("right after damage" in why for _, _, _, why in report.skipped), report
    with logshelf.open(tmp_path / "copy.db", "r") as copy:
        assert copy["x"] == "old x"
        assert "y" not in copy and "z" not in copy
        assert copy["after"] == 1
        assert copy["key19"] == {"n": 19, "pad": "x" * 50}


def test_salvage_drops_keys_whose_latest_value_is_damaged(filled: Path, tmp_path: Path) -> None:
    """A damaged latest value is reported as lost and never replaced by an older value."""
    with logshelf.open(filled) as db:
        db["key03"] = "newer"
        db["tail"] = 1
    segment = next(filled.glob("seg-*.log"))
    newer = _record_offsets(segment)[-2]
    _flip(segment, newer + 32 + 5 + 3)
    report = logshelf.salvage(filled, tmp_path / "copy.db")
    assert report.lost_keys == ["key03"]
    with logshelf.open(tmp_path / "copy.db", "r") as copy:
        assert "key03" not in copy
        assert copy["tail"] == 1


def test_salvage_refuses_an_existing_destination(filled: Path, tmp_path: Path) -> None:
    """Salvage never writes over an existing path."""
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        logshelf.salvage(filled, tmp_path / "taken")


def test_stats_describe_the_store(store_path: Path) -> None:
    """stats() counts live keys, segments and committed bytes, and follows writes."""
    with logshelf.open(store_path, max_segment_size=4096) as db:
        assert db.stats()["keys"] == 0
        for i in range(100):
            db[f"k{i}"] = "v" * 50
        del db["k0"]
        stats = db.stats()
        assert stats["keys"] == 99
        assert stats["segments"] == len(list(store_path.glob("seg-*.log"))) > 1
        assert stats["segment_bytes"] == sum(p.stat().st_size for p in store_path.glob("seg-*.log"))
        assert stats["last_txid"] >= 101


def test_cutting_a_torn_tail_is_logged(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A writer that cuts a torn tail says so on the "logshelf" logger, naming the file."""
    with logshelf.open(store_path) as db:
        db["a"] = 1
    segment = next(store_path.glob("seg-*.log"))
    with segment.open("ab") as f:
        f.write(b"\x00" * 100)
    with caplog.at_level("WARNING", logger="logshelf"):
        logshelf.open(store_path).close()
    assert any("torn tail" in r.message and str(segment) in r.message for r in caplog.records)


@pytest.mark.parametrize("byte", range(16, 24))
def test_damaged_length_in_hinted_segment_raises_not_memory_error(
    store_path: Path, byte: int
) -> None:
    """A record length damaged after its segment was indexed from a hint (no scan
    checks it) raises CorruptionError on read; it never asks for the memory it claims."""
    # Segments large enough (> 256 KiB) that reads are served from an mmap.
    with logshelf.open(store_path, max_segment_size=300_000) as db:
        db.update({f"k{i:03d}": "v" * 60 for i in range(4000)})
        db.update({f"x{i:03d}": "v" * 60 for i in range(4000)})
    first = store_path / "seg-0000000000000001.log"
    assert (store_path / "seg-0000000000000001.hint").exists()
    offset = _record_offsets(first)[3]
    data = bytearray(first.read_bytes())
    data[offset + byte] ^= 0x7F  # inside vlen (bytes 16..23 of the header)
    first.write_bytes(bytes(data))
    with logshelf.open(store_path, "r") as db:
        assert db["k004"] == "v" * 60  # maps the segment
        key = "k003"
        with pytest.raises(logshelf.CorruptionError, match=key):
            db[key]


def test_salvage_without_manifest_orders_segments_by_base_txid(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction's outputs get ids above the segment that was active during
    its copy, yet hold older values. With the MANIFEST unreadable, salvage must
    replay by base txid: the value written during the copy wins and the key
    deleted during it stays deleted."""
    from logshelf import _compaction

    with logshelf.open(store_path, max_segment_size=4096, auto_compact=None) as db:
        for i in range(60):
            db[f"key{i:02d}"] = {"n": i, "pad": "x" * 50}
        other = logshelf.open(store_path, auto_compact=None)
        real_copy = _compaction.copy

        def copy_while_another_handle_writes(*args: Any, **kwargs: Any) -> Any:
            # The plan has sealed the inputs: these records go into the new
            # active segment, whose id is below the reserved output ids.
            other["key01"] = "written during the copy"
            del other["key02"]
            return real_copy(*args, **kwargs)

        monkeypatch.setattr(_compaction, "copy", copy_while_another_handle_writes)
        try:
            assert db.compact().compacted
        finally:
            other.close()
    manifest = fmt.decode_manifest((store_path / "MANIFEST").read_bytes(), "MANIFEST")
    ids = [segment_id for segment_id, _ in manifest.segments]
    # The situation this test is about: log order is not id order.
    assert ids != sorted(ids), ids
    (store_path / "MANIFEST").write_bytes(b"garbage")
    report = logshelf.salvage(store_path, tmp_path / "copy.db")
    assert any("unreadable MANIFEST" in why for _, _, _, why in report.skipped), report
    with logshelf.open(tmp_path / "copy.db", "r") as copy:
        assert copy["key01"] == "written during the copy"
        assert "key02" not in copy
        assert copy["key59"] == {"n": 59, "pad": "x" * 50}
        assert len(copy) == 59
