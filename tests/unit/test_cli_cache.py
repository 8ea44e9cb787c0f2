"""``logshelf cache PATH stats | ls | clear | evict | expire``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from _cache_clock import Clock

import logshelf
from logshelf._cli_cache import duration, size
from logshelf.cli import main


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clock = Clock(monkeypatch, start=1_800_000_000.0)
    path = tmp_path / "cache"
    with logshelf.Cache(path) as cache:

        @cache.memoize(tags=("run-3",))
        def square(x):
            return x * x

        for i in range(5):
            square(i)
        cache.set("old", "v", tags=("run-4",))
        cache.set("short", 1, ttl=10)
        clock.advance(8 * 86400)
        cache["new"] = list(range(100))
    return path


def test_stats_counts_entries_functions_and_tags(filled, capsys):
    assert main(["cache", str(filled), "stats"]) == 0
    out = capsys.readouterr().out
    assert "7 visible, 1 expired" in out
    assert "square: 5" in out and "run-3: 5" in out and "run-4: 1" in out


def test_ls_filters_by_function(filled, capsys):
    assert main(["cache", str(filled), "ls", "--func", "square"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 5 and all("square:" in line for line in lines)
    assert "5 entries" in captured.err


def test_clear_expire_and_evict(filled, capsys):
    assert main(["cache", str(filled), "expire"]) == 0
    assert "removed 1 expired" in capsys.readouterr().out
    assert main(["cache", str(filled), "clear", "--func", "square", "--tag", "run-3"]) == 0
    assert "removed 5 entries" in capsys.readouterr().out
    assert main(["cache", str(filled), "clear", "--older-than", "7d"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out  # "old"; "new" is recent
    with logshelf.Cache(filled, flag="r") as cache:
        assert sorted(cache) == ["new"]
    assert main(["cache", str(filled), "evict", "--to", "1KB"]) == 0
    assert "evicted" in capsys.readouterr().out
    with logshelf.Cache(filled, flag="r") as cache:
        assert cache.stats()["bytes"] <= 1000 + cache.engine.options.max_segment_size


def test_errors_use_the_exit_codes_of_the_other_commands(tmp_path, capsys):
    assert main(["cache", str(tmp_path / "none"), "stats"]) == 2
    assert "no cache at" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["cache", str(tmp_path / "plain"), "ls"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["cache", str(tmp_path), "evict"])
    assert exc.value.code == 2


def test_durations_and_sizes_parse():
    assert duration("7d") == 7 * 86400 and duration("90") == 90 and duration("1.5h") == 5400
    assert size("1GB") == 10**9 and size("512MiB") == 512 << 20 and size("4096") == 4096
    for bad in ("7x", "-1d", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        size("lots")
