"""The command line: the demo a newcomer runs first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf.cli import main


def test_demo_writes_reopens_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo builds a store, reads it back after reopening and says so; exit code 0."""
    path = tmp_path / "demo.db"
    assert main(["demo", str(path), "--records", "50"]) == 0
    out = capsys.readouterr().out
    assert "reopened read-only" in out and "51 keys" in out and "ok:" in out
    with logshelf.open(path, "r") as db:
        # 49 users (one was deleted), config, and the key marking a demo store
        assert len(db) == 51 and db["config"] == {"theme": "dark", "retries": 3}
        assert "__logshelf_demo__" in db


def test_demo_runs_again_on_its_own_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the demo twice empties its own store and succeeds again."""
    path = tmp_path / "demo.db"
    assert main(["demo", str(path), "--records", "5"]) == 0
    assert main(["demo", str(path), "--records", "7"]) == 0
    with logshelf.open(path, "r") as db:
        assert len(db) == 8 and "user:000006" in db


def test_demo_refuses_an_existing_store_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at a user's store, the demo exits 2 and every key stays as it was."""
    path = tmp_path / "mine.db"
    data = {f"k{i}": {"i": i} for i in range(20)} | {"config": "user config"}
    with logshelf.open(path) as db:
        db.update(data)
    assert main(["demo", str(path), "--records", "5"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "__logshelf_demo__" in err
    with logshelf.open(path, "r") as db:
        assert dict(db.items()) == data


def test_demo_refuses_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pointed at a regular file, the demo exits 2 and the file is unchanged."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    assert main(["demo", str(path), "--records", "5"]) == 2
    assert str(path) in capsys.readouterr().err
    assert path.read_text() == "my notes\n"


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


# -- info, verify, compact, salvage -------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A store of 20 keys, each written twice, without hints (so damage is
    found by scanning)."""
    path = tmp_path / "s.db"
    with logshelf.open(path) as db:
        for round_ in range(2):
            for i in range(20):
                db[f"key{i:02d}"] = {"n": i, "round": round_, "pad": "x" * 50}
    for hint in path.glob("*.hint"):
        hint.unlink()
    return path


def _damage_value(store: Path, record: int) -> None:
    """Flip a bit inside the value of the ``record``-th record of the store's
    only segment (its checksum no longer matches)."""
    segment = next(store.glob("seg-*.log"))
    data = bytearray(segment.read_bytes())
    pos = fmt.SEGMENT_HEADER.size
    for _ in range(record):
        header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        pos += fmt.RECORD_HEADER.size + header.klen + header.vlen
    header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
    data[pos + fmt.RECORD_HEADER.size + header.klen + header.vlen // 2] ^= 0x40
    segment.write_bytes(bytes(data))


def test_info_prints_keys_segments_and_files(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(filled)]) == 0
    out = capsys.readouterr().out
    assert "keys        20" in out
    assert "segments    1 " in out
    assert "last txid   40" in out
    assert "MANIFEST" in out and "CHANGES" in out


def test_verify_a_healthy_store(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(filled)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ok:")
    assert "checked 1 segments and 20 index entries" in captured.err  # progress


def test_verify_reports_damage_and_points_to_salvage(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged live value: exit 1, the key named, and the way out."""
    _damage_value(filled, 25)  # key05, second round: the live one
    assert main(["verify", str(filled)]) == 1
    out = capsys.readouterr().out
    assert "key05" in out and "checksum" in out
    assert "damaged: " in out and "salvage" in out


def test_verify_of_a_store_that_will_not_open(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damage that opening refuses (a bad record header with valid records
    after it) is reported the same way, not as a traceback."""
    segment = next(filled.glob("seg-*.log"))
    data = bytearray(segment.read_bytes())
    data[fmt.SEGMENT_HEADER.size + 12] ^= 0x01  # inside the first record's header
    segment.write_bytes(bytes(data))
    assert main(["verify", str(filled)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("damaged: ") and "salvage" in out


def test_verify_of_something_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path / "missing.db")]) == 2
    assert "no logshelf store" in capsys.readouterr().err
    (tmp_path / "file.txt").write_text("hello\n")
    assert main(["verify", str(tmp_path / "file.txt")]) == 2
    assert "not a logshelf store" in capsys.readouterr().err


def test_compact_reclaims_space_and_keeps_every_value(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with logshelf.open(filled) as db:
        before = db.stats()["segment_bytes"]
        expected = dict(db)
    assert main(["compact", str(filled)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("compacted ") and "20 live records copied" in captured.out
    assert "compacting 1 segments" in captured.err
    with logshelf.open(filled, "r") as db:
        assert dict(db) == expected
        assert db.stats()["segment_bytes"] < before
        assert db.verify() == []


def test_salvage_copies_what_is_intact(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 when something was skipped; the copy holds every other key at
    its latest value, and the damaged key at none (never an older one)."""
    _damage_value(filled, 25)
    copy = tmp_path / "copy.db"
    assert main(["salvage", str(filled), str(copy)]) == 1
    out = capsys.readouterr().out
    assert "recovered 19 keys" in out and "key05" in out
    with logshelf.open(copy, "r") as db:
        assert sorted(db) == [f"key{i:02d}" for i in range(20) if i != 5]
        assert all(db[k]["round"] == 1 for k in db)
        assert db.verify() == []
    # A destination that exists is refused, and left alone.
    assert main(["salvage", str(filled), str(copy)]) == 2
    assert "already exists" in capsys.readouterr().err
    with logshelf.open(copy, "r") as db:
        assert len(db) == 19


def test_salvage_of_a_healthy_store_exits_0(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["salvage", str(filled), str(tmp_path / "copy.db")]) == 0
    assert "recovered 20 keys" in capsys.readouterr().out


def _not_stores(tmp_path: Path) -> dict[str, Path]:
    """A directory of unrelated files, a plain file, and nothing at all."""
    directory = tmp_path / "not-a-store"
    directory.mkdir()
    (directory / "notes.txt").write_text("unrelated\n")
    (tmp_path / "file.txt").write_text("hello\n")
    return {
        "a directory without a MANIFEST": directory,
        "a file": tmp_path / "file.txt",
        "a missing path": tmp_path / "missing.db",
    }


@pytest.mark.parametrize("command", ["info", "verify", "compact"])
def test_commands_exit_2_on_a_path_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """docs/durability.md: exit 2 means the command could not run (no store
    there, not a store). The message names the path, and nothing is created
    or changed there."""
    for what, path in _not_stores(tmp_path).items():
        before = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
        assert main([command, str(path)]) == 2, what
        assert str(path) in capsys.readouterr().err, what
        assert (sorted(p.name for p in path.iterdir()) if path.is_dir() else None) == before
    assert not (tmp_path / "missing.db").exists()


def test_exit_code_2_reaches_the_shell(tmp_path: Path) -> None:
    """`python -m logshelf` passes main()'s exit code 2 on to the shell."""
    result = subprocess.run(
        [sys.executable, "-m", "logshelf", "info", str(_not_stores(tmp_path)["a file"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "not a logshelf store" in result.stderr


def test_salvage_exits_2_on_a_directory_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/durability.md: exit 2 when the command could not run, "not a
    store" included. A directory with neither a MANIFEST nor a segment file
    holds nothing salvage could read: it must say so (exit 2) rather than
    report an empty rescue (exit 1) and create an empty destination store."""
    source = _not_stores(tmp_path)["a directory without a MANIFEST"]
    destination = tmp_path / "rescued.db"
    assert main(["salvage", str(source), str(destination)]) == 2
    assert str(source) in capsys.readouterr().err
    assert not destination.exists()
    assert sorted(p.name for p in source.iterdir()) == ["notes.txt"]
