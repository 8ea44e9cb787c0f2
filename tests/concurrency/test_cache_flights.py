"""Single flight across processes: one computation per cold key, and a waiter
takes over at once when the computing process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).with_name("_cache_worker.py")


def _start(tmp_path: Path, sleep: float, x: int = 7) -> subprocess.Popen[str]:
    args = {
        "cache": str(tmp_path / "cache"),
        "counter": str(tmp_path / "counter"),
        "go": str(tmp_path / "go"),
        "sleep": sleep,
        "x": x,
    }
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(args)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _result(proc: subprocess.Popen[str]) -> dict:
    assert proc.stdout is not None
    # read(), not communicate(): "ready" was read through the text buffer,
    # which may hold the result line already (communicate reads the pipe).
    with proc.stdout:
        out = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    line = [row for row in out.splitlines() if row.startswith("result ")][-1]
    return json.loads(line[len("result ") :])


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _computations(tmp_path: Path) -> list[str]:
    return (tmp_path / "counter").read_text().split()


def test_eight_processes_compute_one_cold_key_once(tmp_path):
    procs = [_start(tmp_path, sleep=0.5) for _ in range(8)]
    try:
        (tmp_path / "go").touch()
        results = [_result(p) for p in procs]
    finally:
        for p in procs:
            _reap(p)
    assert len(_computations(tmp_path)) == 1
    values = {json.dumps(r["value"], sort_keys=True) for r in results}
    assert len(values) == 1
    # Every waiter returned soon after the computing process did.
    returned = sorted(r["returned"] for r in results)
    assert returned[-1] - returned[0] < 1.0


def test_waiter_takes_over_when_the_computing_process_is_killed(tmp_path):
    holder = _start(tmp_path, sleep=60)
    try:
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 20
        while not (tmp_path / "counter").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _computations(tmp_path) == [str(holder.pid)]
        waiter = _start(tmp_path, sleep=0)
        time.sleep(0.3)  # the waiter is blocked on the holder's flight lock
        assert waiter.poll() is None
        assert len(_computations(tmp_path)) == 1
        killed = time.time()
        os.kill(holder.pid, signal.SIGKILL)
        result = _result(waiter)
    finally:
        _reap(holder)
        if "waiter" in locals():
            _reap(waiter)
    assert result["returned"] - killed < 1.0
    assert result["value"]["by"] == waiter.pid
    assert len(_computations(tmp_path)) == 2
    # Nothing was left behind: a third caller hits at once.
    third = _start(tmp_path, sleep=60)
    started = time.time()
    assert _result(third)["value"]["by"] == waiter.pid
    assert time.time() - started < 10
