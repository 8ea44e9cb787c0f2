"""Real ``redis-server`` processes for the tests (Debian's ``redis-server``
package; ``scripts/test-deps.sh`` installs it).

Each server listens on a free port of 127.0.0.1, keeps its files in its own
temporary directory, saves nothing unless asked (``--save ""``,
``--appendonly no``) and is stopped (SIGTERM, then SIGKILL) by whoever
started it. A missing binary fails loudly: these tests never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "free_port",
    "namespace_of",
    "server_binary",
    "value_key",
]

#: Seconds a server may take to answer PING after it was started.
STARTUP = 20.0


def server_binary() -> str:
    """The ``redis-server`` to run: ``$LOGSHELF_REDIS_SERVER`` or the one on PATH."""
    found = os.environ.get("LOGSHELF_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "redis-server is not installed: the Redis tests need it (they never skip). "
            "Run scripts/test-deps.sh, or apt-get install redis-server"
        )
    return found


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    """Does a server on ``port`` answer PING (with the inline protocol)?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 in ``workdir``."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start on a free port (another on a clash) and wait for PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(5):
            port = self.port or free_port()
            log = self.workdir / "redis.log"
            args = [
                server_binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--logfile", str(log),
                *self.extra,
            ]  # fmt: skip
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + STARTUP
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                if _ping(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            last = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
        raise RuntimeError(f"redis-server did not start in {self.workdir}:\n{last}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; reap the process. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (the port stays reserved for restart)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> RedisServer:
        """Start again on the same port (after :meth:`kill` or :meth:`stop`)."""
        self.stop()
        return self.start()


def namespace_of(url: str) -> str:
    """The ``namespace`` parameter of a store URL."""
    return parse_qs(urlsplit(url).query)["namespace"][0]


def value_key(url: str, key: str) -> bytes:
    """The Redis key holding the record of ``key`` (docs/format.md section 9)."""
    return f"logshelf:{{{namespace_of(url)}}}:v:{key}".encode()


class RedisClusterServers:
    """A Redis Cluster of real servers on 127.0.0.1: ``masters`` masters,
    each with ``replicas`` replicas, made with ``redis-cli --cluster create``.
    A node timeout of one second makes a failover take a few seconds."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 1, extra: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        #: More redis-server options for every node (later ones win).
        self.extra = extra
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL listing two seed nodes (no namespace)."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"redis+cluster://{seeds}/"

    def start(self) -> RedisClusterServers:
        try:
            for i in range(self.masters * (1 + self.replicas)):
                node = RedisServer(
                    self.workdir / f"node{i}",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "1000",
                    *self.extra,
                )  # fmt: skip
                self.nodes.append(node.start())
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is missing (Debian: apt-get install redis-tools)")
            subprocess.run(
                [cli, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and
        knows every master (all slots covered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                b"cluster_state:ok" in _command(node.port, b"CLUSTER INFO")
                for node in self.nodes
                if node.process is not None
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster in {self.workdir} did not become ok in {timeout} s")

    def master_of(self, slot: int) -> RedisServer:
        """The running node that serves ``slot`` as master."""
        for node in self.nodes:
            if node.process is None:
                continue
            for line in _command(node.port, b"CLUSTER NODES").decode().splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for part in fields[8:]:
                        low, _, high = part.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return node
        raise RuntimeError(f"no running master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _command(port: int, command: bytes) -> bytes:
    """The raw reply of one inline command (enough for CLUSTER INFO / NODES)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(command + b"\r\n")
            head = sock.recv(65536)
            if not head.startswith(b"$"):
                return head
            size = int(head[1 : head.index(b"\r\n")])
            data = head[head.index(b"\r\n") + 2 :]
            while len(data) < size:
                data += sock.recv(65536)
            return data[:size]
    except OSError:
        return b""
