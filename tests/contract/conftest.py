"""The contract suite runs on every backend: each test of this directory
runs on a store directory, on a namespace of a real Redis server and on one
of a real three-master Redis Cluster (``store_path`` is then a
``redis://`` or ``redis+cluster://`` URL, which ``logshelf.open`` and
``logshelf.Cache`` take wherever they take a path)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["disk", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def store_path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where a new, empty store opens: a directory path, or a Redis URL
    with a namespace no other test uses."""
    if backend == "redis":
        return str(request.getfixturevalue("redis_url"))
    if backend == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return tmp_path / "store.db"
