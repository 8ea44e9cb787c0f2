"""Shared fixtures: a fresh store path per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import logshelf


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Path of a store that does not exist yet."""
    return tmp_path / "store.db"


@pytest.fixture(params=[None, "lz4", "zlib", "bz2"])
def compression(request: pytest.FixtureRequest) -> str | None:
    """Every compression setting."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def db(store_path: Path) -> Iterator[logshelf.Shelf]:
    """An open, empty store with default settings."""
    shelf = logshelf.open(store_path)
    yield shelf
    shelf.close()
