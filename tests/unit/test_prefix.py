"""Prefix scans (issue 13): keys(prefix), items(prefix), values(prefix) for
records kept under a common prefix such as ``user:``."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from pathlib import Path

import pytest

import logshelf
from logshelf import _prefix_scans

RECORDS = {
    "user:alice": {"n": 1},
    "user:bob": {"n": 2},
    "user:élodie": {"n": 3},
    "user:日本": {"n": 4},
    "users": {"n": 5},
    "session:1": {"n": 6},
    "": {"n": 7},
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[logshelf.Shelf]:
    shelf = logshelf.open(tmp_path / "store")
    shelf.update(RECORDS)
    yield shelf
    shelf.close()


def _expected(prefix: str) -> dict[str, dict[str, int]]:
    return {k: v for k, v in RECORDS.items() if k.startswith(prefix)}


@pytest.mark.parametrize("prefix", ["user:", "user", "user:é", "user:日", "session:", "", "u"])
def test_keys_items_values_with_a_prefix(db: logshelf.Shelf, prefix: str) -> None:
    expected = _expected(prefix)
    keys = db.keys(prefix)
    assert isinstance(keys, list)
    assert sorted(keys) == sorted(expected)
    assert dict(db.items(prefix)) == expected
    assert sorted(v["n"] for v in db.values(prefix)) == sorted(v["n"] for v in expected.values())


def test_the_empty_prefix_is_every_key(db: logshelf.Shelf) -> None:
    assert sorted(db.keys("")) == sorted(RECORDS)
    assert dict(db.items("")) == RECORDS


def test_a_prefix_matching_nothing(db: logshelf.Shelf) -> None:
    assert db.keys("nobody:") == []
    assert list(db.items("nobody:")) == []
    assert list(db.values("nobody:")) == []
    assert db.keys("user:alicex") == []


def test_without_a_prefix_the_mapping_views_are_unchanged(db: logshelf.Shelf) -> None:
    assert isinstance(db.keys(), KeysView)
    assert isinstance(db.keys(None), KeysView)
    assert isinstance(db.items(), ItemsView)
    assert isinstance(db.values(), ValuesView)
    assert sorted(db.keys()) == sorted(RECORDS)
    assert "user:bob" in db.keys()  # noqa: SIM118 - the view itself is under test
    assert dict(db.items()) == RECORDS


def test_after_deletes_and_overwrites(db: logshelf.Shelf) -> None:
    del db["user:bob"]
    db.delete_many(["user:日本", "session:1"])
    db["user:alice"] = {"n": 10}
    db["user:zoe"] = {"n": 11}
    assert sorted(db.keys("user:")) == ["user:alice", "user:zoe", "user:élodie"]
    assert dict(db.items("user:")) == {
        "user:alice": {"n": 10},
        "user:zoe": {"n": 11},
        "user:élodie": {"n": 3},
    }
    assert db.keys("session:") == []


def test_inside_a_transaction_the_writer_sees_its_own_changes(db: logshelf.Shelf) -> None:
    with db.transaction():
        db["user:carol"] = {"n": 20}
        del db["user:alice"]
        assert sorted(db.keys("user:")) == ["user:bob", "user:carol", "user:élodie", "user:日本"]
        assert dict(db.items("user:c")) == {"user:carol": {"n": 20}}
        assert list(db.values("user:a")) == []
    assert sorted(db.keys("user:")) == ["user:bob", "user:carol", "user:élodie", "user:日本"]


def test_an_aborted_transaction_leaves_the_scan_as_it_was(db: logshelf.Shelf) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        db["user:carol"] = {"n": 20}
        assert "user:carol" in db.keys("user:")
        raise RuntimeError("abort")
    assert sorted(db.keys("user:")) == sorted(_expected("user:"))


def test_another_handle_sees_committed_records(db: logshelf.Shelf, tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "store", "r") as other:
        db["user:dave"] = {"n": 30}
        assert "user:dave" in other.keys("user:")
        assert dict(other.items("user:d")) == {"user:dave": {"n": 30}}


def test_items_reads_in_chunks_and_skips_keys_deleted_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_prefix_scans, "_SCAN_CHUNK", 3)
    with logshelf.open(tmp_path / "s") as db:
        db.update({f"k:{i:02}": i for i in range(10)})
        scan = db.items("k:")  # the key snapshot is taken here
        del db["k:09"]
        got = dict(scan)
        assert got == {f"k:{i:02}": i for i in range(9)}


def test_writeback_scans_return_the_cached_objects(tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "s", writeback=True) as db:
        db["user:a"] = [1]
        db["user:b"] = [2]
        db["user:a"].append(10)
        values = dict(db.items("user:"))
        assert values == {"user:a": [1, 10], "user:b": [2]}
        values["user:b"].append(20)  # cached by the scan, so written back
    with logshelf.open(tmp_path / "s") as db:
        assert dict(db.items("user:")) == {"user:a": [1, 10], "user:b": [2, 20]}


def test_a_prefix_must_be_a_str(db: logshelf.Shelf) -> None:
    with pytest.raises(TypeError, match="prefix"):
        db.keys(b"user:")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="prefix"):
        db.items(3)  # type: ignore[call-overload]
