"""logshelf.import_from and logshelf.export: every source kind, Python 2
shelves, atomicity (a failure leaves nothing at the destination)."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shelve
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _transfer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VALUES: dict[str, Any] = {
    "int": 42,
    "text": "naïve ✓",
    "nested": {"a": [1, 2.5, None, True], "b": {"c": "d"}},
    "bytes": b"\x00\xff",
}


def _contents(path: Path) -> dict[str, Any]:
    with logshelf.open(path, "r") as db:
        return dict(db)


def _siblings(path: Path) -> list[str]:
    """Everything in the destination's directory: temporary files must be gone."""
    return sorted(p.name for p in path.parent.iterdir())


def _flavours() -> list[str]:
    """The dbm modules this interpreter has: gnu and ndbm depend on the build,
    sqlite3 on the version (3.13+). Every one present is tested; the absent
    ones cannot exist on this interpreter, so neither can their files."""
    found = []
    for name in ("dbm.dumb", "dbm.gnu", "dbm.ndbm", "dbm.sqlite3"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        found.append(name)
    return found


@pytest.mark.parametrize("flavour", _flavours())
def test_import_from_every_dbm_flavour(tmp_path: Path, flavour: str) -> None:
    module = importlib.import_module(flavour)
    src = tmp_path / "old.shelf"
    with shelve.Shelf(module.open(str(src), "n"), protocol=2) as db:
        db.update(VALUES)
    report = logshelf.import_from(src, tmp_path / "new")
    assert (report.kind, report.keys, report.converted_keys) == ("shelve", 4, 0)
    assert _contents(tmp_path / "new") == VALUES


def test_import_a_dumb_shelf_named_by_its_dat_file(tmp_path: Path) -> None:
    with shelve.Shelf(importlib.import_module("dbm.dumb").open(str(tmp_path / "s"), "n")) as db:
        db["k"] = [1]
    logshelf.import_from(tmp_path / "s.dat", tmp_path / "new")
    assert _contents(tmp_path / "new") == {"k": [1]}


def _py2_shelf(tmp_path: Path, protocol: int) -> Path:
    for suffix in (".dat", ".dir"):
        shutil.copy(FIXTURES / f"py2-p{protocol}{suffix}", tmp_path / f"py2{suffix}")
    return tmp_path / "py2"


@pytest.mark.parametrize("protocol", [0, 2])
def test_import_a_python2_shelf_with_latin1(tmp_path: Path, protocol: int) -> None:
    logshelf.import_from(_py2_shelf(tmp_path, protocol), tmp_path / "new", encoding="latin1")
    assert _contents(tmp_path / "new") == {
        "bytes": "café",  # a py2 str of Latin-1 bytes
        "text": "naïve ✓",  # a py2 unicode
        "nested": {"n": 42, "items": [1, 2.5, None, True], "name": "ascii only"},
    }


def test_import_a_python2_shelf_keeping_bytes(tmp_path: Path) -> None:
    logshelf.import_from(_py2_shelf(tmp_path, 2), tmp_path / "new", encoding="bytes")
    got = _contents(tmp_path / "new")
    assert got["bytes"] == b"caf\xe9" and got["text"] == "naïve ✓"


def test_a_python2_shelf_without_encoding_names_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"key 'bytes'.*encoding='latin1'"):
        logshelf.import_from(_py2_shelf(tmp_path, 2), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_import_a_pickled_dict_converting_keys(tmp_path: Path) -> None:
    src = tmp_path / "data.pkl"
    src.write_bytes(pickle.dumps({"a": 1, b"b": 2, 3: "three"}))
    report = logshelf.import_from(src, tmp_path / "new")
    assert (report.kind, report.keys, report.converted_keys) == ("pickle", 3, 2)
    assert _contents(tmp_path / "new") == {"a": 1, "b": 2, "3": "three"}


def test_a_pickled_dict_with_an_unconvertible_key_is_refused_naming_it(tmp_path: Path) -> None:
    src = tmp_path / "data.pkl"
    src.write_bytes(pickle.dumps({"a": 1, ("x", 1): 2}))
    with pytest.raises(TypeError, match=r"\('x', 1\).*tuple"):
        logshelf.import_from(src, tmp_path / "new")
    assert _siblings(tmp_path / "new") == ["data.pkl"]


def test_keys_that_convert_to_the_same_text_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "data.pkl"
    src.write_bytes(pickle.dumps({"1": "str", 1: "int"}))
    with pytest.raises(ValueError, match="collides"):
        logshelf.import_from(src, tmp_path / "new")


def test_a_pickle_that_is_not_a_dict_becomes_one_key(tmp_path: Path) -> None:
    src = tmp_path / "model.pickle"
    src.write_bytes(pickle.dumps([1, 2, 3]))
    logshelf.import_from(src, tmp_path / "new")
    assert _contents(tmp_path / "new") == {"model": [1, 2, 3]}
    logshelf.import_from(src, tmp_path / "named", key="weights")
    assert _contents(tmp_path / "named") == {"weights": [1, 2, 3]}


def test_import_json_lines(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text('{"key": "a", "value": [1, {"b": null}]}\n\n{"key": "c", "value": "é"}\n')
    logshelf.import_from(src, tmp_path / "new")
    assert _contents(tmp_path / "new") == {"a": [1, {"b": None}], "c": "é"}


def test_sqlitedict_with_and_without_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlitedict = importlib.import_module("sqlitedict")  # in the test extra
    src = tmp_path / "old.sqlite"
    with sqlitedict.SqliteDict(str(src), autocommit=True) as db:
        db.update(VALUES)
    report = logshelf.import_from(src, tmp_path / "new")
    assert report.kind == "sqlitedict" and _contents(tmp_path / "new") == VALUES
    # The package is not needed to read its files.
    monkeypatch.setitem(sys.modules, "sqlitedict", None)
    logshelf.import_from(src, tmp_path / "direct", kind="sqlitedict")
    assert _contents(tmp_path / "direct") == VALUES


def test_import_a_diskcache_directory(tmp_path: Path) -> None:
    diskcache = importlib.import_module("diskcache")  # in the test extra
    with diskcache.Cache(str(tmp_path / "dc")) as cache:
        for key, value in VALUES.items():
            cache[key] = value
        cache[7] = "int key"
        cache["big"] = "x" * 100_000  # kept in a file of its own by diskcache
    report = logshelf.import_from(tmp_path / "dc", tmp_path / "new")
    assert (report.kind, report.converted_keys) == ("diskcache", 1)
    assert _contents(tmp_path / "new") == {**VALUES, "7": "int key", "big": "x" * 100_000}


def test_an_unknown_file_asks_for_a_kind(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="kind="):
        logshelf.import_from(tmp_path / "notes.txt", tmp_path / "new")
    with pytest.raises(FileNotFoundError):
        logshelf.import_from(tmp_path / "absent", tmp_path / "new")


# -- atomicity -----------------------------------------------------------------


def _dumb_shelf_with_a_corrupt_value(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    raw = importlib.import_module("dbm.dumb").open(str(src), "n")
    for i in range(10):
        raw[f"k{i}".encode()] = pickle.dumps(i)
    raw[b"k5"] = b"this is no pickle"
    raw.close()
    return src


def test_a_failure_midway_leaves_nothing_at_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transfer, "_PROGRESS_EVERY", 1)
    monkeypatch.setattr(_transfer, "_BATCH", 2)  # some batches are written before the failure
    lines: list[str] = []
    src = _dumb_shelf_with_a_corrupt_value(tmp_path)
    before = _siblings(tmp_path / "new")
    with pytest.raises(ValueError, match="key 'k5'"):
        logshelf.import_from(src, tmp_path / "new", progress=lines.append)
    assert len(lines) >= 4  # it got that far
    assert _siblings(tmp_path / "new") == before


def test_an_exception_from_the_progress_callback_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transfer, "_PROGRESS_EVERY", 3)

    def stop(line: str) -> None:
        if line.startswith("6 "):
            raise KeyboardInterrupt

    src = tmp_path / "data.pkl"
    src.write_bytes(pickle.dumps({f"k{i}": i for i in range(10)}))
    with pytest.raises(KeyboardInterrupt):
        logshelf.import_from(src, tmp_path / "new", progress=stop)
    assert _siblings(tmp_path / "new") == ["data.pkl"]


def test_an_existing_destination_is_refused_and_left_alone(tmp_path: Path) -> None:
    src = tmp_path / "data.pkl"
    src.write_bytes(pickle.dumps({"a": 1}))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "mine").write_text("keep")
    with pytest.raises(FileExistsError):
        logshelf.import_from(src, dst)
    assert [p.name for p in dst.iterdir()] == ["mine"]
    assert (dst / "mine").read_text() == "keep"


# -- export --------------------------------------------------------------------


def _store(path: Path, values: dict[str, Any]) -> Path:
    with logshelf.open(path, "n") as db:
        db.update(values)
    return path


def test_export_json_lines_round_trips_through_import(tmp_path: Path) -> None:
    values = {"b": [1, "é", None], "a": {"x": 1.5}, "c": True}
    src = _store(tmp_path / "src", values)
    assert logshelf.export(src, tmp_path / "out.jsonl") == 3
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c"]  # sorted
    logshelf.import_from(tmp_path / "out.jsonl", tmp_path / "back")
    assert _contents(tmp_path / "back") == values


def test_export_pickle_round_trips(tmp_path: Path) -> None:
    values = {"set": {1, 2}, "tuple": (1, "a"), "bytes": b"\x00"}
    src = _store(tmp_path / "src", values)
    assert logshelf.export(src, tmp_path / "out.pkl", format="pickle") == 3
    assert pickle.loads((tmp_path / "out.pkl").read_bytes()) == values
    logshelf.import_from(tmp_path / "out.pkl", tmp_path / "back")
    assert _contents(tmp_path / "back") == values


def test_export_of_a_value_json_cannot_hold_names_the_key_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    src = _store(tmp_path / "src", {"a": 1, "b": {1, 2}, "c": 3})
    with pytest.raises(TypeError, match=r"key 'b' is a set"):
        logshelf.export(src, tmp_path / "out.jsonl")
    assert _siblings(tmp_path / "out.jsonl") == ["src"]


def test_export_refuses_an_existing_file(tmp_path: Path) -> None:
    src = _store(tmp_path / "src", {"a": 1})
    (tmp_path / "out.jsonl").write_text("mine")
    with pytest.raises(FileExistsError):
        logshelf.export(src, tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_text() == "mine"
    with pytest.raises(ValueError, match="format"):
        logshelf.export(src, tmp_path / "other", format="csv")


def test_export_gives_the_file_the_usual_permissions(tmp_path: Path) -> None:
    """The exported file gets 0666 less the umask, as any file the user writes,
    not the 0600 of a temporary file."""
    with logshelf.open(tmp_path / "db") as db:
        db["k"] = 1
    old = os.umask(0o022)
    try:
        logshelf.export(tmp_path / "db", tmp_path / "out.jsonl")
    finally:
        os.umask(old)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o644
