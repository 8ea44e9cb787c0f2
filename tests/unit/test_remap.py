"""Following a compaction's switch without reloading the index (``_remap``),
and the hint a rollover writes after the writer lock."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _compaction, _index_file, _remap, _segment_set
from logshelf import _format as fmt
from logshelf._fs import FileSystem
from logshelf._lazy_index import LazyIndex

SEG = 8192


class _HintReads(FileSystem):
    """Counts hint files read: a reload reads every segment's hint."""

    def __init__(self) -> None:
        self.hints = 0

    def read_file(self, path: str) -> bytes:
        if path.endswith(".hint"):
            self.hints += 1
        return super().read_file(path)


def test_switch_shape_recognises_exactly_one_switch() -> None:
    old = ((1, 900), (2, 800), (3, 700), (4, fmt.ACTIVE))
    # Inputs 1-2 became 7; 3 stays; 4 was sealed at 500 and 8 started.
    new = ((7, 600), (3, 700), (4, 500), (8, fmt.ACTIVE))
    assert _remap.switch_shape(old, new, (4, 500), 8) == (2, 1)
    # Everything dropped: no outputs at all.
    assert _remap.switch_shape(old, ((3, 700), (4, 500), (8, fmt.ACTIVE)), (4, 500), 8) == (2, 0)
    # Sealed elsewhere than the view parsed, another successor, a plain
    # rollover, a reset, a later segment replaced too: not a switch of ours.
    assert _remap.switch_shape(old, new, (4, 400), 8) is None
    assert _remap.switch_shape(old, new, (4, 500), 9) is None
    rollover = (*old[:-1], (4, 500), (8, fmt.ACTIVE))
    assert _remap.switch_shape(old, rollover, (4, 500), 8) is None
    assert _remap.switch_shape(old, ((4, 500), (8, fmt.ACTIVE)), (4, 500), 8) == (3, 0)
    assert _remap.switch_shape(old, ((7, 1), (9, 1), (4, 500), (8, fmt.ACTIVE)), (4, 500), 8) == (
        3,
        2,
    )
    assert (
        _remap.switch_shape(old, ((7, 1), (3, 699), (4, 500), (8, fmt.ACTIVE)), (4, 500), 8) is None
    )


@contextmanager
def _during_copy(action: Any) -> Iterator[None]:
    """Run ``action()`` between a compaction's plan and its switch."""
    original = _compaction.copy

    def copy(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        action()
        return found

    _compaction.copy = copy  # type: ignore[assignment]
    try:
        yield
    finally:
        _compaction.copy = original  # type: ignore[assignment]


def _view(db: logshelf.Shelf) -> Any:
    return db._engine._view


def _changes_during_copy(other: Any, reader: Any, model: dict[str, Any]) -> Any:
    """What the handles do between the plan and the switch: both follow the
    plan's rollover, then change keys the compaction copies."""

    def meanwhile() -> None:
        other["k0001"] = model["k0001"] = "newer"
        del other["k0002"]
        del model["k0002"]
        other["fresh"] = model["fresh"] = "during the copy"
        assert reader["k0001"] == "newer" and "k0002" not in reader

    return meanwhile


def _step_until_remapped(reader: Any, other: Any, model: dict[str, Any]) -> int:
    """Operate on both handles until their remaps are done, every read right
    meanwhile; the number of rounds."""
    steps = 0
    while _view(reader).pending_remap is not None or _view(other).pending_remap is not None:
        key = f"k{steps % 400:04d}"
        assert reader.get(key) == model.get(key)
        assert other.get(key) == model.get(key)
        steps += 1
    return steps


def test_other_handles_remap_in_steps_and_stay_exact(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, open_files: Any
) -> None:
    """A second writer and a reader that saw the plan's rollover adopt the
    switch by reading only the outputs' hints; their entries move a chunk per
    operation, every read meanwhile right (the inputs stay open), keys
    overwritten or deleted during the copy keep their newer state, and the
    inputs are closed once the remap is done."""
    monkeypatch.setattr(_remap, "CHUNK", 16)
    other_fs, reader_fs = _HintReads(), _HintReads()
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None, _fs=other_fs) as other,
        logshelf.open(store_path, "r", _fs=reader_fs) as reader,
    ):
        model: dict[str, Any] = {}
        for r in range(3):
            batch = {f"k{i:04d}": (r, i) for i in range(400)}
            writer.update(batch)
            model.update(batch)
        assert len(reader) == len(other) == 400

        with _during_copy(_changes_during_copy(other, reader, model)):
            result = writer.compact()
        assert result.compacted
        outputs = len(_view(writer).manifest.segments) - 2
        other_fs.hints = reader_fs.hints = 0
        assert reader["k0001"] == "newer"  # adopts the switch: a first step only
        assert reader_fs.hints <= 2 and _view(reader).pending_remap is not None
        other["after"] = model["after"] = "after the switch"  # the writer adopts too
        assert _view(other).pending_remap is not None
        assert _step_until_remapped(reader, other, model) > 10  # it did take steps
        # No reload: the last output's hint read twice (its count of keys
        # left out, then its keys), each other output's once.
        assert reader_fs.hints <= outputs + 1 and other_fs.hints <= outputs + 1
        assert dict(reader.items()) == dict(other.items()) == dict(writer.items()) == model
        assert open_files(store_path, deleted=True) == []
        assert writer.verify() == other.verify() == []
    with logshelf.open(store_path, "r") as again:
        assert dict(again.items()) == model


class _DropOdd:
    def select(self, keys: list[str], sizes: list[int], read: Any) -> None:
        pass

    def __call__(self, key: str, value: bytes, codec: int) -> bool:
        return int(key[1:]) % 2 == 1


def test_keys_a_compaction_leaves_out_vanish_at_once_for_other_handles(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eviction's drop: the last output's hint lists the keys left out, and a
    handle following the switch drops them in its first step, long before
    its remap is done."""
    monkeypatch.setattr(_remap, "CHUNK", 8)
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, "r") as reader,
    ):
        engine = writer._engine
        for i in range(300):
            engine.put(f"k{i}", 0, b"v%d" % i, 0)
        assert len(reader) == 300

        def touch() -> None:
            assert reader._engine.get("k0") == b"v0"  # follows the plan's rollover

        with _during_copy(touch):
            assert engine.compact(drop=_DropOdd()).compacted
        kept = {f"k{i}" for i in range(0, 300, 2)}
        assert "k1" not in reader
        assert _view(reader).pending_remap is not None
        assert len(reader) == len(kept) and set(reader.keys()) == kept
        hint = fmt.decode_hint(
            (store_path / fmt.hint_name(_view(writer).manifest.segments[0][0])).read_bytes()
        )
        assert hint is not None and len(hint.put_keys) + len(hint.deleted_keys) <= 300
    with logshelf.open(store_path, "r") as again:
        assert set(again.keys()) == kept


def test_a_reader_that_missed_the_plan_reloads(store_path: Path) -> None:
    """Two changes at once (the plan's rollover and the switch) are not one
    switch: the handle reloads, and is exact."""
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, "r") as reader,
    ):
        model = {f"k{i}": i for i in range(500)}
        writer.update(model)
        writer.update(model)
        assert len(reader) == 500
        writer.compact()
        assert dict(reader.items()) == model
        assert _view(reader).pending_remap is None


def test_a_rollover_writes_the_sealed_segments_hint_after_the_lock(store_path: Path) -> None:
    """The hint of the segment a write sealed exists once the write returns,
    and a reopen that uses it is exact."""
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        model: dict[str, Any] = {}
        i = 0
        while db.stats()["segments"] < 4:
            db[f"k{i % 50}"] = model[f"k{i % 50}"] = "x" * (i % 90)
            if i % 17 == 0 and f"k{(i + 7) % 50}" in model:
                del db[f"k{(i + 7) % 50}"]
                del model[f"k{(i + 7) % 50}"]
            i += 1
        view = _view(db)
        for segment_id, length in view.manifest.segments[:-1]:
            hint = fmt.decode_hint((store_path / fmt.hint_name(segment_id)).read_bytes())
            assert hint is not None and hint.covered == length
            assert db._engine._writer.sealed_hint is None
    reads = _HintReads()
    with logshelf.open(store_path, "r", _fs=reads) as again:
        assert dict(again.items()) == model
        assert reads.hints >= 4


def test_a_deferred_hint_lists_the_segment_as_the_rollover_left_it(store_path: Path) -> None:
    """Keys overwritten between the rollover and the hint's writing stay in the
    hint: their newer records may not be durable yet (a power loss could take
    them and leave the hint), so it must describe the sealed segment itself."""
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        db.update({f"k{i}": "x" * 50 for i in range(20)})
        view = _view(db)
        sealed = _segment_set.sealed_hint(view, 99)
        slot = view.active_slot
        for i in range(10):  # as if overwritten in a later segment meanwhile
            view.index[f"k{i}"] = (slot + 1) << 40
        assert _segment_set.write_sealed_hint(view, sealed, 0o644)
        hint = fmt.decode_hint((store_path / fmt.hint_name(view.active.id)).read_bytes())
        assert hint is not None and sorted(hint.put_keys) == sorted(f"k{i}" for i in range(20))
        assert hint.seal_next == 99
        for i in range(10):
            view.index[f"k{i}"] = sealed.index[f"k{i}"]  # put back before close


def _lazy(db: logshelf.Shelf) -> bool:
    index = _view(db).index
    return isinstance(index, LazyIndex) and index.full is None


@pytest.fixture
def indexed(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A store of three segments and more, closed with an INDEX file (small
    stores get one in these tests), so that the next handles open lazily;
    the expected contents."""
    monkeypatch.setattr(_index_file, "MIN_KEYS", 1)
    model: dict[str, Any] = {}
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as db:
        for r in range(3):
            batch = {f"k{i:04d}": (r, i) for i in range(400)}
            db.update(batch)
            model.update(batch)
    assert (store_path / fmt.TABLE_NAME).exists()
    return model


def test_handles_opened_from_the_index_file_remap_in_steps_without_a_load(
    store_path: Path, indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, open_files: Any
) -> None:
    """A lazy writer and a lazy reader that saw the plan's rollover follow
    the switch as eager handles do: only the outputs' hints are read, the
    table is never probed for the remap and no index is loaded; once done,
    the entries they were told about become their full index."""
    monkeypatch.setattr(_remap, "CHUNK", 16)
    model = indexed
    loads: list[int] = []
    load_full = _index_file.load_full
    monkeypatch.setattr(_index_file, "load_full", lambda *a: loads.append(1) or load_full(*a))
    other_fs, reader_fs = _HintReads(), _HintReads()
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None, _fs=other_fs) as other,
        logshelf.open(store_path, "r", _fs=reader_fs) as reader,
    ):
        assert _lazy(other) and _lazy(reader)
        writer["k0000"] = model["k0000"] = "before the plan"
        # Both follow that write (and its rollover, if any), as busy handles do.
        assert reader["k0000"] == other["k0000"] == "before the plan"

        with _during_copy(_changes_during_copy(other, reader, model)):
            assert writer.compact().compacted
        loads.clear()
        outputs = len(_view(writer).manifest.segments) - 2
        other_fs.hints = reader_fs.hints = 0
        assert reader["k0001"] == "newer"
        assert _view(reader).pending_remap is not None and _lazy(reader)
        other["after"] = model["after"] = "after the switch"
        assert _view(other).pending_remap is not None and _lazy(other)
        assert _step_until_remapped(reader, other, model) > 10  # it did take steps
        assert loads == []  # no load, before or at the end
        assert not isinstance(_view(reader).index, LazyIndex)
        assert not isinstance(_view(other).index, LazyIndex)
        assert reader_fs.hints <= outputs + 1 and other_fs.hints <= outputs + 1
        assert dict(reader.items()) == dict(other.items()) == dict(writer.items()) == model
        assert open_files(store_path, deleted=True) == []
        other["last"] = model["last"] = 1
    with logshelf.open(store_path, "r") as again:
        assert dict(again.items()) == model


def test_a_lazy_handle_that_loads_during_its_remap_is_exact(
    store_path: Path, indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``len()`` in the middle of a lazy remap loads what the view holds
    now (not the table's segments, which the switch replaced); the remap
    then finishes on the loaded index."""
    monkeypatch.setattr(_remap, "CHUNK", 16)
    model = indexed
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, "r") as reader,
    ):
        assert _lazy(reader)

        def meanwhile() -> None:
            writer["k0003"] = model["k0003"] = "during the copy"
            assert reader["k0003"] == "during the copy"

        with _during_copy(meanwhile):
            assert writer.compact().compacted
        del writer["k0004"]
        del model["k0004"]
        assert reader.get("k0005") == model["k0005"]
        assert _view(reader).pending_remap is not None and _lazy(reader)
        assert len(reader) == len(model)
        assert not _lazy(reader)
        view = _view(reader)
        assert view.pending_remap is not None
        for key, value in model.items():  # every entry, moved by the remap yet or not
            assert pickle.loads(view.read(view.index[key], key)) == value
        while _view(reader).pending_remap is not None:
            assert reader.get("k0003") == "during the copy"
        assert dict(reader.items()) == model


def test_a_lazy_handle_whose_table_is_newer_than_the_plan_reloads(
    store_path: Path, indexed: dict[str, Any]
) -> None:
    """A table written after the plan holds entries newer than the outputs'
    copies (a key overwritten during the copy): the handle reloads rather
    than move such a key back to its old value."""
    model = indexed
    with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer:
        late: list[logshelf.Shelf] = []

        def meanwhile() -> None:
            with logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as w2:
                w2["k0003"] = model["k0003"] = "after the plan"
            late.append(logshelf.open(store_path, "r"))  # from the INDEX file w2 wrote
            assert _lazy(late[0]) and late[0]["k0005"] == model["k0005"]

        with _during_copy(meanwhile):
            assert writer.compact().compacted
        with late[0] as reader:
            assert reader["k0003"] == "after the plan"
            assert _view(reader).pending_remap is None  # reloaded
            assert dict(reader.items()) == model


def test_keys_left_out_vanish_for_a_lazy_handle_too(
    store_path: Path, indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eviction's keys left out, for a handle opened from the INDEX file:
    gone in the first step, and absent from the index it settles into."""
    monkeypatch.setattr(_remap, "CHUNK", 8)
    kept = {key for key in indexed if int(key[1:]) % 2 == 0}
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, "r") as reader,
    ):
        assert _lazy(reader)

        def touch() -> None:
            assert reader["k0000"] == indexed["k0000"]  # follows the plan's rollover

        with _during_copy(touch):
            assert writer._engine.compact(drop=_DropOdd()).compacted
        assert "k0001" not in reader
        assert _view(reader).pending_remap is not None and _lazy(reader)
        while _view(reader).pending_remap is not None:
            assert reader.get("k0003") is None
        assert not isinstance(_view(reader).index, LazyIndex)
        assert set(reader.keys()) == kept


def test_an_output_hint_whose_keys_turn_out_wrong_midway_means_a_reload(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys are decoded a chunk at a time (KeysInOrder): a mismatch found in
    a later step makes the handle reload, and it stays exact."""
    from logshelf._hint_format import HintKeysError, KeysInOrder

    monkeypatch.setattr(_remap, "CHUNK", 16)
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, "r") as reader,
    ):
        model = {f"k{i:04d}": i for i in range(400)}
        writer.update(model)
        writer.update(model)
        assert len(reader) == 400
        with _during_copy(lambda: reader.get("k0000")):
            assert writer.compact().compacted
        taken = KeysInOrder.__getitem__
        calls: list[int] = []

        def failing(self: KeysInOrder, index: slice) -> list[str]:
            calls.append(1)
            if len(calls) == 3:
                raise HintKeysError("forged")
            return taken(self, index)

        monkeypatch.setattr(KeysInOrder, "__getitem__", failing)
        assert reader["k0001"] == 1
        while _view(reader).pending_remap is not None:
            assert reader.get("k0002") == 2
        assert len(calls) == 3  # the reload took no more keys in order
        assert dict(reader.items()) == model


def test_writes_while_a_lazy_handle_settles_are_kept(
    store_path: Path, indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lazy writer puts and deletes keys at every step of its remap,
    including those where its entries are being copied into the index it
    settles into: none is lost or comes back."""
    monkeypatch.setattr(_remap, "CHUNK", 16)
    model = indexed
    with (
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as writer,
        logshelf.open(store_path, max_segment_size=SEG, auto_compact=None) as other,
    ):
        assert _lazy(other)
        with _during_copy(lambda: other.get("k0000")):
            assert writer.compact().compacted
        view = _view(other)
        other["after"] = model["after"] = "adopts the switch"
        assert view.pending_remap is not None and _lazy(other)
        steps = while_settling = 0
        while view.pending_remap is not None:
            index = view.index
            if isinstance(index, LazyIndex) and index._settling is not None:
                while_settling += 1
            other[f"w{steps}"] = model[f"w{steps}"] = steps
            if steps % 3 == 0:
                del other[f"k{steps:04d}"]
                del model[f"k{steps:04d}"]
            steps += 1
        assert while_settling > 1
        assert not isinstance(view.index, LazyIndex)
        assert dict(other.items()) == model
    with logshelf.open(store_path, "r") as again:
        assert dict(again.items()) == model
