"""durability="always" on Redis: what the server must be configured for,
and the wait after every write (``docs/redis.md``, "Durability").

A reply to a write means the server applied it in memory. For "always" a
write returns only once it is also on disk: with ``WAITAOF`` (Redis 7.2+)
when the server has an append-only file, else the server itself must fsync
before it replies (``appendonly yes`` with ``appendfsync always``), which
is checked when the store opens. With ``replicas=N`` in the URL a write
also waits until N replicas acknowledged it (``WAIT``, or ``WAITAOF``'s
replica count: written to their append-only files too).
"""

from __future__ import annotations

from typing import Any

from .errors import StoreError

__all__ = ["WAIT_MS", "Durable"]

#: Milliseconds a write waits for its acknowledgements before it fails.
WAIT_MS = 10_000


class Durable:
    """The wait after each write of a durability="always" handle."""

    def __init__(self, client: Any, where: str, replicas: int, waitaof: bool) -> None:
        self._client = client
        self._where = where
        self._replicas = replicas
        self._waitaof = waitaof

    @classmethod
    def check(cls, client: Any, where: str, replicas: int) -> Durable:
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
            return cls(client, where, replicas, waitaof=True)
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
        return cls(client, where, replicas, waitaof=False)

    def wait(self) -> None:
        """Block until the writes so far are as durable as promised.

        Raises:
            StoreError: the acknowledgements did not come within WAIT_MS (the
                write is applied; its durability is not confirmed).
        """
        replicas = self._replicas
        if self._waitaof:
            local, remote = self._client.execute_command("WAITAOF", 1, replicas, WAIT_MS)
            if int(local) < 1 or int(remote) < replicas:
                raise StoreError(
                    f"the write to {self._where} is applied but not confirmed on disk "
                    f"(WAITAOF: local {local}, replicas {remote} of {replicas})"
                )
        elif replicas:
            acked = int(self._client.execute_command("WAIT", replicas, WAIT_MS))
            if acked < replicas:
                raise StoreError(
                    f"the write to {self._where} is applied but reached {acked} of "
                    f"{replicas} replicas within {WAIT_MS} ms"
                )
