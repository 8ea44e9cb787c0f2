"""Smoke tests of benchmarks/bench_arrays.py and bench_signing.py: each runs
at a tiny size and prints every figure. They never look at a timing (a run
this small means nothing), only that each line is there with a number."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> str:
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_arrays_benchmark_reports_every_figure() -> None:
    out = _run("bench_arrays.py")
    for name in ("raw baseline", "logshelf", "logshelf copy=False"):
        assert re.search(rf"^  {re.escape(name)} .*\d+\s+\d+\.\d\dx$", out, re.M), out
    for row in ("write, GiB/s", "read a copy, GiB/s", "open a view, ms", "view.sum(), ms"):
        assert re.search(rf"{re.escape(row)}\s+logshelf\s+[\d.]+\s+numpy\s+[\d.]+", out), out


def test_the_signing_benchmark_reports_every_figure() -> None:
    out = _run("bench_signing.py")
    for name in ("insert", "read"):
        assert re.search(rf"{name}\s+unsigned\s+[\d.]+\s+signed\s+[\d.]+\s+ratio", out), out
    assert re.search(r"signature check of a 4 MiB value: [\d.]+ GiB/s", out), out
