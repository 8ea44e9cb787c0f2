"""Every script in examples/ runs, and prints what its how-to page says.

Each script runs as a user would run it, ``python examples/NAME.py FOLDER``,
in a subprocess, with an empty temporary folder as FOLDER and another as its
working directory; that second folder must stay empty (the scripts write
only where they are told to).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import logshelf

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOW_TO = ROOT / "docs" / "how-to"
#: One script per how-to page, and the page that includes it.
SCRIPTS = {
    "cache_a_function.py": "cache-a-function.md",
    "persist_state.py": "persist-state.md",
    "records.py": "records.md",
    "share_between_workers.py": "share-between-workers.md",
    "inspect_and_repair.py": "inspect-and-repair.md",
    "python2_pickles.py": "python2-pickles.md",
    "move_to_redis.py": "move-to-redis.md",
}


def run(
    script: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/script`` on ``tmp_path/out`` from the empty ``tmp_path/cwd``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "LOGSHELF_EXAMPLES_DIR"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(tmp_path / "out"), *args],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert list(cwd.iterdir()) == [], "the script wrote outside its folder"
    return done


def test_every_how_to_page_has_a_tested_script() -> None:
    """Each how-to page includes its script, and each script is tested here."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)
    pages = {p.name for p in HOW_TO.glob("*.md")} - {"index.md"}
    assert pages == set(SCRIPTS.values())
    for script, page in SCRIPTS.items():
        assert f'--8<-- "examples/{script}:' in (HOW_TO / page).read_text(), page


@pytest.mark.timeout(60)
def test_cache_a_function(tmp_path: Path) -> None:
    """A second call hits; an edited function misses; a second run hits at once."""
    done = run("cache_a_function.py", tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    cold, warm = map(float, re.findall(r"first call (\S+) ms, second call (\S+) ms", out)[0])
    assert cold >= 200 and warm < cold
    assert "explain: hit" in out and "cache_info: hits=1 misses=1 entries=1" in out
    assert "score v1: 42" in out and "score v2: 63" in out
    assert "before the call: miss: the code changed" in out
    assert "bounded cache: 1 entry, 1 hit" in out and "cleared: 1 entry" in out
    again = run("cache_a_function.py", tmp_path)
    assert again.returncode == 0, again.stderr
    assert "cache_info: hits=2 misses=0 entries=1" in again.stdout


@pytest.mark.timeout(60)
def test_persist_state_resumes_after_a_crash(tmp_path: Path) -> None:
    """A run killed after step 4 is resumed at step 5 by the next one."""
    crashed = run("persist_state.py", tmp_path, "--crash-at", "4")
    assert crashed.returncode == 1, crashed.stderr
    assert "run 1;" in crashed.stdout and "crashing after step 4" in crashed.stdout
    assert "job complete" not in crashed.stdout
    resumed = run("persist_state.py", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "run 2;" in resumed.stdout and "resuming at step 5" in resumed.stdout
    assert "job complete: 10 steps, sum 385" in resumed.stdout


@pytest.mark.timeout(60)
def test_records(tmp_path: Path) -> None:
    """Scans, an atomic transfer, a refused one, imports and an export."""
    done = run("records.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "users: ['user:ada', 'user:bob']",
        "ada spent: 110",
        "refused: bob cannot pay 500",
        "balances: {'user:ada': 70, 'user:bob': 50}",
        "shelve import: 1 keys",
        "pickle import: 1 keys",
        "shop now holds 7 records",
        "exported 7 records to shop.jsonl",
    ]
    assert len((tmp_path / "out" / "shop.jsonl").read_text().splitlines()) == 7
    rerun = run("records.py", tmp_path)  # starts from empty each time
    assert rerun.returncode == 0 and rerun.stdout == done.stdout, rerun.stderr


@pytest.mark.timeout(60)
def test_share_between_workers(tmp_path: Path) -> None:
    """No increment is lost; one cold key is computed once for four workers."""
    done = run("share_between_workers.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "counter: 200 (expected 200)" in done.stdout
    assert "results: 200 keys; verify: no problem" in done.stdout
    assert "4 workers asked for one cold key; it was computed 1 time(s)" in done.stdout


@pytest.mark.timeout(60)
def test_inspect_and_repair(tmp_path: Path) -> None:
    """verify finds the flipped bit, get refuses the value, salvage keeps the rest."""
    done = run("inspect_and_repair.py", tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    commands = re.findall(r"^\$ logshelf (\w+)", out, flags=re.MULTILINE)
    codes = [int(code) for code in re.findall(r"^\(exit code (\d+)\)$", out, flags=re.MULTILINE)]
    assert list(zip(commands, codes, strict=True)) == [
        ("verify", 1),
        ("ls", 0),
        ("get", 0),
        ("get", 1),
        ("salvage", 1),
        ("verify", 0),
        ("stats", 0),
    ], out
    assert "value checksum mismatch" in out and "{'name': 'user 2', 'visits': 20}" in out
    assert "lost 1 keys whose latest value was damaged: 'user:3'" in out
    assert re.search(r"^keys +5$", out, flags=re.MULTILINE), out


@pytest.mark.timeout(60)
def test_python2_pickles(tmp_path: Path) -> None:
    """Python 2 str, datetime and numpy pickles read with encoding latin1 or bytes."""
    done = run("python2_pickles.py", tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "default encoding: UnicodeDecodeError"
    assert re.match(r"imported 3 keys from .*legacy-py2 \(shelve\) into", lines[1])
    assert lines[2:] == [
        "title: café crème",
        "updated: 2024-05-17T12:30:45.123456",
        "weights: [1.5, -2.0, 3.25] float64",
        "title as bytes: b'caf\\xe9 cr\\xe8me'",
        "pickle file: café crème",
    ]


@pytest.mark.timeout(60)
def test_move_to_redis(tmp_path: Path, redis_url: str) -> None:
    """The same code runs on a local store and, given a Redis URL, on a real
    Redis server, where it also moves a local store's keys."""
    done = run("move_to_redis.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "visits: {'visits:ada': 2, 'visits:bob': 1}",
        "exported 2 keys to app.jsonl",
    ]
    on_redis = run("move_to_redis.py", tmp_path, env={"APP_STORE": redis_url})
    assert on_redis.returncode == 0, on_redis.stderr
    assert on_redis.stdout.splitlines() == [
        "visits: {'visits:ada': 2, 'visits:bob': 1}",
        "moved: ['user:ada', 'user:bob']",
    ]
    with logshelf.open(redis_url, "r") as db:
        assert db["user:ada"] == {"name": "Ada"} and db["visits:ada"] == 2
