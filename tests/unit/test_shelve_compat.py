"""shelve/dbm compatibility of open() (issue 11, defect 9): path types, flag
"n" always giving a new, empty store, and dbm's mode argument."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import logshelf


class _BytesPath:
    """An os.PathLike whose __fspath__ returns bytes."""

    def __init__(self, path: bytes) -> None:
        self.path = path

    def __fspath__(self) -> bytes:
        return self.path


@pytest.mark.parametrize("kind", ["bytes", "bytes-pathlike", "pathlike", "str"])
def test_open_accepts_every_path_type_shelve_does(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "store.db"
    name = {
        "bytes": os.fsencode(path),
        "bytes-pathlike": _BytesPath(os.fsencode(path)),
        "pathlike": path,
        "str": str(path),
    }[kind]
    with logshelf.open(name) as db:  # type: ignore[arg-type]
        db["k"] = kind
        assert db.path == str(path)
    with logshelf.open(str(path), "r") as db:
        assert db["k"] == kind


def test_a_path_that_is_no_path_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="int"):
        logshelf.open(42)  # type: ignore[arg-type]


def test_flag_n_replaces_a_regular_file_with_a_new_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.write_text("an old dbm file, or anything else\n")
    with logshelf.open(path, "n") as db:
        assert len(db) == 0
        db["k"] = 1
    assert path.is_dir()
    with logshelf.open(path, "r") as db:
        assert dict(db) == {"k": 1}


def test_flag_n_empties_an_existing_store_and_an_empty_directory(tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "s", "c") as db:
        db.update({"a": 1, "b": 2})
    with logshelf.open(tmp_path / "s", "n") as db:
        assert len(db) == 0
    (tmp_path / "empty").mkdir()
    with logshelf.open(tmp_path / "empty", "n") as db:
        assert len(db) == 0


def test_flag_n_never_deletes_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "photos"
    path.mkdir()
    (path / "a.jpg").write_bytes(b"not a store")
    with pytest.raises(logshelf.FormatError, match="not a logshelf store"):
        logshelf.open(path, "n")
    assert (path / "a.jpg").read_bytes() == b"not a store"


def test_mode_sets_the_permissions_of_created_files(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with logshelf.open(tmp_path / "private", mode=0o600, max_segment_size=4096) as db:
            for i in range(40):
                db[f"k{i}"] = "v" * 200  # several segments, hints
        files = [p for p in (tmp_path / "private").rglob("*") if p.is_file()]
        assert len(files) > 5
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o600)}
        assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
        with logshelf.open(tmp_path / "default") as db:
            db["k"] = 1
        assert stat.S_IMODE((tmp_path / "default" / "MANIFEST").stat().st_mode) == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [-1, 0o10000, "644", True])
def test_a_bad_mode_is_refused_before_anything_is_created(tmp_path: Path, mode: object) -> None:
    with pytest.raises(ValueError, match="mode"):
        logshelf.open(tmp_path / "s", mode=mode)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()
