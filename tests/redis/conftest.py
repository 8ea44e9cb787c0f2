"""Helpers of the Redis tests: a raw client on the test's server, to look at
and damage what logshelf stored."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import redis


def namespace_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["namespace"][0]


def raw_client(url: str) -> redis.Redis:
    parts = urlsplit(url)
    return redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the server of ``redis_url``."""
    client = raw_client(redis_url)
    yield client
    client.close()


def value_key(url: str, key: str) -> bytes:
    """The Redis key holding the record of ``key`` (docs/format.md section 9)."""
    return f"logshelf:{{{namespace_of(url)}}}:v:{key}".encode()
