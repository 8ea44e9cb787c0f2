"""Smoke test of the benchmark suite (benchmarks/bench_peers.py).

Runs the suite's quick mode at a tiny size in a subprocess, with whatever
this environment has installed (the test environment: logshelf, pytest and
hypothesis; no numpy and no peer libraries). It checks that the run finishes
cleanly and that every store it measured passed its persistence checks. It
never looks at a timing: the numbers of a run this small mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "bench_peers.py"
N = 200
#: Adapters that need nothing beyond logshelf and the standard library.
ALWAYS_THERE = ("raw", "dict", "logshelf", "shelve")
SINGLE_STORE_WORKLOADS = (
    "insert",
    "read",
    "overwrite",
    "mix",
    "delete",
    "large-write",
    "large-read",
    f"reopen-{N}",
)


def find(doc: dict[str, Any], workload: str, adapter: str) -> dict[str, Any]:
    matches = [r for r in doc["results"] if r["workload"] == workload and r["adapter"] == adapter]
    assert len(matches) == 1, f"expected one {workload} result for {adapter}, got {matches}"
    return matches[0]


def test_quick_mode_runs_and_every_store_keeps_its_data(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [
        sys.executable,
        str(SUITE),
        "--quick",
        "-n",
        str(N),
        "--repeats",
        "1",
        "--large",
        "2",
        "--procs",
        "2",
        "--json",
        str(results),
        "--dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "PERSISTENCE CHECK FAILED" not in done.stdout

    doc = json.loads(results.read_text())
    assert doc["settings"]["n"] == N
    assert doc["settings"]["reopen_sizes"] == [N]
    for name in ALWAYS_THERE:
        facts = doc["adapters"][name]
        assert facts["missing"] is None, name
        assert facts["persistence"]["failed"] == [], name
        # after the insert and after the last phase, plus the large values
        assert facts["persistence"]["passed"] >= 3, name
        for workload in SINGLE_STORE_WORKLOADS:
            result = find(doc, workload, name)
            assert result["status"] == "ok", (name, workload, result["detail"])
            assert len(result["samples"]) == 1, (name, workload)

    # Several logshelf processes wrote at once, and nothing acknowledged was lost.
    multi = find(doc, "multiprocess", "logshelf")
    assert multi["status"] == "ok", multi["detail"]
    assert multi["extra"]["lost"] == 0
    assert multi["extra"]["acknowledged"] == N

    # Peers that are not installed are reported, not fatal.
    for name, facts in doc["adapters"].items():
        if facts["missing"]:
            assert not [r for r in doc["results"] if r["adapter"] == name], name


def test_floor_script_runs_every_step() -> None:
    """bench_floor.py finishes at a tiny size and prints a line for every step
    of each part (its read floor checks every record's checksums and key)."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_floor.py"),
        "-n",
        "500",
        "--repeats",
        "1",
        "--procs",
        "2",
        "--seconds",
        "0.2",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for line in (
        "+ size check (lseek): the floor",
        "logshelf, transactions of 100",
        "logshelf, write(2) replaced by a shared-map copy",
        "logshelf, db[key]",
        "no lock: the same step, timed",
    ):
        assert line in done.stdout, (line, done.stdout)


def test_rollover_script_runs_and_checks_its_store() -> None:
    """bench_rollover.py --quick finishes (it reopens the store it wrote and
    checks it) and prints a line per run."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_rollover.py"), "--quick"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "close ms" in done.stdout and done.stdout.rstrip().splitlines()[-1].split()[0] == "0"


def test_compaction_script_runs_and_reports_lock_holds(tmp_path: Path) -> None:
    """bench_compaction.py --quick finishes (every compacted value is checked
    inside it) and reports the compacting process's writer-lock holds, which
    it measures by wrapping a private class that could move."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_compaction.py"),
        "--quick",
        "--dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    holds = [line for line in done.stdout.splitlines() if "held the writer lock" in line]
    assert len(holds) == 1, done.stdout
    assert holds[0].rsplit(":", 1)[1].strip(), holds  # at least one hold was timed


def test_hot_paths_script_runs_against_another_tree() -> None:
    """bench_hot_paths.py compares two trees; here the checkout with itself,
    one process each (its timings are not looked at)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_hot_paths.py"),
            "--runs",
            "1",
            "--against",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("  insert")]
    assert len(rows) == 2 and all("read" in r and "tx" in r for r in rows), proc.stdout


def test_synced_mark_script_runs_every_mode(tmp_path: Path) -> None:
    """benchmarks/bench_synced_mark.py --quick: a line per durability mode."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_synced_mark.py"),
            "--quick",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["always", "interval", "none"], lines
