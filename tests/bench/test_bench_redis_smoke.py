"""Smoke test of benchmarks/bench_redis.py: its quick mode runs to the end
against servers it starts itself and prints its three tables. It never
looks at a timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_redis.py"


def test_bench_redis_quick_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    for heading in ("| set, µs per key", "| set_many |", "| one namespace |"):
        assert heading in out.stdout, out.stdout
