"""``redis://`` and ``rediss://`` store URLs: recognised and parsed here,
without importing the ``redis`` package (the local store never needs it).

``redis://[user:password@]host[:port][/db]?namespace=NAME&...`` names a
namespace of one server; ``redis+cluster://host:port,host:port/?namespace=NAME``
one of a Redis Cluster (the hosts are seed nodes). logshelf's own query
parameters (below) are taken out and the rest of the URL goes to the
client's ``from_url`` as it is, so its parameters (``socket_timeout``,
``ssl_cert_reqs``, ...) keep working.
See ``docs/redis.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._redis_format import check_namespace

__all__ = ["SCHEMES", "RedisTarget", "is_url", "parse_url"]

SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
DEFAULT_NAMESPACE = "default"
#: Values above this many stored bytes are split into chunks of this size.
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1024
#: Seconds a transaction's lock outlives a holder that stopped renewing it.
DEFAULT_LOCK_TTL = 30.0


@dataclass(frozen=True)
class RedisTarget:
    """A parsed store URL."""

    #: What ``redis.Redis.from_url`` gets (logshelf's parameters removed).
    client_url: str
    #: The URL without its password: the store's ``path``, and in messages.
    display: str
    namespace: str
    #: Replicas a write waits for under durability="always" (WAIT).
    replicas: int
    chunk_size: int
    lock_ttl: float
    #: Redis Cluster: the seed nodes ``(host, port)``; empty for one server
    #: (``client_url`` then names the first seed, for its other parameters).
    seeds: tuple[tuple[str, int], ...] = ()


def is_url(filename: object) -> TypeGuard[str]:
    """Does ``filename`` name a Redis store rather than a path?"""
    return isinstance(filename, str) and filename.startswith(SCHEMES)


def _number(name: str, text: str, low: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= low or math.isinf(value):
        raise ValueError(f"{name} in a redis URL must be a number >= {low}, not {text!r}")
    return value


def parse_url(url: str) -> RedisTarget:
    """Split ``url`` into the client's URL and logshelf's parameters.

    Raises:
        ValueError: a bad namespace, ``replicas``, ``chunk_size`` or
            ``lock_ttl`` (the message names it), or a parameter given twice.
    """
    parts = urlsplit(url)
    ours = {"namespace", "replicas", "chunk_size", "lock_ttl"}
    mine: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ours:
            if name in mine:
                raise ValueError(f"{name} is given twice in {url!r}")
            mine[name] = value
        else:
            rest.append((name, value))
    seeds: tuple[tuple[str, int], ...] = ()
    client_parts = parts
    if parts.scheme.endswith("+cluster"):
        credentials, at, hosts = parts.netloc.rpartition("@")
        seeds = tuple(_seed(host, url) for host in hosts.split(","))
        client_parts = parts._replace(
            scheme=parts.scheme.removesuffix("+cluster"),
            netloc=f"{credentials}{at}{seeds[0][0]}:{seeds[0][1]}",
        )
    client_url = urlunsplit(client_parts._replace(query=urlencode(rest)))
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in credentials else f"{user}@{host}"
    shown = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    display = urlunsplit(parts._replace(netloc=netloc, query=shown))
    return RedisTarget(
        client_url=client_url,
        display=display,
        namespace=check_namespace(mine.get("namespace", DEFAULT_NAMESPACE)),
        replicas=int(_number("replicas", mine.get("replicas", "0"), 0)),
        chunk_size=int(
            _number("chunk_size", mine.get("chunk_size", str(DEFAULT_CHUNK_SIZE)), MIN_CHUNK_SIZE)
        ),
        lock_ttl=_number("lock_ttl", mine.get("lock_ttl", str(DEFAULT_LOCK_TTL)), 0.1),
        seeds=seeds,
    )


def _seed(text: str, url: str) -> tuple[str, int]:
    """``(host, port)`` of one ``host:port`` of a Cluster URL."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a Cluster URL lists seed nodes as host:port,host:port: {url!r}")
    return host.strip("[]"), int(port)
