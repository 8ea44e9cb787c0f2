"""The command line: the demo a newcomer runs first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import logshelf
from logshelf.cli import main


def test_demo_writes_reopens_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo builds a store, reads it back after reopening and says so; exit code 0."""
    path = tmp_path / "demo.db"
    assert main(["demo", str(path), "--records", "50"]) == 0
    out = capsys.readouterr().out
    assert "reopened read-only" in out and "50 keys" in out and "ok:" in out
    with logshelf.open(path, "r") as db:
        assert len(db) == 50 and db["config"] == {"theme": "dark", "retries": 3}


def test_demo_runs_again_on_its_own_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the demo twice starts the store afresh (flag "n") and succeeds again."""
    path = tmp_path / "demo.db"
    assert main(["demo", str(path), "--records", "5"]) == 0
    assert main(["demo", str(path), "--records", "7"]) == 0
    with logshelf.open(path, "r") as db:
        assert len(db) == 7


def test_module_entry_point(tmp_path: Path) -> None:
    """`python -m logshelf demo` works from a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "logshelf", "demo", str(tmp_path / "d.db"), "--records", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout


def test_unknown_command_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown sub-command is a usage error (exit code 2) that lists the commands."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "demo" in capsys.readouterr().err


def test_demo_rejects_zero_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--records below 1 is a usage error naming the value, and creates nothing."""
    with pytest.raises(SystemExit) as info:
        main(["demo", str(tmp_path / "d.db"), "--records", "0"])
    assert info.value.code == 2
    assert "not 0" in capsys.readouterr().err
    assert not (tmp_path / "d.db").exists()
