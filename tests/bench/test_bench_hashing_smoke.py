"""Smoke test of benchmarks/bench_hashing.py: it runs at a tiny size and
prints both figures. It never looks at a timing (a run this small means
nothing), only that each line is there with a number in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_hashing.py"


def test_the_hashing_benchmark_runs_and_reports_both_figures() -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--size-mib",
        "4",
        "--repeats",
        "1",
        "--calls",
        "200",
        "--rounds",
        "2",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\{'x': 1, 'y': 'abc'\}\s+[\d.]+ us", done.stdout), done.stdout
    assert re.search(r"hash_value\s+[\d.]+ GiB/s", done.stdout), done.stdout
    assert "again" in done.stdout  # numpy is there: the remembered array was measured
