"""The server fixtures start real, separate redis-server processes."""

from __future__ import annotations

import redis

from _redis_server import RedisServer


def test_session_server_answers(redis_server: RedisServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        assert client.ping()
        assert client.config_get("dir")["dir"] == str(redis_server.workdir)
    finally:
        client.close()


def test_own_server_is_separate_and_restarts(
    own_redis: RedisServer, redis_server: RedisServer
) -> None:
    assert own_redis.port != redis_server.port
    client = redis.Redis(host="127.0.0.1", port=own_redis.port)
    try:
        client.set("k", b"v")
        own_redis.kill()
        own_redis.restart()
        assert client.get("k") is None  # nothing saved: a killed server forgets
    finally:
        client.close()
