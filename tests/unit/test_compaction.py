"""Compaction: space is reclaimed, nothing live is lost, nothing dead returns."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._locking import ExclusiveFileLock

SEG = 4096  # small segments: many rollovers with little data


def disk_bytes(path: Path) -> int:
    """Bytes of every segment file of the store (what compaction must shrink)."""
    return sum(p.stat().st_size for p in path.glob("seg-*.log"))


def live_bytes(model: dict[str, object], db: logshelf.Shelf) -> int:
    """What the live data costs at least: each record's header, key and pickle."""
    import pickle

    return sum(
        32 + len(k.encode()) + len(pickle.dumps(v, protocol=logshelf.DEFAULT_PROTOCOL))
        for k, v in model.items()
    )


def overwrite_heavy(db: logshelf.Shelf, rounds: int = 30, keys: int = 40) -> dict[str, object]:
    """Overwrite ``keys`` keys ``rounds`` times and delete some; return the model."""
    model: dict[str, object] = {}
    for r in range(rounds):
        for i in range(keys):
            value = {"round": r, "i": i, "pad": "p" * (i % 7) * 10}
            db[f"key{i:03d}"] = value
            model[f"key{i:03d}"] = value
        if r % 5 == 4:
            del db[f"key{r % keys:03d}"]
            del model[f"key{r % keys:03d}"]
    return model


def test_compaction_reclaims_space_and_keeps_every_live_value(store_path: Path) -> None:
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        model = overwrite_heavy(db)
        before = disk_bytes(store_path)
        result = db.compact()
        assert result.compacted, result
        after = disk_bytes(store_path)
        live = live_bytes(model, db)
        assert after < before / 10, (before, after)
        # The 64-byte headers of the few segment files are the only overhead.
        assert after <= 1.3 * live + 4 * 64, (after, live)
        assert dict(db.items()) == model
        assert db.verify() == []
        assert result.records_copied == len(model)
        assert result.bytes_before >= before and result.bytes_after == db.stats()["segment_bytes"]
    with logshelf.open(store_path, "r") as db:
        assert dict(db.items()) == model
        assert db.verify() == []


def test_deleted_and_overwritten_values_never_come_back(store_path: Path) -> None:
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        for i in range(200):
            db[f"gone{i}"] = i
        for i in range(200):
            del db[f"gone{i}"]
        db["kept"] = "old"
        db["kept"] = "new"
        db.compact()
        db.compact()  # twice: compacting compacted segments must hold too
        assert list(db) == ["kept"] and db["kept"] == "new"
    with logshelf.open(store_path) as db:
        assert list(db) == ["kept"] and db["kept"] == "new"
        db["after"] = 1
    with logshelf.open(store_path) as db:
        assert dict(db) == {"kept": "new", "after": 1}


def test_compaction_files_commit_with_hints(store_path: Path) -> None:
    """The outputs come with hints (a reopen reads no values) and the inputs
    and their hints are gone."""
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        overwrite_heavy(db, rounds=5)
        inputs = {p.name for p in store_path.glob("seg-*")}
        db.compact()
        names = {p.name for p in store_path.glob("seg-*")}
    assert not inputs & names  # every file that existed before was an input
    manifest = fmt.decode_manifest((store_path / "MANIFEST").read_bytes(), "MANIFEST")
    listed = {fmt.segment_name(sid) for sid, _ in manifest.segments}
    assert {n for n in names if n.endswith(".log")} == listed
    for segment_id, _ in manifest.segments[:-2]:  # outputs (the last two: sealed at switch, active)
        assert (store_path / fmt.hint_name(segment_id)).exists()
    assert not {n for n in inputs if n.endswith(".log")} & listed


def test_batches_survive_compaction_atomically(store_path: Path) -> None:
    """A transaction's records keep one batch through compaction, and a
    reopen (which validates batch structure) accepts the outputs."""
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        with db.transaction():
            for i in range(300):
                db[f"t{i}"] = i
        db.update({f"u{i}": i for i in range(50)})
        for i in range(100):
            db["churn"] = i
        db.compact()
    with logshelf.open(store_path) as db:
        assert len(db) == 351 and db["t299"] == 299 and db["churn"] == 99
        assert db.verify() == []


def test_txids_are_renumbered_so_gaps_never_break_a_scan(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two kept records lie any number of dropped batches. Compaction
    renumbers batches densely so that the scan's plausibility window (2**32
    in production; 8 here) can never be exceeded by the gap."""
    monkeypatch.setattr(fmt, "TXID_WINDOW", 8)
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        db["first"] = 1
        for i in range(100):
            db["churn"] = i
        db["last"] = 2
        db.compact()
    with logshelf.open(store_path) as db:
        assert dict(db) == {"first": 1, "churn": 99, "last": 2}
        assert db.verify() == []


def test_compacting_an_empty_or_fresh_store(store_path: Path) -> None:
    with logshelf.open(store_path, auto_compact=None) as db:
        result = db.compact()
        assert not result.compacted and "no sealed segments" in result.reason
        db["a"] = 1
        assert db.compact().compacted
        assert dict(db) == {"a": 1}
        for _ in range(3):
            db.compact()
        assert dict(db) == {"a": 1}
        assert db.stats()["segments"] <= 4


def test_compact_refuses_read_only_and_transactions(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db["a"] = 1
        with db.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
            db.compact()
        assert dict(db) == {"a": 1}
    with logshelf.open(store_path, "r") as db, pytest.raises(logshelf.ReadOnlyError):
        db.compact()


def test_auto_compact_validation(store_path: Path) -> None:
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="auto_compact"):
            logshelf.open(store_path, auto_compact=bad)
    assert not store_path.exists()


def test_automatic_compaction_bounds_disk_use(store_path: Path) -> None:
    """With the default threshold, an overwrite-heavy workload keeps disk use
    near the live data without anyone calling compact()."""
    with logshelf.open(store_path, max_segment_size=SEG) as db:
        model = overwrite_heavy(db, rounds=60)
        # Dead data is collected once it passes half of the sealed bytes, so
        # the store stays within about 2x the live data plus the segments
        # not yet sealed (one active, one just sealed).
        assert disk_bytes(store_path) <= 2 * live_bytes(model, db) + 3 * SEG
        assert dict(db.items()) == model
    with logshelf.open(store_path) as db:
        assert dict(db.items()) == model


def test_no_automatic_compaction_when_disabled(store_path: Path) -> None:
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        overwrite_heavy(db, rounds=60)
        generation = db.stats()["generation"]
        segments = db.stats()["segments"]
    # Without compaction every rollover adds a segment: one per generation.
    assert segments == generation


def _records(data: bytes) -> list[tuple[int, fmt.RecordHeader, str]]:
    """``(offset, header, key)`` of every record of an undamaged segment file."""
    out = []
    pos = fmt.SEGMENT_HEADER.size
    while pos < len(data):
        header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        key = data[pos + 32 : pos + 32 + header.klen].decode()
        out.append((pos, header, key))
        pos += 32 + header.klen + header.vlen
    return out


def _files(path: Path) -> dict[str, bytes]:
    """Every file of a store and its bytes, but only the magic of CHANGES:
    its counter moves with every hold of the writer lock."""
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    files[fmt.CHANGES_NAME] = files[fmt.CHANGES_NAME][: fmt.CHANGES_COUNTER.start]
    return files


def test_damaged_input_stops_compaction_and_changes_nothing(store_path: Path) -> None:
    """A compaction that meets a damaged record stops, deletes every output
    it had made and leaves the data as it was. The only changes allowed are
    those of the rollover that starts any compaction (the active segment
    sealed: its SEAL record, its hint, the new active segment, the
    MANIFEST) and the COMPACT.LOCK file."""
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        overwrite_heavy(db, rounds=3)
        db.compact()
        for i in range(20):  # into new segments; key020.. stay in the compacted ones
            db[f"key{i:03d}"] = {"late": i, "pad": "q" * 300}
        expected = dict(db.items())
    # The victim: the live record that comes last in log order among the
    # sealed segments, so that the copy has made an output before it fails.
    manifest = fmt.decode_manifest((store_path / fmt.MANIFEST_NAME).read_bytes(), "MANIFEST")
    live: dict[str, tuple[int, str, int]] = {}  # key -> (slot, segment file, value offset)
    for slot, (segment_id, _) in enumerate(manifest.segments):
        name = fmt.segment_name(segment_id)
        for offset, header, key in _records((store_path / name).read_bytes()):
            if header.kind == fmt.KIND_PUT:
                live[key] = (slot, name, offset + 32 + header.klen)
            elif header.kind == fmt.KIND_DELETE:
                live.pop(key, None)
    sealed = len(manifest.segments) - 1
    victim = max((k for k in live if live[k][0] < sealed), key=lambda k: live[k][::2])
    assert sum(1 for slot, _, _ in live.values() if slot < sealed) > 1
    _, victim_file, value_at = live[victim]
    data = bytearray((store_path / victim_file).read_bytes())
    data[value_at + 2] ^= 0xFF
    (store_path / victim_file).write_bytes(bytes(data))

    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        before = _files(store_path)
        with pytest.raises(logshelf.CorruptionError, match="compaction stopped"):
            db.compact()
        after = _files(store_path)
        assert db.verify() != []
        with pytest.raises(logshelf.CorruptionError):
            db[victim]
        others = {k: v for k, v in expected.items() if k != victim}
        assert {k: db[k] for k in others} == others
    new_manifest = fmt.decode_manifest(after[fmt.MANIFEST_NAME], "MANIFEST")
    old_active = fmt.segment_name(manifest.active_id)
    rollover = {
        fmt.segment_name(new_manifest.active_id),
        fmt.hint_name(manifest.active_id),
        fmt.COMPACT_LOCK_NAME,
    }
    assert set(before) <= set(after), "a file was removed"
    assert set(after) - set(before) <= rollover, "a file other than the rollover's was left"
    changed = {name for name in before if after[name] != before[name]}
    # The sealed segment's hint is rewritten to cover its SEAL; the synced
    # mark names the new active segment.
    rolled = {fmt.MANIFEST_NAME, old_active, fmt.hint_name(manifest.active_id), fmt.SYNCED_NAME}
    assert changed <= rolled, changed
    assert after[old_active].startswith(before[old_active])  # at most a SEAL appended
    # The rollover kept every segment: the old set, then the new active one.
    assert [sid for sid, _ in new_manifest.segments[:-1]] == [sid for sid, _ in manifest.segments]
    with logshelf.open(store_path, "r") as db:
        assert {k: db[k] for k in others} == others


def test_other_handles_keep_working_and_adopt_the_new_segments(
    store_path: Path, open_files: Any
) -> None:
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer:
        model = overwrite_heavy(writer, rounds=10)
        reader = logshelf.open(store_path, "r")
        other = logshelf.open(store_path, max_segment_size=SEG, auto_compact=None)
        try:
            assert dict(reader.items()) == model
            writer.compact()
            # Both see the same data, read from the new segment set.
            assert dict(reader.items()) == model
            assert dict(other.items()) == model
            other["from-other"] = 1
            writer["from-writer"] = 2
            assert reader["from-other"] == 1 and reader["from-writer"] == 2
            assert reader.stats()["generation"] == writer.stats()["generation"]
            # Every handle dropped its descriptors on the deleted inputs.
            assert open_files(store_path, deleted=True) == []
        finally:
            reader.close()
            other.close()


def test_concurrent_compactions_in_one_process_do_not_collide(store_path: Path) -> None:
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        model = overwrite_heavy(db, rounds=20)
    handles = [logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) for _ in range(3)]
    errors: list[BaseException] = []

    def run(db: logshelf.Shelf) -> None:
        try:
            for _ in range(5):
                db.compact()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in handles:
        assert dict(h.items()) == model
        h.close()
    assert errors == []
    with logshelf.open(store_path) as db:
        assert dict(db.items()) == model and db.verify() == []


def test_garbage_of_a_crashed_compaction_is_collected(store_path: Path) -> None:
    """Outputs left by a compaction that died before its switch are not
    referenced and go at the next writer's open, unless a compaction runs."""
    with logshelf.open(store_path) as db:
        db["a"] = 1
    stray = store_path / fmt.segment_name(999)
    stray.write_bytes(fmt.encode_segment_header(999, 0))
    lock = ExclusiveFileLock(str(store_path / fmt.COMPACT_LOCK_NAME))
    assert lock.acquire(0)
    try:
        with logshelf.open(store_path) as db:  # a compaction "runs": keep it
            assert stray.exists()
    finally:
        lock.release()
    with logshelf.open(store_path) as db:
        assert not stray.exists()
        assert dict(db) == {"a": 1}


def _value(key: str) -> bytes:
    return f"value of {key} ".encode() * 20


class _DropOdd:
    """A ``Drop`` leaving out keys whose number is odd; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.sizes: list[int] = []

    def select(self, keys: list[str], sizes: list[int], read: Any) -> None:
        self.seen = list(keys)
        self.sizes = list(sizes)
        assert all(read(key) == _value(key) for key in keys)

    def __call__(self, key: str, value: bytes, codec: int) -> bool:
        return int(key[1:]) % 2 == 1


def test_compacting_only_the_oldest_segments_with_a_drop(store_path: Path) -> None:
    """Eviction's compaction: only the first segments are rewritten, without the
    records the drop chose; later segments and the active one are untouched."""
    with logshelf.open(store_path, max_segment_size=4096, auto_compact=None) as db:
        engine = db._engine
        for i in range(100):
            engine.put(f"k{i}", 0, _value(f"k{i}"), 0)
        before = engine.stats()
        assert before["segments"] >= 4
        later = {f"k{i}": engine.get(f"k{i}") for i in range(100)}
        drop = _DropOdd()
        result = engine.compact(max_inputs=2, drop=drop)
        assert result.compacted
        # The drop saw the live keys of exactly the two oldest segments, in log order.
        assert drop.seen == [f"k{i}" for i in range(len(drop.seen))]
        assert all(size > 0 for size in drop.sizes)
        gone = {key for key in drop.seen if int(key[1:]) % 2}
        assert gone and set(db.keys()) == set(later) - gone
        for key in set(later) - gone:
            assert engine.get(key) == later[key]
        assert engine.verify() == []
    with logshelf.open(store_path, "r") as again:  # and so it stays after reopening
        assert set(again.keys()) == set(later) - gone


def test_compaction_syncs_the_active_segment_before_each_lock_hold(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan and the switch both roll over, and a rollover syncs the
    active segment under the writer lock: compaction syncs it first, outside
    the lock, so that the sync under it has little left to write."""
    from logshelf._segment import Segment

    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        model = overwrite_heavy(db, rounds=5)
        lock = db._engine._writer.lock
        syncs: list[bool] = []
        sync = Segment.sync

        def spy(self: Segment) -> None:
            syncs.append(lock.busy())
            sync(self)

        monkeypatch.setattr(Segment, "sync", spy)
        assert db.compact().compacted
        # Unlocked before and after catching up, then locked: for the plan,
        # and again for the switch.
        assert syncs[:3] == [False, False, True] and syncs.count(False) >= 4, syncs
        monkeypatch.undo()
        assert dict(db.items()) == model
