"""The one place the Redis backend imports ``redis`` and makes a client.

Imported only when a ``redis://``, ``rediss://`` or ``redis+cluster://``
URL is opened; without the package it raises an ImportError that says how
to install it.
"""

from __future__ import annotations

from typing import Any

from ._redis_url import RedisTarget

try:
    import redis
    import redis.exceptions as rexc
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "logshelf.open('redis://...') needs the redis package: pip install logshelf[redis]"
    ) from _exc

__all__ = ["MOVED", "UNAVAILABLE", "close", "connect", "master_of", "refresh", "rexc"]

#: What a node answers when it no longer serves a slot (after a failover).
MOVED = rexc.MovedError

#: The client's errors that mean "the server cannot be used right now":
#: raised as BackendUnavailableError.
UNAVAILABLE = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.ClusterDownError,  # a failover in progress: no master for the slot yet
    rexc.TryAgainError,
    rexc.RedisClusterException,  # slots not covered, no node reachable
)


def connect(target: RedisTarget, durability: str, where: str) -> Any:
    """A client of the server, or of the Cluster the seed nodes belong to.

    One server: no retries (a failure is reported, never repeated behind the
    caller's back). A Cluster: redis-py's own retries, which follow a
    failover to the promoted replica; every write is idempotent (the same
    records again), so a repeated one does no harm. (``durability`` and
    ``where`` are for the caller's checks; see :func:`master_of`.)
    """
    if not target.seeds:
        return redis.Redis.from_url(
            target.client_url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=5,
            socket_timeout=60,
        )
    nodes = [ClusterNode(host, port) for host, port in target.seeds[1:]]  # type: ignore[no-untyped-call]
    return RedisCluster.from_url(
        target.client_url, startup_nodes=nodes, socket_connect_timeout=5, socket_timeout=60
    )


def close(client: Any) -> None:
    """Close a client and every connection it opened. A Cluster client of
    redis-py 8.1 (the newest for Python 3.10) keeps connections to nodes it
    met through a topology refresh after ``close()``; they are disconnected
    here too, so nothing is left for the garbage collector to warn about."""
    manager = getattr(client, "nodes_manager", None)
    nodes = []
    if manager is not None:
        nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
    client.close()
    for node in nodes:
        connection = getattr(node, "redis_connection", None)
        if connection is not None:
            connection.connection_pool.disconnect()


def master_of(client: Any, key: bytes) -> Any:
    """A client of the one server that serves ``key``: ``client`` itself, or
    on a Cluster the master of the key's slot. durability="always" sends
    each write and its WAIT / WAITAOF there in one pipeline, since they wait
    for the writes of the connection they are sent on."""
    if not isinstance(client, RedisCluster):
        return client
    return client.get_redis_connection(client.get_node_from_key(key))  # type: ignore[no-untyped-call]


def refresh(client: Any) -> None:
    """Learn a Cluster's topology again (after MOVED or a dead master)."""
    if isinstance(client, RedisCluster):
        client.nodes_manager.initialize()
