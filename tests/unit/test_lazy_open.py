"""Opening from the INDEX file (issue 15): the lazy index answers exactly as
the full one would, before and after it materializes, while other handles
and processes write, delete and compact, and after crashes; a damaged,
stale, foreign or missing INDEX file is ignored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf import _index_file
from logshelf._index_file import TAIL_LIMIT
from logshelf._lazy_index import LazyIndex
from logshelf._view import View

SRC = str(Path(logshelf.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def small_stores_get_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """These stores are small (fast tests); in this process their writers'
    close writes the INDEX file as a large store's would (MIN_KEYS)."""
    monkeypatch.setattr(_index_file, "MIN_KEYS", 1)


def view_of(db: logshelf.Shelf) -> View:
    view: View = db._engine._view
    return view


def is_lazy(db: logshelf.Shelf) -> bool:
    index = view_of(db).index
    return isinstance(index, LazyIndex) and index.full is None


def build(path: Path, count: int = 300) -> dict[str, int]:
    """A store whose history has overwrites, deletes and two segments; the
    expected contents."""
    model: dict[str, int] = {}
    with logshelf.open(path, max_segment_size=8192) as db:
        for i in range(count):
            db[f"k{i}"] = model[f"k{i}"] = i
        for i in range(0, count, 3):
            db[f"k{i}"] = model[f"k{i}"] = -i
        for i in range(0, count, 5):
            del db[f"k{i}"]
            del model[f"k{i}"]
    return model


@pytest.fixture
def built(store_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    model = build(store_path)
    assert (store_path / fmt.TABLE_NAME).exists()
    yield store_path, model


def check(db: logshelf.Shelf, model: dict[str, int], absent: tuple[str, ...] = ()) -> None:
    """Every key of ``model`` and some absent ones, by every lookup."""
    for key, value in model.items():
        assert db[key] == value
        assert key in db
        assert db.get(key) == value
    for key in ("k0", "k5", "nope", *absent):
        if key not in model:
            assert key not in db
            assert db.get(key) is None
            with pytest.raises(KeyError):
                db[key]


def test_a_reopen_is_lazy_and_answers_like_the_full_index(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, model = built
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model)
        assert is_lazy(db)  # lookups alone never build the whole index
        assert len(db) == len(model)
        assert not is_lazy(db)
        assert isinstance(view_of(db).index, dict)
        check(db, model)
        assert sorted(db.keys()) == sorted(model)


@pytest.mark.parametrize("materialize_first", [False, True])
def test_writes_and_deletes_before_and_after_materializing(
    built: tuple[Path, dict[str, int]], materialize_first: bool
) -> None:
    path, model = built
    with logshelf.open(path) as db:
        assert is_lazy(db)
        if materialize_first:
            assert len(db) == len(model)
        db["k1"] = model["k1"] = "new"  # a key never looked up: overwritten
        del db["k2"]  # deleted without a lookup
        del model["k2"]
        db["k3"]  # looked up, then deleted, then put back
        del db["k3"]
        assert "k3" not in db
        db["k3"] = model["k3"] = 33
        del db["k4"]
        del model["k4"]
        db["fresh"] = model["fresh"] = 1
        db.update({"k6": 6, "k7": 7})
        model.update({"k6": 6, "k7": 7})
        check(db, model, absent=("k2", "k4"))
        assert len(db) == len(model)
        check(db, model, absent=("k2", "k4"))
        assert sorted(db) == sorted(model)
    with logshelf.open(path, "r") as db:
        check(db, model, absent=("k2", "k4"))
        assert sorted(db) == sorted(model)


def test_a_transaction_on_a_lazy_index(built: tuple[Path, dict[str, int]]) -> None:
    path, model = built
    with logshelf.open(path) as db:
        with db.transaction():
            del db["k1"]
            db["k8"] = "t"
            assert "k1" not in db
        del model["k1"]
        model["k8"] = "t"
        check(db, model, absent=("k1",))
        assert len(db) == len(model)


def run_child(path: Path, code: str) -> None:
    env = dict(os.environ, PYTHONPATH=SRC)
    script = f"import logshelf\ndb = logshelf.open({str(path)!r})\n{code}\ndb.close()\n"
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)


@pytest.mark.parametrize("materialize_first", [False, True])
def test_another_process_writes_and_deletes_meanwhile(
    built: tuple[Path, dict[str, int]], materialize_first: bool
) -> None:
    path, model = built
    with logshelf.open(path, "r") as db:
        assert db["k1"] == model["k1"]  # in the dict before the other writes
        if materialize_first:
            assert len(db) == len(model)
        run_child(path, "db['k1'] = 'other'\ndel db['k2']\ndel db['k7']\ndb['z'] = 1")
        model.update(k1="other", z=1)
        del model["k2"], model["k7"]
        check(db, model, absent=("k2", "k7"))
        assert len(db) == len(model)
        assert sorted(db) == sorted(model)


def test_a_compaction_by_another_handle_in_between(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, model = built
    with logshelf.open(path, "r") as reader:
        assert reader["k1"] == model["k1"]
        assert is_lazy(reader)
        with logshelf.open(path) as writer:
            writer["k1"] = model["k1"] = "before compaction"
            writer.compact()
            del writer["k3"]
            del model["k3"]
        check(reader, model, absent=("k3",))
        assert len(reader) == len(model)
    # The INDEX file of the old generation was replaced at the writer's close.
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model, absent=("k3",))


def test_a_lazy_writer_loads_its_index_before_the_plan_takes_the_lock(
    built: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan copies the whole index under the writer lock; a lazy handle
    must not load it there (a 100 ms hold at 100,000 keys, measured)."""
    path, model = built
    with logshelf.open(path, auto_compact=None) as db:
        assert is_lazy(db)
        lock = db._engine._writer.lock
        held_while_loading: list[bool] = []
        everything = LazyIndex.everything

        def spy(self: LazyIndex) -> dict[str, int]:
            held_while_loading.append(lock.busy())
            return everything(self)

        monkeypatch.setattr(LazyIndex, "everything", spy)
        assert db.compact().compacted
        assert held_while_loading and not any(held_while_loading)
        check(db, model)


def test_materializing_reads_no_further_than_the_file_covered(
    built: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a lazy handle parsed after the INDEX file's covered length is in
    the lazy index already: loading the rest must not scan it again."""
    path, model = built
    with logshelf.open(path) as db:
        assert is_lazy(db)
        index = view_of(db).index
        assert isinstance(index, LazyIndex) and index.table is not None
        covered = index.table.info.covered
        last = len(view_of(db).segments) - 1
        for i in range(50):
            db[f"new{i}"] = model[f"new{i}"] = i
        del db["k1"]
        del model["k1"]
        limits: list[tuple[int, int]] = []
        load_segment = View._load_segment

        def spy(self: View, seg: Any, slot: int, limit: int, *rest: Any) -> Any:
            limits.append((slot, limit))
            return load_segment(self, seg, slot, limit, *rest)

        monkeypatch.setattr(View, "_load_segment", spy)
        assert len(db) == len(model)
        assert (last, covered) in limits
        assert view_of(db).end > covered
        assert all(limit <= covered for slot, limit in limits if slot == last)
        check(db, model, absent=("k1",))


def test_a_small_tail_keeps_the_file_and_is_parsed_at_open(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, model = built
    table = path / fmt.TABLE_NAME
    before = table.read_bytes()
    with logshelf.open(path) as db:
        db["tail"] = model["tail"] = "t"
        del db["k1"]
        del model["k1"]
    assert table.read_bytes() == before  # a lazy handle left it as it was
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model, absent=("k1",))
        assert len(db) == len(model)


def test_a_large_tail_rewrites_the_file(built: tuple[Path, dict[str, int]]) -> None:
    path, model = built
    table = path / fmt.TABLE_NAME
    before = table.read_bytes()
    with logshelf.open(path) as db:
        for i in range(TAIL_LIMIT // 1000 + 1):
            db[f"big{i}"] = model[f"big{i}"] = "x" * 1000
        assert is_lazy(db)
    assert table.read_bytes() != before
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        assert view_of(db).end == fmt.Table.decode(table.read_bytes()).info.covered  # type: ignore[union-attr]
        check(db, model)


def test_a_torn_tail_beyond_the_covered_length(built: tuple[Path, dict[str, int]]) -> None:
    """A crash mid-write after the file was written: the torn bytes are
    ignored by a reader and cut by a writer, as without the file."""
    path, model = built
    with logshelf.open(path) as db:
        db["after"] = model["after"] = "a"
    manifest = fmt.decode_manifest((path / "MANIFEST").read_bytes(), "MANIFEST")
    segment = path / fmt.segment_name(manifest.active_id)
    good = segment.stat().st_size
    with logshelf.open(path) as db:
        db["torn"] = "x" * 100
    data = segment.read_bytes()
    segment.write_bytes(data[: good + (len(data) - good) // 2])
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model, absent=("torn",))
        assert len(db) == len(model)
    with logshelf.open(path) as db:
        check(db, model, absent=("torn",))
        db["later"] = model["later"] = 1
    with logshelf.open(path, "r") as db:
        check(db, model, absent=("torn",))


def damage(path: Path, at: int) -> None:
    table = path / fmt.TABLE_NAME
    data = bytearray(table.read_bytes())
    data[at % len(data)] ^= 0x10
    table.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [0, 20, 40, 200, 2000, -3])
def test_a_damaged_file_is_ignored(built: tuple[Path, dict[str, int]], at: int) -> None:
    path, model = built
    damage(path, at)
    with logshelf.open(path, "r") as db:
        check(db, model)
        assert len(db) == len(model)


def test_damage_in_every_block_is_noticed_by_the_probe(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, model = built
    table = fmt.Table.decode((path / fmt.TABLE_NAME).read_bytes())
    assert table is not None
    for block in range(table.slots // 256):
        shutil.copy(path / fmt.TABLE_NAME, path / "saved")
        damage(path, 112 + 4 * 256 * block + 5)
        with logshelf.open(path, "r") as db:
            check(db, model)
        os.replace(path / "saved", path / fmt.TABLE_NAME)


def test_a_stale_file_is_ignored_and_collected(store_path: Path) -> None:
    model = build(store_path)
    stale = (store_path / fmt.TABLE_NAME).read_bytes()
    with logshelf.open(store_path) as db:
        db.compact()
        db["k1"] = model["k1"] = "changed"
    (store_path / fmt.TABLE_NAME).write_bytes(stale)  # an old generation's table
    with logshelf.open(store_path, "r") as db:
        assert not is_lazy(db)
        check(db, model)
    with logshelf.open(store_path) as db:
        # The writer's garbage collection removed it; its close wrote a new one.
        check(db, model)
    assert (store_path / fmt.TABLE_NAME).read_bytes() != stale
    with logshelf.open(store_path, "r") as db:
        assert is_lazy(db)
        check(db, model)


def test_a_file_from_another_store_is_ignored(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    model = build(a)
    with logshelf.open(b, max_segment_size=8192) as db:
        for i in range(300):
            db[f"k{i}"] = "other"
    shutil.copy(a / fmt.TABLE_NAME, b / fmt.TABLE_NAME)
    with logshelf.open(a, "r") as db:
        check(db, model)
    with logshelf.open(b, "r") as db:
        assert not is_lazy(db)
        assert db["k1"] == "other"


def test_a_missing_file_loads_as_before(built: tuple[Path, dict[str, int]]) -> None:
    path, model = built
    (path / fmt.TABLE_NAME).unlink()
    with logshelf.open(path, "r") as db:
        assert not is_lazy(db)
        check(db, model)
    with logshelf.open(path) as db:
        check(db, model)
    assert (path / fmt.TABLE_NAME).exists()  # a writer's close writes it again


def test_closing_releases_the_map(built: tuple[Path, dict[str, int]], open_files) -> None:  # type: ignore[no-untyped-def]
    path, model = built
    db = logshelf.open(path, "r")
    assert db["k1"] == model["k1"]
    db.close()
    assert open_files(path) == []


def test_a_handle_that_missed_a_compaction_keeps_the_newer_file(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, model = built
    stale = logshelf.open(path)
    assert is_lazy(stale)
    with logshelf.open(path) as other:
        other.compact()
        other["k1"] = model["k1"] = "after"
    newer = (path / fmt.TABLE_NAME).read_bytes()
    stale.close()  # its view is of the older MANIFEST: the file stays
    assert (path / fmt.TABLE_NAME).read_bytes() == newer
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model)


def test_flag_n_empties_a_store_opened_from_the_file(
    built: tuple[Path, dict[str, int]],
) -> None:
    path, _ = built
    with logshelf.open(path, "n") as db:
        assert len(db) == 0
        assert "k1" not in db
        db["only"] = 1
    with logshelf.open(path, "r") as db:
        assert dict(db) == {"only": 1}


# -- LazyIndex on its own ------------------------------------------------------


def lazy_over(entries: dict[str, int]) -> tuple[LazyIndex, list[int]]:
    """A LazyIndex over a table of ``entries`` whose records are the keys
    themselves (``records[loc]``); the list counts materializations."""
    records = {loc: key.encode() for key, loc in entries.items()}
    info = fmt.TableInfo(0, 1, 1, 64, 0, 0, len(entries), 0, 0, 0)
    data = fmt.encode_table(info, [k.encode() for k in entries], list(entries.values()))
    table = fmt.Table.decode(data)
    assert table is not None
    built: list[int] = []

    def load() -> tuple[dict[str, int], set[str]]:
        built.append(1)
        return dict(entries), set()  # what a load from disk would find

    def adopt(full: dict[str, int], deleted: set[str]) -> None:
        adopted.append(full)

    adopted: list[dict[str, int]] = []
    return LazyIndex(table, records.__getitem__, load, adopt), built


def test_lazy_index_semantics_without_a_store() -> None:
    index, built = lazy_over({"a": 64, "b": 128, "c": 192})
    assert index["a"] == 64 and index.get("b") == 128 and "c" in index
    assert index.get("zz") is None and "zz" not in index
    with pytest.raises(KeyError):
        index["zz"]
    assert index  # keys in the table, none removed: no load needed
    assert index.pop("b") == 128  # never looked up before
    assert "b" not in index and index.get("b", 5) == 5
    assert index.pop("b", None) is None
    with pytest.raises(KeyError):
        index.pop("b")
    index["b"] = 300  # put back
    assert index["b"] == 300
    del index["c"]
    assert "c" not in index
    assert index and built == []  # the dict holds keys
    # The load (here: the table's entries) with what happened since laid over it.
    assert sorted(index) == ["a", "b"]
    assert len(index) == 2 and built == [1]
    assert index["b"] == 300 and index.get("b") == 300
    assert "c" not in index and index.get("c") is None  # forwarded to the full index


def test_a_lazy_index_with_removed_keys_asks_the_load_whether_it_is_empty() -> None:
    index, built = lazy_over({"a": 64})
    del index["a"]
    assert built == []
    assert not index  # the load still has "a": the removal is laid over it
    assert built == [1]


def test_an_empty_lazy_index_is_false_without_a_load() -> None:
    index, built = lazy_over({})
    assert not index
    assert built == []
    index["x"] = 64
    assert index and built == []


def test_a_damaged_block_falls_back_to_the_load() -> None:
    index, built = lazy_over({f"k{i}": 64 * (i + 1) for i in range(50)})
    table = index.table
    assert table is not None
    damaged = bytearray(table.data)
    damaged[112] ^= 1  # the first slot's hash: block 0 fails its checksum
    index.table = fmt.Table(bytes(damaged), table.info, table.slots, table.homes)
    assert index["k7"] == 64 * 8
    assert built == [1] and index.table is None
    assert index.full is None  # the load replaced the table, not the overlay
    del index["k8"]
    index["new"] = 1
    assert "k8" not in index and index["k9"] == 64 * 10
    assert len(index) == 50 and built == [1]  # that load, reused


def test_rollovers_while_lazy(built: tuple[Path, dict[str, int]]) -> None:
    """This handle's rollovers write hints (see the next test); another
    handle's are followed without a reload."""
    path, model = built
    with logshelf.open(path, "r") as reader:
        assert reader["k1"] == model["k1"]
        with logshelf.open(path, max_segment_size=4096, auto_compact=None) as db:
            assert is_lazy(db)
            for i in range(60):
                db[f"roll{i}"] = model[f"roll{i}"] = "r" * 200
            del db["k2"]
            del model["k2"]
            check(db, model, absent=("k2",))
        check(reader, model, absent=("k2",))
        assert len(reader) == len(model)
    with logshelf.open(path, "r") as db:
        assert is_lazy(db)
        check(db, model, absent=("k2",))
        assert sorted(db) == sorted(model)


def test_a_lazy_writer_hints_its_rollovers_without_loading_and_exactly(
    built: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hint of the segment that was active when the INDEX file was
    written merges the table's part of it (entries and deletes, loaded
    after the lock) with what the handle did since; later segments need
    only the handle's own entries. No whole load, and a load from those
    hints alone (no INDEX file) is exact, deletes of every age included."""
    path, model = built
    loads: list[int] = []
    load_full = _index_file.load_full
    monkeypatch.setattr(_index_file, "load_full", lambda *a: loads.append(1) or load_full(*a))
    with logshelf.open(path, max_segment_size=4096, auto_compact=None) as db:
        assert is_lazy(db)
        segments = len(view_of(db).segments)
        active = view_of(db).segments[-1]
        # A key the table holds in its active segment, deleted now: the
        # table's part of that segment, loaded for the hint, still has it.
        doomed = next(k for k in sorted(model) if view_of(db).index[k] >> 40 == segments - 1)
        del db[doomed]
        del model[doomed]
        db["k1"] = model["k1"] = "overwritten before the rollover"
        del db["k3"]
        del model["k3"]
        for i in range(60):
            db[f"roll{i}"] = model[f"roll{i}"] = "r" * 200
            if i == 30:
                del db["k4"]
                del model["k4"]
                db["k6"] = model["k6"] = "between rollovers"
        assert len(view_of(db).segments) >= segments + 3  # rolled over, and again
        assert is_lazy(db) and loads == []
    hint = fmt.decode_hint((path / fmt.hint_name(active.id)).read_bytes())
    assert hint is not None and doomed not in hint.put_keys
    monkeypatch.undo()
    (path / fmt.TABLE_NAME).unlink()
    with logshelf.open(path, "r") as db:
        assert not isinstance(view_of(db).index, LazyIndex)  # loaded from the hints
        check(db, model, absent=("k3", "k4", doomed))
        assert sorted(db) == sorted(model)
        assert db.verify() == []


def test_a_damaged_block_met_while_applying_another_process_batch(
    built: tuple[Path, dict[str, int]],
) -> None:
    """The fallback load happens in the middle of applying a batch (a delete
    probes the damaged block): the records before and after it in the batch
    all count."""
    path, original = built
    table = fmt.Table.decode((path / fmt.TABLE_NAME).read_bytes())
    assert table is not None
    pristine = path.with_name("pristine")
    shutil.copytree(path, pristine)
    fell_back = 0
    for block in range(table.slots // 256):
        shutil.rmtree(path)
        shutil.copytree(pristine, path)
        model = dict(original)
        damage(path, 112 + 4 * 256 * block + 7)
        with logshelf.open(path, "r") as db:
            assert is_lazy(db)
            victims = [k for k in list(model)[block::7] if k != "k1"][:6]
            batch = {f"b{block}-{i}": i for i in range(3)}
            code = (
                f"with db.transaction():\n"
                f"    db.update({batch!r})\n"
                f"    for k in {victims!r}: del db[k]\n"
                f"    db['k1'] = 'batch {block}'"
            )
            run_child(path, code)
            model.update(batch)
            model["k1"] = f"batch {block}"
            for key in victims:
                del model[key]
            assert db.get("k1") == f"batch {block}"  # applies the batch
            index = view_of(db).index
            fell_back += isinstance(index, LazyIndex) and index.table is None
            check(db, model, absent=tuple(victims))
            assert sorted(db) == sorted(model)
    assert fell_back  # some batch met its damaged block


def test_only_stores_of_min_keys_or_more_get_the_file(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_index_file, "MIN_KEYS", 1000)
    table = store_path / fmt.TABLE_NAME
    with logshelf.open(store_path) as db:
        db.update({f"k{i}": i for i in range(999)})
    assert not table.exists()
    with logshelf.open(store_path) as db:
        assert not is_lazy(db)
        db["k999"] = 999
    assert table.exists()
    with logshelf.open(store_path) as db:
        assert is_lazy(db)
        assert db["k5"] == 5
        del db["k5"]
        assert len(db) == 999
    # Still a valid description (with a short tail after it): kept until a
    # close has to write it anew, which a store this small no longer gets.
    with logshelf.open(store_path, "r") as db:
        assert is_lazy(db)
        assert "k5" not in db and db["k6"] == 6
        assert len(db) == 999
    with logshelf.open(store_path) as db:
        db["k6"] = "x" * TAIL_LIMIT  # a long tail: the close must act
    assert not table.exists()  # too small for a new one: the old one goes
    with logshelf.open(store_path, "r") as db:
        assert not is_lazy(db)
        assert len(db) == 999 and db["k6"] == "x" * TAIL_LIMIT


def test_a_handle_that_reads_many_keys_materializes(
    built: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probing costs several times a key's share of a full load: after its
    budget of probes a handle loads the whole index once, and reads are
    plain dict lookups from then on, with the same answers."""
    from logshelf import _lazy_index

    path, model = built
    monkeypatch.setattr(_lazy_index, "_MIN_PROBES", 10)
    keys = sorted(model)
    with logshelf.open(path, "r") as db:
        for key in keys[:10]:
            assert db[key] == model[key]
        assert is_lazy(db)
        assert db[keys[10]] == model[keys[10]]  # the 11th probe loads
        assert type(view_of(db).index) is dict
        assert all(db[key] == model[key] for key in keys)
        assert "k0" not in db and dict(db) == model


def test_materializing_while_applying_another_handles_batch(
    built: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe that exhausts the budget can come in the middle of applying
    a batch, which binds the index once: the rest of the batch must land in
    the full index that replaces it, deletes and puts alike."""
    from logshelf import _lazy_index

    path, model = built
    monkeypatch.setattr(_lazy_index, "_MIN_PROBES", 5)
    monkeypatch.setattr(_lazy_index, "_PROBE_SHARE", 1 << 30)
    with logshelf.open(path) as lazy, logshelf.open(path) as other:
        assert is_lazy(lazy)
        present = sorted(model)
        with other.transaction():
            for i, key in enumerate(present[:12]):
                if i % 2:
                    del other[key]
                    del model[key]
                else:
                    other[f"new{i}"] = model[f"new{i}"] = i
        # Applying the batch probes for each delete and materializes.
        assert lazy.get("k1") == model.get("k1")
        assert type(view_of(lazy).index) is dict
        assert dict(lazy) == model
        lazy["after"] = model["after"] = 1
        del lazy[present[20]]
        del model[present[20]]
    with logshelf.open(path, "r") as db:
        assert dict(db) == model
