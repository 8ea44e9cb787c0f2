"""Signed stores (``key=``, docs/security.md) behave the same on every
backend: records are signed and checked, keys must fit, rotation works,
and a record written without the key is refused before it loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import logshelf

KEY = b"contract key of 32 bytes ........"
NEW_KEY = b"another contract key, 32 bytes .."


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_signed_store_round_trips_and_checks_every_read(store_path: Path | str) -> None:
    with logshelf.open(store_path, key=KEY, compression="zlib") as db:
        db["small"] = {"a": 1}
        db["big"] = "x" * 300_000  # compressed, and chunked on Redis
        db.update({"b": [1, 2], "c": "three"})
        with db.transaction():
            db["t"] = 4
            assert db["t"] == 4
    with logshelf.open(store_path, "r", key=[NEW_KEY, KEY]) as db:
        assert db["small"] == {"a": 1} and db["big"] == "x" * 300_000
        assert db.get_many(["b", "c", "t"]) == {"b": [1, 2], "c": "three", "t": 4}


def test_keys_must_fit(store_path: Path | str) -> None:
    with logshelf.open(store_path, key=KEY) as db:
        db["a"] = 1
    with pytest.raises(logshelf.SigningError, match="key="):
        logshelf.open(store_path)
    with pytest.raises(logshelf.SigningError, match="none of the keys"):
        logshelf.open(store_path, "r", key=NEW_KEY)
    with logshelf.open(store_path, "n") as db:  # emptied, unsigned from now on
        db["plain"] = 1
    with pytest.raises(logshelf.SigningError, match="not a signed"):
        logshelf.open(store_path, key=KEY)


def test_rotation_moves_the_key_check_to_the_newest_key(store_path: Path | str) -> None:
    with logshelf.open(store_path, key=KEY) as db:
        db["old"] = "signed with the old key"
    with logshelf.open(store_path, key=[NEW_KEY, KEY]) as db:
        db["new"] = "signed with the new key"
        assert db["old"] == "signed with the old key"
    with pytest.raises(logshelf.SigningError):
        logshelf.open(store_path, "r", key=KEY)


def test_a_record_written_without_the_key_is_refused(
    store_path: Path | str, tmp_path: Path
) -> None:
    """A writer without the key (it bypasses open()'s check through the
    bytes store) adds a hostile pickle: a reader with the key refuses it,
    and nothing runs."""
    marker = tmp_path / "MARKER"
    with logshelf.open(store_path, key=KEY) as db:
        db["good"] = 1
        signer, db._engine._signer = db._engine._signer, None  # type: ignore[attr-defined]
        try:
            db["evil"] = _Marker(marker)
        finally:
            db._engine._signer = signer  # type: ignore[attr-defined]
    with logshelf.open(store_path, "r", key=KEY) as db:
        assert db["good"] == 1
        with pytest.raises(logshelf.TamperedError, match="'evil'"):
            db["evil"]
    assert not marker.exists()
