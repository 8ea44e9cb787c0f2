"""What every backend promises beyond the mapping: flags, bulk calls,
transactions, codecs, serializers, writeback, prefix scans, closing. Each
test runs on a store directory and on a Redis namespace (conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import logshelf


def test_flags_r_w_c_n(store_path: Path) -> None:
    for flag in ("r", "w"):
        with pytest.raises(logshelf.StoreNotFoundError):
            logshelf.open(store_path, flag)
    with logshelf.open(store_path, "c") as db:
        db["a"] = 1
    with logshelf.open(store_path, "w") as db:
        db["b"] = 2
    with logshelf.open(store_path, "r") as db:
        assert dict(db) == {"a": 1, "b": 2}
        with pytest.raises(logshelf.ReadOnlyError):
            db["c"] = 3
        with pytest.raises(logshelf.ReadOnlyError):
            del db["a"]
        with pytest.raises(logshelf.ReadOnlyError):
            db.set_many({"c": 3})
    with logshelf.open(store_path, "n") as db:
        assert len(db) == 0
        db["fresh"] = True
    with logshelf.open(store_path, "c") as db:
        assert dict(db) == {"fresh": True}


def test_bulk_calls(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db.set_many({f"k{i}": i for i in range(300)})
        db.set_many([("k0", "first"), ("k0", "later wins")])
        got = db.get_many(["k0", "k1", "absent"], default="-")
        assert got == {"k0": "later wins", "k1": 1, "absent": "-"}
        assert db.delete_many(["k1", "k2", "absent", "k1"]) == 2
        assert len(db) == 298 and "k1" not in db
        db.update({"u": 1}, v=2)
        assert db.get_many(["u", "v"]) == {"u": 1, "v": 2}


def test_transaction_is_atomic_and_reads_its_own_writes(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db.update({"keep": 1, "gone": 2})
        with db.transaction():
            db["new"] = 3
            del db["gone"]
            assert db["new"] == 3 and "gone" not in db
            assert sorted(db) == ["keep", "new"] and len(db) == 2
            assert db.get_many(["new", "gone", "keep"]) == {"new": 3, "gone": None, "keep": 1}
            with db.transaction():  # nested: joins the outer one
                db["inner"] = 4
        assert dict(db) == {"keep": 1, "new": 3, "inner": 4}
        with pytest.raises(ZeroDivisionError), db.transaction():
            db["keep"] = "changed"
            db["other"] = 5
            db.delete_many(["new", "inner"])
            1 / 0  # noqa: B018
        assert dict(db) == {"keep": 1, "new": 3, "inner": 4}
        with db.transaction():
            db["n"] = db.get("n", 0) + 1
        assert db["n"] == 1


@pytest.mark.parametrize("compression", [None, "lz4", "zlib", "bz2"])
def test_codecs_mix_within_one_store(store_path: Path, compression: str | None) -> None:
    value = {"text": "abc" * 2000, "numbers": list(range(1000))}
    with logshelf.open(store_path, compression=compression) as db:
        db["v"] = value
        db["small"] = 1
    with logshelf.open(store_path, compression="zlib" if compression else "lz4") as db:
        db["w"] = value
        assert db["v"] == value and db["w"] == value and db["small"] == 1


def test_serializers_mix_within_one_store(store_path: Path) -> None:
    with logshelf.open(store_path, serializer="json") as db:
        db["json"] = {"a": [1, 2]}
    with logshelf.open(store_path, serializer="raw") as db:
        db["raw"] = b"\x00bytes"
    with logshelf.open(store_path) as db:
        db["pickle"] = {1, 2}
        assert dict(db) == {"json": {"a": [1, 2]}, "raw": b"\x00bytes", "pickle": {1, 2}}


def test_writeback_writes_mutated_entries_back(store_path: Path) -> None:
    with logshelf.open(store_path, writeback=True) as db:
        db["list"] = []
        db["list"].append(1)
        assert db["list"] == [1]
    with logshelf.open(store_path) as db:
        assert db["list"] == [1]
        db["list"].append(2)  # a copy: lost, as with shelve
        assert db["list"] == [1]


def test_prefix_scans(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db.update({"user:1": "a", "user:2": "b", "group:1": "g", "user": "u"})
        assert sorted(db.keys("user:")) == ["user:1", "user:2"]
        assert dict(db.items("user")) == {"user:1": "a", "user:2": "b", "user": "u"}
        assert sorted(db.values("group:")) == ["g"]
        assert sorted(db.keys("")) == sorted(db)


def test_large_values_round_trip(store_path: Path) -> None:
    big = bytes(range(256)) * (12 << 12)  # 12 MiB
    with logshelf.open(store_path, serializer="raw") as db:
        db["big"] = big
        db["big2"] = big[::-1]
    with logshelf.open(store_path, "r", serializer="raw") as db:
        assert db["big"] == big and db["big2"] == big[::-1]


def test_closed_store_refuses_use_and_close_is_idempotent(store_path: Path) -> None:
    db = logshelf.open(store_path)
    db["k"] = 1
    db.sync()
    db.close()
    db.close()
    assert db.closed
    for use in (lambda: db["k"], lambda: db.__setitem__("k", 2), lambda: len(db)):
        with pytest.raises(logshelf.StoreClosedError):
            use()


def test_keys_are_str_only_and_any_str_works(store_path: Path) -> None:
    odd: dict[str, Any] = {"": 0, " ": 1, "*": 2, "ключ/🔑": 3, "a" * 1000: 4, "{tag}": 5}
    with logshelf.open(store_path) as db:
        db.update(odd)
        assert dict(db) == odd
        with pytest.raises(TypeError):
            db[1] = 1  # type: ignore[index]
        with pytest.raises(ValueError):
            db["\udc80"] = 1
