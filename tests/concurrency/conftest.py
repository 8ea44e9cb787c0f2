"""Fixtures for the concurrency tests: independent child interpreters.

Children are started with ``subprocess`` and ``sys.executable`` running
``_worker.py`` by path (see its docstring for the line protocol), so they share
nothing with the test process but the files. The ``workers`` fixture kills and
reaps every child it started in a ``finally``, whatever the test did.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("_worker.py")

# Generous bounds for a loaded 2-core CI machine; the per-test timeouts stay the
# outer limit.
STARTUP = 60.0


class Worker:
    """One child process running a ``_worker.py`` command."""

    def __init__(self, command: str, args: dict[str, Any], stderr_path: Path) -> None:
        self.command = command
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), command, json.dumps(args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
            )
        self.pid = self.proc.pid
        self._buf = b""
        self._eof = False
        self.lines: list[str] = []

    def __repr__(self) -> str:
        return f"<Worker {self.command} pid={self.pid} rc={self.proc.returncode}>"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _fail(self, what: str) -> AssertionError:
        return AssertionError(
            f"worker {self.command} (pid {self.pid}): {what}; stdout lines {self.lines!r}; "
            f"exit status {self.proc.poll()!r}; stderr:\n{self.stderr()}"
        )

    def _read_line(self, deadline: float) -> str | None:
        """The next stdout line, or None at end of file."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            if self._eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail("timed out waiting for output")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._eof = True
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    def expect(self, word: str, timeout: float = STARTUP) -> None:
        """Wait until the worker prints the line ``word``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline)
            if line is None:
                raise self._fail(f"exited before printing {word!r}")
            if line == word:
                return
            if line.startswith("result "):
                raise self._fail(f"finished before printing {word!r}")

    def expect_prefix(self, prefix: str, timeout: float = STARTUP) -> str:
        """Wait for a line starting with ``prefix``; return the rest of it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline)
            if line is None:
                raise self._fail(f"exited before printing {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix) :]
            if line.startswith("result "):
                raise self._fail(f"finished before printing {prefix!r}")

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._fail(f"could not send {word!r}: the worker is gone") from None

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for a successful exit and return the worker's result."""
        deadline = time.monotonic() + timeout
        result = None
        while True:
            line = self._read_line(deadline)
            if line is None:
                break
            if line.startswith("result "):
                result = json.loads(line[len("result ") :])
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise self._fail("did not exit in time") from None
        if self.proc.returncode != 0 or result is None:
            raise self._fail("failed")
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        """Kill if still running, wait, close the pipes."""
        self.kill()
        try:
            self.proc.wait(timeout=30)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass


class WorkerPool:
    """Starts workers and guarantees they are reaped."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.workers: list[Worker] = []

    def spawn(self, command: str, **args: Any) -> Worker:
        n = len(self.workers)
        worker = Worker(command, args, self.logdir / f"worker-{n}-{command}.stderr")
        self.workers.append(worker)
        return worker

    def start_together(self, workers: list[Worker], timeout: float = STARTUP) -> None:
        """Wait until every worker is ``ready``, then release them all at once."""
        for worker in workers:
            worker.expect("ready", timeout)
        for worker in workers:
            worker.send("go")

    def results(self, workers: list[Worker], timeout: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [w.result(max(deadline - time.monotonic(), 0.1)) for w in workers]

    def close(self) -> None:
        errors = []
        for worker in self.workers:
            try:
                worker.reap()
            except Exception as exc:  # keep reaping the others
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """A pool of child interpreters, all killed and reaped at teardown."""
    logdir = tmp_path / "worker-logs"
    logdir.mkdir()
    pool = WorkerPool(logdir)
    try:
        yield pool
    finally:
        pool.close()


def waiting_for_a_lock(pid: int) -> bool:
    """Is process ``pid`` blocked on a file lock right now? Linux lists each
    blocked request in /proc/locks as a line with "->" and the waiter's pid:
    the explicit sign that a child reached a blocking ``flock`` (a lock taken
    with a timeout polls instead and never shows)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(pid) in fields[fields.index("->") + 1 :]:
            return True
    return False


@pytest.fixture
def await_lock_waiter() -> Any:
    """A function ``wait(pid, alive, timeout=30)`` that returns once ``pid`` is
    blocked on a file lock; it fails the test if ``alive()`` turns False first
    or after ``timeout`` seconds. Skips where /proc/locks does not exist."""
    if not Path("/proc/locks").exists():
        pytest.skip("needs /proc/locks (Linux)")

    def wait(pid: int, alive: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not waiting_for_a_lock(pid):
            assert alive(), f"process {pid} ended before it waited for the lock"
            assert time.monotonic() < deadline, f"process {pid} never waited for a lock"
            time.sleep(0.005)

    return wait
