"""Paths that are not (or not yet, or no longer) logshelf stores.

Opening something that is not a store must fail with a clear FormatError and
leave it exactly as it was; a newer format is refused by version; a missing
store with flag "r" or "w" is StoreNotFoundError.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt

from ._helpers import active_segment, parse_records, snapshot, with_crc_fixed

ALL_FLAGS = ["r", "w", "c", "n"]


def _tree(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and directory under ``path`` with its bytes and mtime."""
    out: dict[str, tuple[bytes, int]] = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = (
            p.read_bytes() if p.is_file() else b"<dir>",
            p.stat().st_mtime_ns,
        )
    return out


@pytest.mark.parametrize("flag", ["r", "w", "c"])
def test_not_a_store_text_file_raises_format_error(tmp_path: Path, flag: str) -> None:
    """A text file opened as a store raises FormatError saying it found a file,
    and the file and its directory are left untouched. (Flag "n" replaces it:
    tests/unit/test_shelve_compat.py.)"""
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes\nnot a database\n")
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    msg = str(info.value)
    assert str(path) in msg and "is a file" in msg and "not a logshelf store" in msg
    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("flag", ALL_FLAGS)
def test_not_a_store_directory_of_unrelated_files_raises_format_error(
    tmp_path: Path, flag: str
) -> None:
    """A directory holding unrelated files (no MANIFEST) raises FormatError for
    every flag and nothing in it is created, changed or removed."""
    path = tmp_path / "photos"
    path.mkdir()
    (path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (path / "sub").mkdir()
    (path / "sub" / "readme.md").write_text("# hello\n")
    (path / "seg-0000000000000001.log").write_bytes(b"looks like a segment name")
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    msg = str(info.value)
    assert str(path) in msg and "MANIFEST" in msg
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no temp leftovers


@pytest.mark.parametrize("flag", ALL_FLAGS)
def test_not_a_store_manifest_of_text_raises_format_error_showing_found_bytes(
    tmp_path: Path, flag: str
) -> None:
    """A directory whose MANIFEST is a text file raises FormatError quoting the
    bytes found instead of the magic, and changes nothing."""
    path = tmp_path / "store"
    path.mkdir()
    (path / "MANIFEST").write_text("manifest: version 1\n")
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    assert repr(b"manifest") in str(info.value)
    assert _tree(tmp_path) == before


def _store(path: Path) -> dict[str, int]:
    data = {f"k{i}": i for i in range(4)}
    with logshelf.open(path) as db:
        db.update(data)
    return data


@pytest.mark.parametrize("flag", ["r", "w", "c"])
@pytest.mark.parametrize("version", [2, 7, 0xFFFF])
def test_not_a_store_newer_manifest_version_raises_format_error_naming_it(
    tmp_path: Path, flag: str, version: int
) -> None:
    """A MANIFEST with a valid checksum but a newer format version raises
    FormatError naming that version, and the store is left unchanged."""
    path = tmp_path / "store"
    _store(path)
    manifest = (path / "MANIFEST").read_bytes()
    patched = manifest[:8] + version.to_bytes(2, "little") + manifest[10:]
    patched = with_crc_fixed(patched, len(patched) - 4)
    (path / "MANIFEST").write_bytes(patched)
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    assert f"version {version}" in str(info.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("flag", ["r", "w", "c"])
def test_not_a_store_newer_segment_version_raises_format_error_naming_it(
    tmp_path: Path, flag: str
) -> None:
    """A segment header with a valid checksum but format version 2 raises
    FormatError naming the version and the file, and changes nothing."""
    path = tmp_path / "store"
    _store(path)
    seg = active_segment(path)
    data = seg.read_bytes()
    header = with_crc_fixed(data[:8] + (2).to_bytes(2, "little") + data[10:64], 60)
    seg.write_bytes(header + data[64:])
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    assert "version 2" in str(info.value) and str(seg) in str(info.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("flag", ["r", "w"])
def test_not_a_store_record_with_newer_flag_bits_raises_format_error(
    tmp_path: Path, flag: str
) -> None:
    """A checksum-valid record using flag bits reserved for newer formats
    raises FormatError (upgrade) instead of being guessed at or cut away."""
    path = tmp_path / "store"
    _store(path)
    seg = active_segment(path)
    (path / seg.with_suffix(".hint").name).unlink()
    data = seg.read_bytes()
    salt = fmt.decode_segment_header(data[:64], str(seg)).salt
    last = parse_records(data)[-1]
    value = b"\x80\x05K\x01."
    record = bytearray(
        fmt.pack_record(
            salt,
            last.header.txid + 1,
            fmt.KIND_PUT,
            True,
            0,
            b"future",
            value,
            zlib.crc32(value),
            0,
        )
    )
    record[31] |= 0x20  # a reserved flag bit
    record[0:4] = fmt.record_hcrc(bytes(record[:32]), b"future", salt).to_bytes(4, "little")
    seg.write_bytes(data + bytes(record))
    before = _tree(tmp_path)
    with pytest.raises(logshelf.FormatError) as info:
        logshelf.open(path, flag)
    assert "newer" in str(info.value) and str(seg) in str(info.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("flag", ["r", "w"])
def test_not_a_store_missing_path_raises_store_not_found(tmp_path: Path, flag: str) -> None:
    """Flags "r" and "w" on a missing path raise StoreNotFoundError, which is
    also a FileNotFoundError, and create nothing."""
    path = tmp_path / "missing" / "store"
    for target in (path, tmp_path / "missing-too"):
        with pytest.raises(logshelf.StoreNotFoundError) as info:
            logshelf.open(target, flag)
        assert isinstance(info.value, FileNotFoundError)
        assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["r", "w"])
def test_not_a_store_empty_directory_raises_store_not_found(tmp_path: Path, flag: str) -> None:
    """Flags "r" and "w" on an empty directory raise StoreNotFoundError and
    leave the directory empty."""
    path = tmp_path / "empty"
    path.mkdir()
    with pytest.raises(logshelf.StoreNotFoundError):
        logshelf.open(path, flag)
    assert os.listdir(path) == []


def test_not_a_store_open_failure_leaves_real_store_usable(tmp_path: Path) -> None:
    """After refusing a newer-version MANIFEST, restoring the original makes
    the store open with all its data: the refusal changed nothing."""
    path = tmp_path / "store"
    data = _store(path)
    files = snapshot(path)
    manifest = files["MANIFEST"]
    patched = with_crc_fixed(
        manifest[:8] + (3).to_bytes(2, "little") + manifest[10:], len(manifest) - 4
    )
    (path / "MANIFEST").write_bytes(patched)
    for flag in ALL_FLAGS:
        with pytest.raises(logshelf.FormatError):
            logshelf.open(path, flag)
    (path / "MANIFEST").write_bytes(manifest)
    assert snapshot(path) == files
    with logshelf.open(path, "r") as db:
        assert dict(db) == data
