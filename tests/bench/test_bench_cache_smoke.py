"""Smoke test of benchmarks/bench_cache.py (logshelf.Cache and memoize
against their targets, next to diskcache and joblib).

Runs the script's quick mode in a subprocess and checks that it finishes,
prints a table row for every check with a verdict, keeps its promise of one
computation for a cold key called by 8 processes, and removes its temporary
data. It never looks at a timing: the numbers of a run this small mean
nothing. Peers or numpy that are missing must be skipped, not fatal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_cache.py"

#: The beginning of each row every run prints: (number, check).
ROWS = (
    ("1", 'hit `f(1, y="a")`, 200 other entries: vs diskcache'),
    ("1", 'hit `f(1, y="a")`, 200 other entries: vs joblib'),
    ("2", "miss overhead (miss - pickling the result) vs one `db[key] = value`"),
    ("2", "miss of diskcache (reference)"),
    ("2", "miss of joblib (reference)"),
    ("3", "`f.cache_key(arr)`, float64 array of 8 MiB"),
    ("4", "8 processes call one cold key (0.3 s): computations"),
    ("4", "waiter latency from the commit to its return (7 waiters)"),
    ("4", "the same, from the computing call's return instead (reference)"),
    ("5", "LRU reads, 4 processes vs 1"),
    ("5", "LRU reads, 2 processes vs 1"),
    ("5", "plain dict reads (no store: the machine's own scaling)"),
)


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_quick_mode_prints_every_check_and_computes_a_cold_key_once(tmp_path: Path) -> None:
    results = tmp_path / "cache.json"
    work = tmp_path / "work"
    work.mkdir()
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--json",
        str(results),
        "--dir",
        str(work),
    ]
    # This checkout's logshelf, whatever the environment has installed.
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout

    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| # | check | measured | target | ratio | met? |", table[:1]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[1:]]
    assert all(len(row) == 6 for row in rows), rows
    assert all(row[5] in ("PASS", "FAIL", "info") for row in rows), rows
    expected = list(ROWS)
    if installed("numpy"):
        expected.append(("3", "the array read back from the cache, given to another memoized"))
    if installed("diskcache"):
        expected += [
            ("4", "diskcache `memoize`, same run: computations (reference)"),
            ("5", "diskcache least-recently-stored reads (reference)"),
            ("5", "diskcache least-recently-used reads (reference)"),
        ]
    for number, check in expected:
        assert any(r[0] == number and r[1].startswith(check) for r in rows), (check, out)
    # Every row with a target has a verdict on it.
    for row in rows:
        if row[3] not in ("—", "— (report)"):
            assert row[5] in ("PASS", "FAIL") or row[2].startswith("skip"), row

    # Single flight is a correctness property, not a timing: exactly one of
    # the 8 processes computed the cold key.
    cold = [r for r in rows if r[1].startswith(ROWS[6][1])]
    assert cold == [["4", ROWS[6][1], "1 (per repeat)", "exactly 1", "—", "PASS"]], cold

    doc = json.loads(results.read_text())
    assert doc["settings"]["quick"] is True
    assert doc["results"]["cold_key"]["logshelf"]["computations"] == [1]
    latencies = doc["results"]["cold_key"]["logshelf"]["latencies_s"]
    # measured from the commit: no waiter can see the value before it
    assert len(latencies) == 7 and min(latencies) >= 0, latencies
    assert doc["results"]["lru_scaling"]["cores"] >= 1
    assert set(doc["results"]["hit"]["per_call_s"]) >= {"logshelf"}
    assert doc["rows"] == rows
    # The temporary stores are gone.
    assert list(work.iterdir()) == []
