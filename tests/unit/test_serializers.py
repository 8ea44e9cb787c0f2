"""open(..., serializer=): records of several serializers in one store."""

from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _serializers


class Upper:
    """A custom serializer: stable name, dumps and loads."""

    name = "test.upper"

    def dumps(self, obj: Any) -> bytes:
        return str(obj).upper().encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()


@pytest.fixture(autouse=True)
def _forget_registrations():
    yield
    _serializers._registered.clear()


def test_json_records_are_plain_json_after_the_envelope(store_path: Path) -> None:
    value = {"name": "Ada", "tags": ["a", "b"], "n": 3, "ok": True, "none": None, "é": 1.5}
    with logshelf.open(store_path, serializer="json") as db:
        db["user:1"] = value
        assert db["user:1"] == value
        stored = db._engine.get("user:1")
    name, payload = _serializers.split_envelope(stored)
    assert name == "json" and json.loads(payload) == value  # readable from any language
    with logshelf.open(store_path, "r") as plain:  # a pickle handle reads it too
        assert plain["user:1"] == value


def test_json_refuses_what_it_cannot_encode_and_writes_nothing(store_path: Path) -> None:
    with logshelf.open(store_path, serializer="json") as db:
        with pytest.raises(TypeError, match="set"):
            db["k"] = {1, 2}
        with pytest.raises(TypeError, match=r"NaN|nan|Out of range"):
            db["k"] = float("nan")
        with pytest.raises(TypeError, match="json"):
            db.set_many({"a": 1, "b": object()})
        assert len(db) == 0


def test_raw_is_bytes_in_bytes_out(store_path: Path) -> None:
    with logshelf.open(store_path, serializer="raw", compression="zlib") as db:
        db["blob"] = b"\x00\x80" * 1000
        db["view"] = memoryview(b"abc")
        assert db["blob"] == b"\x00\x80" * 1000 and db["view"] == b"abc"
        with pytest.raises(TypeError, match="raw"):
            db["text"] = "not bytes"
        assert "text" not in db


@pytest.mark.parametrize("name", ["dill", "cloudpickle"])
def test_dill_and_cloudpickle_store_lambdas(store_path: Path, name: str) -> None:
    importlib.import_module(name)  # optional extras, both in the test extra
    factor = 3
    with logshelf.open(store_path, serializer=name) as db:
        db["f"] = lambda x: x * factor
        assert db["f"](2) == 6
    with logshelf.open(store_path, "r") as plain:  # read back by name, any handle
        assert plain["f"](5) == 15


def test_a_store_mixes_serializers_and_each_record_reads_with_its_own(store_path: Path) -> None:
    with logshelf.open(store_path) as db:
        db["pickled"] = (1, 2)
    with logshelf.open(store_path, serializer="json") as db:
        db["json"] = [1, 2]
    with logshelf.open(store_path, serializer="raw") as db:
        db["raw"] = b"12"
        assert db["pickled"] == (1, 2) and db["json"] == [1, 2]
        assert db.get_many(["pickled", "json", "raw"]) == {
            "pickled": (1, 2),
            "json": [1, 2],
            "raw": b"12",
        }
        assert dict(db.items("")) == {"pickled": (1, 2), "json": [1, 2], "raw": b"12"}
        db.compact()  # compaction copies bytes: every record still reads
        assert db["json"] == [1, 2] and db["pickled"] == (1, 2)


def test_custom_serializer_is_recorded_by_name(store_path: Path) -> None:
    with logshelf.open(store_path, serializer=Upper()) as db:
        db["k"] = "hello"
        assert db["k"] == "HELLO"
    with logshelf.open(store_path, "r") as plain:
        with pytest.raises(logshelf.SerializerUnavailableError, match=r"test\.upper"):
            plain["k"]
        assert plain.get("missing") is None
        logshelf.register_serializer(Upper())
        assert plain["k"] == "HELLO"


def test_cpython_315_serializer_and_deserializer_callables(store_path: Path) -> None:
    def to_bytes(obj: Any, protocol: int) -> bytes:
        return pickle.dumps(obj, protocol)

    def from_bytes(data: bytes) -> Any:
        return pickle.loads(data)

    with logshelf.open(store_path, serializer=to_bytes, deserializer=from_bytes) as db:
        db["k"] = {"a": 1}
        assert db["k"] == {"a": 1}
    with pytest.raises(ValueError, match="together"):
        logshelf.open(store_path, serializer=to_bytes)
    with pytest.raises(ValueError, match="together"):
        logshelf.open(store_path, deserializer=from_bytes)


def test_bad_serializers_are_refused_before_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "never"
    with pytest.raises(ValueError, match="serializer must be one of"):
        logshelf.open(target, serializer="yaml")
    with pytest.raises(TypeError, match="serializer"):
        logshelf.open(target, serializer=42)

    class NoName(Upper):
        name = ""

    with pytest.raises(ValueError, match="name"):
        logshelf.open(target, serializer=NoName())
    assert not target.exists()


def test_a_missing_optional_package_is_named(tmp_path: Path, monkeypatch) -> None:
    real = _serializers.importlib.import_module

    def no_dill(name: str) -> Any:
        if name == "dill":
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(_serializers.importlib, "import_module", no_dill)
    with pytest.raises(logshelf.SerializerUnavailableError, match="pip install dill"):
        logshelf.open(tmp_path / "s", serializer="dill")
    assert isinstance(logshelf.SerializerUnavailableError("x"), ImportError)


def test_pickle_records_are_unchanged_and_no_pickle_starts_like_an_envelope(
    store_path: Path,
) -> None:
    """The default writes the pickle stream itself, as before this change; and
    every pickle protocol starts with a byte an envelope never has."""
    with logshelf.open(store_path) as db:
        db["k"] = {"x": 1}
        assert db._engine.get("k") == pickle.dumps({"x": 1}, logshelf.DEFAULT_PROTOCOL)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        for value in (None, 0, "", b"", [], {}, (1,), 1.5):
            assert pickle.dumps(value, protocol)[0] != _serializers.ENVELOPE
    with pytest.raises(logshelf.CorruptionError):
        _serializers.split_envelope(b"\x00\x09")
