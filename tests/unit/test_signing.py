"""Signed stores (docs/security.md): every record carries a keyed MAC that a
handle with ``key=`` checks before anything of the record is decompressed
or unpickled."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._signing import SIGNED_NAME

KEY = b"k" * 32
NEW_KEY = b"n" * 32


class _Marker:
    """A pickle whose loading creates a file: proof that something ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _write_unsigned(store: Path, items: dict[str, Any], compression: str | None = None) -> None:
    """What a writer without the key does: it hides SIGNED, writes, puts it back."""
    hidden = store.parent / "SIGNED.hidden"
    (store / SIGNED_NAME).rename(hidden)
    try:
        with logshelf.open(store, "w", compression=compression) as db:
            db.update(items)
    finally:
        hidden.rename(store / SIGNED_NAME)


def test_a_signed_store_round_trips_every_kind_of_value(tmp_path: Path) -> None:
    store = tmp_path / "s"
    values = {
        "small": {"a": 1},
        "big": "x" * 200_000,
        "array": np.arange(100_000.0),
        "two": [np.ones(20_000), np.zeros(10)],
    }
    with logshelf.open(store, key=KEY, compression="lz4") as db:
        db.update(values)
        db["single"] = 7
        with db.transaction():
            db["tx"] = np.full(50_000, 3.0)
            assert db["tx"].sum() == 150_000.0  # read inside: this handle's own record
    with logshelf.open(store, "r", key=KEY) as db:
        assert db["small"] == {"a": 1} and db["big"] == "x" * 200_000 and db["single"] == 7
        assert np.array_equal(db["array"], values["array"])
        assert np.array_equal(db.get("array", copy=False), values["array"])
        assert np.array_equal(db["two"][0], np.ones(20_000)) and db["tx"].sum() == 150_000.0
        assert db.verify() == []
    modes = {stat.S_IMODE(p.stat().st_mode) for p in store.iterdir() if p.is_file()}
    assert modes == {0o600} and stat.S_IMODE(store.stat().st_mode) == 0o700


def test_a_record_written_without_the_key_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s"
    marker = tmp_path / "MARKER"
    with logshelf.open(store, key=KEY) as db:
        db["good"] = [1, 2, 3]
    _write_unsigned(store, {"evil": _Marker(marker)})
    with logshelf.open(store, "r", key=KEY) as db:
        with pytest.raises(logshelf.TamperedError, match=r"key 'evil': .*seg-.*offset \d+"):
            db["evil"]
        assert db["good"] == [1, 2, 3]
        problems = db.verify()
        assert len(problems) == 1 and "'evil'" in problems[0]
    assert not marker.exists()
    # The same record does run without the protection: the test can fail.
    shutil.copytree(store, tmp_path / "plain")
    (tmp_path / "plain" / SIGNED_NAME).unlink()
    with logshelf.open(tmp_path / "plain", "r") as db:
        db["evil"]
    assert marker.exists()


def test_an_unsigned_decompression_bomb_is_refused_before_decompressing(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store, key=KEY) as db:
        db["a"] = 1
    _write_unsigned(store, {"bomb": b"\0" * (64 << 20)}, compression="zlib")
    with logshelf.open(store, "r", key=KEY) as db, pytest.raises(logshelf.TamperedError):
        db["bomb"]


def test_keys_must_fit_the_store(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store, key=KEY) as db:
        db["a"] = 1
    with pytest.raises(logshelf.SigningError, match="signed store: open it with key="):
        logshelf.open(store)
    with pytest.raises(logshelf.SigningError, match="none of the keys"):
        logshelf.open(store, "r", key=NEW_KEY)
    plain = tmp_path / "plain"
    with logshelf.open(plain) as db:
        db["a"] = 1
    with pytest.raises(logshelf.SigningError, match="not a signed store"):
        logshelf.open(plain, key=KEY)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        logshelf.open(tmp_path / "short", key=b"short")
    with pytest.raises(TypeError, match="key must be bytes"):
        logshelf.open(tmp_path / "text", key="a string key of some length")  # type: ignore[arg-type]
    # Flag "n" without a key empties a signed store into an unsigned one.
    with logshelf.open(store, "n") as db:
        assert len(db) == 0
    assert not (store / SIGNED_NAME).exists()


def test_rotation_and_compaction_re_sign_with_the_newest_key(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store, key=KEY, max_segment_size=4096, auto_compact=None) as db:
        for i in range(50):
            db[f"k{i}"] = {"i": i, "pad": "p" * 100}
        db["arr"] = np.arange(20_000.0)
    with logshelf.open(store, key=[NEW_KEY, KEY], auto_compact=None) as db:
        assert db["k3"]["i"] == 3  # old records check with the older key
        db["k0"] = "rewritten"  # signed with the newest
        assert db.compact().compacted
    with logshelf.open(store, "r", key=NEW_KEY) as db:
        assert db["k0"] == "rewritten" and db["k49"]["i"] == 49
        assert np.array_equal(db["arr"], np.arange(20_000.0))
        assert db.verify() == []
    with pytest.raises(logshelf.SigningError):
        logshelf.open(store, "r", key=KEY)  # the store's key check moved on too


def test_records_of_another_store_with_the_same_key_are_refused(tmp_path: Path) -> None:
    """Stores have identities: a record signed for one does not check in another."""
    a, b = tmp_path / "a", tmp_path / "b"
    for store, value in ((a, "from a"), (b, "from b")):
        with logshelf.open(store, key=KEY) as db:
            db["x"] = value
    for name in os.listdir(a):  # b's segments and MANIFEST replaced by a's
        if name != SIGNED_NAME:
            shutil.copy2(a / name, b / name)
    with logshelf.open(b, "r", key=KEY) as db, pytest.raises(logshelf.TamperedError):
        db["x"]


def test_compaction_stops_at_a_tampered_record_and_salvage_skips_it(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store, key=KEY, auto_compact=None) as db:
        db["good"] = "kept"
        db["arr"] = np.arange(10_000.0)
    _write_unsigned(store, {"evil": "unsigned"})
    with logshelf.open(store, key=KEY, auto_compact=None) as db:
        with pytest.raises(logshelf.TamperedError, match="compaction stopped"):
            db.compact()
        assert db["good"] == "kept"
    report = logshelf.salvage(store, tmp_path / "copy", key=KEY)
    assert report.lost_keys == ["evil"]
    with logshelf.open(tmp_path / "copy", "r", key=KEY) as db:
        assert db["good"] == "kept" and np.array_equal(db["arr"], np.arange(10_000.0))
        assert "evil" not in db
    with pytest.raises(logshelf.SigningError):
        logshelf.salvage(store, tmp_path / "copy2")


def _records(segment: Path) -> list[tuple[int, fmt.RecordHeader]]:
    data = segment.read_bytes()
    out = []
    pos = fmt.SEGMENT_HEADER.size
    while pos + fmt.RECORD_HEADER.size <= len(data):
        header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
        out.append((pos, header))
        pos += fmt.RECORD_HEADER.size + header.klen + header.vlen
    return out


def _recheck(data: bytearray, pos: int, salt: int) -> None:
    """Recompute both checksums of the record at ``pos`` after a change."""
    header = fmt.RecordHeader._make(fmt.RECORD_HEADER.unpack_from(data, pos))
    at = pos + fmt.RECORD_HEADER.size + header.klen
    end = at + header.vlen
    if header.flags & fmt.FLAG_BUFFERS:
        end = at + int.from_bytes(data[at : at + 4], "little")
    data[pos + 4 : pos + 8] = zlib.crc32(bytes(data[at:end])).to_bytes(4, "little")
    key = bytes(data[at - header.klen : at])
    hcrc = fmt.record_hcrc(bytes(data[pos : pos + 32]), key, salt)
    data[pos : pos + 4] = hcrc.to_bytes(4, "little")


@pytest.mark.parametrize(
    "cases", [150, pytest.param(1500, marks=pytest.mark.slow)], ids=["fast", "slow"]
)
def test_fuzz_changes_that_keep_the_checksums_are_never_loaded(tmp_path: Path, cases: int) -> None:
    """Random byte changes in a record's key and value, with both CRCs
    recomputed so that only the MAC can catch them: each read returns the
    value exactly or raises CorruptionError (TamperedError), and nothing runs."""
    template = tmp_path / "template"
    marker = tmp_path / "MARKER"
    values: dict[str, Any] = {
        "small": {"n": 1, "marker path": str(marker)},
        "text": "t" * 3000,
        "array": np.arange(16_384.0),
    }
    with logshelf.open(template, key=KEY, compression="lz4") as db:
        for k, v in values.items():
            db[k] = v
    (segment_name,) = [n for n in os.listdir(template) if n.endswith(".log")]
    original = (template / segment_name).read_bytes()
    salt = int.from_bytes(original[12:16], "little")
    records = [(pos, h) for pos, h in _records(template / segment_name) if h.kind == fmt.KIND_PUT]
    rng = random.Random(1)
    outcomes = {"refused": 0, "same": 0}
    for case in range(cases):
        pos, header = rng.choice(records)
        changed = original[pos + 32 : pos + 32 + header.klen].decode()
        start = pos + fmt.RECORD_HEADER.size  # the key and value, not the lengths
        end = start + header.klen + header.vlen
        data = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(start, end)] ^= rng.randrange(1, 256)
        _recheck(data, pos, salt)
        store = tmp_path / f"case{case}"
        shutil.copytree(template, store)
        (store / segment_name).write_bytes(bytes(data))
        for name in os.listdir(store):
            if name.endswith(".hint") or name == fmt.TABLE_NAME:  # so that opening scans
                (store / name).unlink()
        try:
            db = logshelf.open(store, "r", key=KEY)
        except logshelf.CorruptionError:  # e.g. a changed key byte that is not UTF-8
            outcomes["refused"] += 1
            shutil.rmtree(store)
            continue
        with db:
            refused = changed not in db  # the key's bytes changed: it reads as another key
            for k in db:
                try:
                    got = db[k]
                except logshelf.CorruptionError:
                    refused = refused or k == changed or k not in values
                    continue
                assert k in values, (case, k)  # a changed key never loads
                same = np.array_equal(got, values[k]) if k == "array" else got == values[k]
                assert same, (case, k)
            outcomes["refused" if refused else "same"] += 1
        shutil.rmtree(store)
    assert not marker.exists()
    # Only bytes of an alignment pad (not signed: they are no data) may change
    # and leave the value as it was.
    assert outcomes["refused"] >= cases * 0.95, outcomes


def test_the_sign_command_makes_a_signed_copy(tmp_path: Path) -> None:
    source, signed = tmp_path / "plain", tmp_path / "signed"
    with logshelf.open(source) as db:
        db.update({"a": 1, "arr": np.arange(10_000.0)})
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "logshelf", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    done = run("sign", str(source), str(signed), "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    with logshelf.open(signed, "r", key=KEY) as db:
        assert db["a"] == 1 and np.array_equal(db["arr"], np.arange(10_000.0))
    assert run("verify", str(signed), "--key-file", str(key_file)).returncode == 0
    refused = run("verify", str(signed))
    assert refused.returncode == 2 and "key=" in refused.stderr
    again = run("sign", str(signed), str(tmp_path / "again"), "--key-file", str(key_file))
    assert again.returncode == 2 and "signed already" in again.stderr


def test_a_large_value_is_digested_in_pieces_and_a_changed_byte_is_caught(tmp_path: Path) -> None:
    """Values of 16 MiB or more are MACed through a tree of SHA-256 pieces
    (hashed on threads): one changed byte, CRCs recomputed, is still refused."""
    store = tmp_path / "s"
    value = os.urandom(40 << 20)
    with logshelf.open(store, key=KEY, auto_compact=None) as db:
        db["big"] = value
        assert db["big"] == value
        segment, offset = db.locate("big")
    data = bytearray(Path(segment).read_bytes())
    data[offset + 32 + 3 + (25 << 20)] ^= 1  # inside the pickled bytes, in the second piece
    salt = int.from_bytes(data[12:16], "little")
    _recheck(data, offset, salt)
    Path(segment).write_bytes(bytes(data))
    for hint in store.glob("*.hint"):
        hint.unlink()
    with logshelf.open(store, "r", key=KEY) as db, pytest.raises(logshelf.TamperedError):
        db["big"]


def test_scan_reads_a_signed_store_with_its_key(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with logshelf.open(store, key=KEY) as db:
        db["when"] = __import__("datetime").date(2020, 1, 2)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    command = [sys.executable, "-m", "logshelf", "scan", str(store)]
    done = subprocess.run([*command, "--key-file", str(key_file)], capture_output=True, text=True)
    assert done.returncode == 0 and "datetime:date" in done.stdout, done.stderr
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2 and "key=" in refused.stderr
