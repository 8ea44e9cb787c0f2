"""The Shelf behaves like a dict for every MutableMapping operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import logshelf

SAMPLE: dict[str, Any] = {
    "a": 1,
    "b": [1, 2],
    "c": {"x": None},
    "ключ": "значение",
    "": b"empty key",
}


def _pair(path: Path) -> tuple[logshelf.Shelf, dict[str, Any]]:
    shelf = logshelf.open(path)
    shelf.update(SAMPLE)
    return shelf, dict(SAMPLE)


def test_mapping_reads_match_dict(store_path: Path) -> None:
    """Lookups, membership, len, iteration and views agree with a dict."""
    shelf, model = _pair(store_path)
    with shelf:
        assert len(shelf) == len(model)
        assert sorted(shelf) == sorted(model)
        assert sorted(shelf.keys()) == sorted(model.keys())
        assert sorted(map(repr, shelf.values())) == sorted(map(repr, model.values()))
        assert sorted(shelf.items(), key=repr) == sorted(model.items(), key=repr)
        for key in model:
            assert shelf[key] == model[key]
            assert key in shelf
        assert "missing" not in shelf
        assert 1 not in shelf  # non-str membership is simply False
        assert shelf.get("missing") is None
        assert shelf.get("missing", 7) == 7
        assert shelf == model
        with pytest.raises(KeyError) as info:
            shelf["missing"]
        assert info.value.args == ("missing",)


def test_mapping_writes_match_dict(store_path: Path) -> None:
    """Every mutating MutableMapping method leaves the same state as on a dict."""
    shelf, model = _pair(store_path)
    with shelf:
        for target in (shelf, model):
            target["d"] = 4
            target["a"] = "overwritten"
            del target["b"]
            assert target.pop("c") == {"x": None}
            assert target.pop("nope", "dflt") == "dflt"
            assert target.setdefault("e", [5]) == [5]
            assert target.setdefault("e", "ignored") == [5]
            target.update({"f": 6}, g=7)
            target.update([("h", 8)])
        assert shelf == model
        with pytest.raises(KeyError):
            del shelf["b"]
        with pytest.raises(KeyError):
            shelf.pop("b")
        key, value = shelf.popitem()
        assert model.pop(key) == value
        assert shelf == model
        shelf.clear()
        assert len(shelf) == 0 and list(shelf) == []
        with pytest.raises(KeyError):
            shelf.popitem()


def test_mapping_state_survives_reopen(store_path: Path) -> None:
    """After close and reopen the store equals the dict it mirrored."""
    shelf, model = _pair(store_path)
    with shelf:
        shelf["late"] = "value"
        del shelf["a"]
    model["late"] = "value"
    del model["a"]
    with logshelf.open(store_path, "r") as again:
        assert dict(again) == model


def test_mapping_iteration_survives_mutation(db: logshelf.Shelf) -> None:
    """Iterating while writing does not raise: iteration walks a snapshot."""
    db.update({f"k{i}": i for i in range(10)})
    seen = []
    for key in db:
        seen.append(key)
        db[f"new-{key}"] = 1
    assert sorted(seen) == sorted(f"k{i}" for i in range(10))
    assert len(db) == 20
