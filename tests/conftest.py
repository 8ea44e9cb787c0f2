"""Shared fixtures (a fresh store path per test, open descriptors, real
Redis servers) and the per-test timeouts of the crash, concurrency and Redis
tests."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import logshelf
from _redis_server import RedisClusterServers, RedisServer


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


#: Per-test timeouts for the tests of these directories that name none. The
#: global timeout (300 s in pyproject.toml) is the last resort; a hang in one
#: of these tests should fail within seconds. The slowest unmarked crash test
#: (every truncation offset of the last batch) takes about 8 s on the
#: project's 2-core machine, the concurrency tests about a second; tests
#: that take longer carry their own mark, a few times their measured duration.
DEFAULT_TIMEOUTS = {"crash": 30.0, "concurrency": 20.0, "on_redis": 30.0}
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        timeout = DEFAULT_TIMEOUTS.get(item.path.parent.name)
        if (
            timeout is not None
            and item.path.parent.parent == HERE
            and item.get_closest_marker("timeout") is None
        ):
            item.add_marker(pytest.mark.timeout(timeout))


def _open_files(store: Path, deleted: bool = False) -> list[str]:
    """Files under ``store`` this process holds open (Linux /proc/self/fd);
    with ``deleted``, only those deleted since (named "... (deleted)")."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    held = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # the descriptor that listed the directory, closed by now
        if target.startswith(str(store) + os.sep) and (
            not deleted or target.endswith(" (deleted)")
        ):
            held.append(target)
    return held


@pytest.fixture
def open_files() -> Callable[..., list[str]]:
    """``open_files(store, deleted=False)``: see :func:`_open_files`."""
    return _open_files


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session (tests use their own namespaces)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


_namespaces = itertools.count()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A store URL on the session's server, in a namespace no other test uses."""
    return f"{redis_server.url}?namespace=t{os.getpid()}-{next(_namespaces)}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and restart."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One real Redis Cluster (3 masters, 1 replica each) for the session."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    """A store URL on the session's Cluster, in a namespace no other test uses."""
    return f"{redis_cluster.url}?namespace=t{os.getpid()}-{next(_namespaces)}"
