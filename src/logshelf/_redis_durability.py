"""durability="always" on Redis: what the server must be configured for,
and the wait after every write (``docs/redis.md``, "Durability").

A reply to a write means the server applied it in memory. For "always" a
write returns only once it is also on disk: with ``WAITAOF`` (Redis 7.2+)
when the server has an append-only file, else the server itself must fsync
before it replies (``appendonly yes`` with ``appendfsync always``), which
is checked when the store opens. With ``replicas=N`` in the URL a write
also waits until N replicas acknowledged it (``WAIT``, or ``WAITAOF``'s
replica count: written to their append-only files too). Both wait for the
writes of the connection they are sent on, so the store sends the wait in
one pipeline with the write: another thread's connection would confirm
nothing.
"""

from __future__ import annotations

import time
from typing import Any

from ._redis_client import MOVED, UNAVAILABLE, master_of, refresh
from .errors import StoreError

__all__ = ["WAIT_MS", "Durable", "write_and_wait"]

#: Seconds a durable write on a Cluster keeps retrying through a failover.
FAILOVER_S = 30.0

#: Milliseconds a write waits for its acknowledgements before it fails.
WAIT_MS = 10_000


class Durable:
    """The wait after each write of a durability="always" handle: a command
    sent in one pipeline with the write, and the check of its reply."""

    def __init__(self, where: str, replicas: int, waitaof: bool) -> None:
        self._where = where
        self._replicas = replicas
        self._waitaof = waitaof

    @classmethod
    def for_server(cls, client: Any, where: str, replicas: int) -> Durable:
        """The wait the server ``client`` talks to allows.

        Raises:
            ValueError: the server does not put a write on disk before a
                reply can say so (no AOF, or AOF without fsync on every
                write and no WAITAOF); the message says what to configure.
        """
        info = client.info("server") | client.info("persistence")
        version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
        aof = bool(info.get("aof_enabled"))
        if aof and version >= (7, 2):
            return cls(where, replicas, waitaof=True)
        fsync: object = None
        if aof:
            try:
                fsync = client.config_get("appendfsync").get("appendfsync")
            except Exception:
                fsync = None  # CONFIG disabled (a managed server): cannot tell
        if fsync not in (b"always", "always"):
            raise ValueError(
                f"durability='always' on {where} needs the server to fsync every "
                "write: appendonly yes with appendfsync always (or Redis 7.2+ with "
                "appendonly yes, for WAITAOF); see docs/redis.md"
            )
        return cls(where, replicas, waitaof=False)

    def command(self) -> tuple[Any, ...] | None:
        """The command to send right after each write, on the same
        connection (WAIT and WAITAOF wait for that connection's writes), or
        None when the server's reply already means "on disk" (appendfsync
        always, no replicas asked for)."""
        if self._waitaof:
            return ("WAITAOF", 1, self._replicas, WAIT_MS)
        if self._replicas:
            return ("WAIT", self._replicas, WAIT_MS)
        return None

    def check(self, reply: Any) -> None:
        """Raise unless ``reply`` (to :meth:`command`) confirms the write.

        Raises:
            StoreError: the acknowledgements did not come within WAIT_MS (the
                write is applied; its durability is not confirmed).
        """
        replicas = self._replicas
        if self._waitaof:
            local, remote = reply
            if int(local) < 1 or int(remote) < replicas:
                raise StoreError(
                    f"the write to {self._where} is applied but not confirmed on disk "
                    f"(WAITAOF: local {local}, replicas {remote} of {replicas})"
                )
        elif int(reply) < replicas:
            raise StoreError(
                f"the write to {self._where} is applied but reached {int(reply)} of "
                f"{replicas} replicas within {WAIT_MS} ms"
            )


def write_and_wait(
    client: Any, key: bytes, script: Any, keys: list[Any], args: list[Any], wait: tuple[Any, ...]
) -> Any:
    """``[script reply, wait reply]``: the write script and the wait in one
    pipeline to the server that serves ``key`` (the master of its slot on a
    Cluster: a wait counts the writes of its own connection). On a Cluster
    whose master moved or died (a failover), the topology is learnt again
    and the write repeated (writes are idempotent) for up to
    :data:`FAILOVER_S` seconds; then the error is raised.
    """
    deadline = time.monotonic() + FAILOVER_S
    while True:
        server = master_of(client, key)
        pipe = server.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command(*wait)
        try:
            return pipe.execute()
        except (MOVED, *UNAVAILABLE):
            if server is client or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            refresh(client)
