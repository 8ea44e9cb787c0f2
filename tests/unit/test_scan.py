"""``logshelf scan PATH``: the globals each record would import, found
without loading anything, and whether ``safe=True`` would load them."""

from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import fractions
import io
import json
import os
import pickle
import pickletools
import random
import sys
import uuid
import zoneinfo
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

import logshelf
from logshelf import _cli_scan
from logshelf._format import RECORD_HEADER
from logshelf._restricted import SAFE_GLOBALS
from logshelf._scan import _python3_name, pickle_globals, scan_store
from logshelf.cli import main

PY2_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "py2_pickles.json"


@dataclass
class Point:
    x: int
    y: int


class Touch:
    """Pickles as ``os.system("touch MARKER")``: runs a command if loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _put_raw(path: Path, items: dict[str, bytes]) -> None:
    """Store bytes as records, below the pickling layer (as a hostile writer could)."""
    with logshelf.open(path) as db:
        for key, data in items.items():
            db._engine.put(key, 0, data, 0)


def _scan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["scan", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _globals_by_key(doc: dict[str, Any]) -> dict[str, list[str | None]]:
    return {row["key"]: [g["global"] for g in row["globals"]] for row in doc["keys"]}


def _su(text: str) -> bytes:
    """SHORT_BINUNICODE: push ``text``."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


P4 = b"\x80\x04"


# -- allowed values ---------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_allowed_values_pass_and_their_globals_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: int
) -> None:
    path = tmp_path / "db"
    with logshelf.open(path, protocol=protocol) as db:
        db["when"] = datetime.datetime(2026, 12, 5, 1, 0)
        db["ordered"] = collections.OrderedDict(b=1, a=2)
        db["plain"] = {"a": [1, 2.5, None], "t": (1, "x")}
        db["user:1"] = {"since": datetime.date(2026, 1, 1)}
    code, doc = _scan_json(capsys, str(path))
    assert code == 0 and doc["ok"] and doc["records"] == 4
    found = _globals_by_key(doc)
    assert found["when"][0] == "datetime:datetime"
    assert found["ordered"] == ["collections:OrderedDict"]
    assert found["plain"] == []
    assert found["user:1"][0] == "datetime:date"
    # Protocols 0-2 pickle the bytes inside a datetime through _codecs.encode.
    assert ("_codecs:encode" in found["when"]) == (protocol < 3)
    op = "GLOBAL" if protocol < 4 else "STACK_GLOBAL"
    assert {g["opcode"] for row in doc["keys"] for g in row["globals"]} == {op}
    # The text form says the same, one line per key, and ends with the verdict.
    assert main(["scan", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[0] == "ordered" and "collections:OrderedDict" in lines[0]
    assert lines[1] == "plain\tpickle\tno globals"
    assert lines[-1].startswith("ok: 4 records")
    assert "NOT ALLOWED" not in "\n".join(lines)


# -- hostile records --------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_hostile_record_fails_and_nothing_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    protocol: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    path = tmp_path / "db"
    _put_raw(path, {"evil": pickle.dumps(Touch(marker), protocol), "fine": pickle.dumps(1)})
    assert main(["scan", str(path)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("evil\t"))
    assert f"{os.system.__module__}:system NOT ALLOWED" in line  # posix:system on POSIX
    assert "NOT SAFE: 1 of 2 records" in out
    assert not marker.exists()
    # The record is real: loading it the ordinary way does run the command.
    with logshelf.open(path, "r") as db:
        db["evil"]
    assert marker.exists()


def test_nothing_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module a record names is never imported: importing this one would
    leave a marker file."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "scan_probe_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nvalue = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "db"
    _put_raw(
        path,
        {
            "p0": b"cscan_probe_module\nvalue\n.",
            "p4": P4 + _su("scan_probe_module") + _su("value") + b"\x93.",
        },
    )
    code, doc = _scan_json(capsys, str(path))
    assert code == 1
    assert _globals_by_key(doc) == {
        "p0": ["scan_probe_module:value"],
        "p4": ["scan_probe_module:value"],
    }
    assert "scan_probe_module" not in sys.modules and not marker.exists()
    # The probe works: an ordinary load imports it.
    with logshelf.open(path, "r") as db:
        assert db["p4"] == 1
    assert marker.exists()
    del sys.modules["scan_probe_module"]


# -- STACK_GLOBAL, the memo, and what cannot be known -----------------------


def test_a_memoized_module_name_is_resolved() -> None:
    data = pickle.dumps([datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1)], 4)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    # The second STACK_GLOBAL takes its module name from the memo.
    second = [i for i, (name, _) in enumerate(ops) if name == "STACK_GLOBAL"][1]
    assert [name for name, _ in ops[second - 3 : second]] == [
        "BINGET",
        "SHORT_BINUNICODE",
        "MEMOIZE",
    ]
    found, problem = pickle_globals(data)
    assert problem is None
    assert [g.name for g in found] == ["datetime:datetime", "datetime:date"]
    # A hostile module name stored in the memo early and fetched later.
    hostile = P4 + _su("os") + b"\x94" + b"0" + _su("x") + b"0" + b"h\x00" + _su("system")
    found, problem = pickle_globals(hostile + b"\x93N.")
    assert problem is None and [g.name for g in found] == ["os:system"]


def test_the_operands_are_the_stack_top_not_the_latest_strings() -> None:
    """Strings pushed and popped again are not the names STACK_GLOBAL takes."""
    decoy = P4 + _su("os") + _su("system") + _su("datetime") + _su("date") + b"00\x93N."
    found, problem = pickle_globals(decoy)
    assert problem is None and [g.name for g in found] == ["os:system"]
    # Marks fence the stack: names below a MARK are out of reach (the
    # unpickler refuses this stream too).
    fenced = P4 + _su("datetime") + b"(" + _su("date") + b"\x93N."
    found, problem = pickle_globals(fenced)
    assert found == [] and problem is not None and "underflow" in problem
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(fenced)


def test_names_computed_at_load_time_are_unresolved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # str("os") is called while loading; its result is the module name.
    computed = P4 + _su("builtins") + _su("str") + b"\x93" + _su("os") + b"\x85R"
    computed += _su("system") + b"\x93N."
    path = tmp_path / "db"
    _put_raw(path, {"computed": computed})
    code, doc = _scan_json(capsys, str(path))
    assert code == 1
    rows = doc["keys"][0]["globals"]
    assert rows[0]["global"] == "builtins:str" and not rows[0]["allowed"]
    assert rows[1]["global"] is None and not rows[1]["allowed"]
    assert "computed while the pickle runs" in rows[1]["unresolved"]


def test_extension_codes() -> None:
    stream = b"\x80\x02\x82\xf0N."  # EXT1 240
    unknown, problem = pickle_globals(stream)
    assert problem is None and unknown[0].module is None and "240" in unknown[0].why
    # A code this process's registry maps is resolved, as the unpickler resolves it.
    copyreg.add_extension("datetime", "date", 240)
    try:
        known, _ = pickle_globals(stream)
        assert pickle.loads(stream) is None  # the unpickler does accept it
    finally:
        copyreg.remove_extension("datetime", "date", 240)
    assert [g.name for g in known] == ["datetime:date"]


def test_python2_names_are_checked_under_their_python3_names() -> None:
    (found,), problem = pickle_globals(b"c__builtin__\nset\n(]tR.")
    assert problem is None
    assert (found.name, found.pickled_as) == ("builtins:set", "__builtin__:set")
    assert found.allowed(SAFE_GLOBALS)


class _Anything:
    """What a recording unpickler returns for every global: callable,
    buildable, so that the stream goes on as far as it can."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return _Anything()

    def __setstate__(self, state: Any) -> None:
        pass


class _Recorder(pickle.Unpickler):
    """The C unpickler, reading from a file as safe=True's does, noting every
    global it asks for and importing none."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.asked: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.asked.append((module, name))
        return _Anything

    def persistent_load(self, pid: Any) -> None:
        return None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_global_the_unpickler_asks_for_is_reported() -> None:
    """Mutated pickles (names inserted, memo reads, marks, pops, cut bytes):
    whenever the walk reports no problem and nothing unresolved, every global
    the real unpickler asks for is on its list."""
    values: list[Any] = [
        datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        collections.OrderedDict(a=[1, {2}]),
        [datetime.date(2020, 1, 1)] * 3,
        {"a": (1, "os", "system")},
        uuid.UUID(int=5),
        Path("/a"),
    ]
    seeds = [pickle.dumps(v, p) for v in values for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    pieces = [_su("os"), _su("system"), b"\x94", b"h\x00", b"h\x01", b"(", b"0", b"1", b"2"]
    pieces += [b"\x93", b"cos\nsystem\n", b"R", b"\x85", b"t", b"U\x06system", b"S'os'\n"]
    pieces += [b"Vsystem\n", b"g0\n", b"p5\n", b"q\x07"]
    rng = random.Random(14)
    checked = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            roll = rng.random()
            if roll < 0.5:
                data[at:at] = rng.choice(pieces)
            elif roll < 0.75:
                del data[at : at + rng.randint(1, 3)]
            elif data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
        stream = bytes(data)
        found, problem = pickle_globals(stream)
        if problem is not None or any(g.module is None for g in found):
            continue
        recorder = _Recorder(stream)
        try:
            recorder.load()
        except Exception:
            pass  # how far it got is what counts
        reported = {(g.module, g.qualname) for g in found}
        asked = {_python3_name(m, n) for m, n in recorder.asked}
        assert asked <= reported, stream
        checked += bool(asked)
    assert checked > 200  # the mutations leave many streams the unpickler runs


# -- malformed, json, dill, cache -------------------------------------------


def test_a_truncated_or_malformed_record_is_a_problem_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = pickle.dumps({"when": datetime.date(2026, 1, 1)}, 5)
    path = tmp_path / "db"
    _put_raw(
        path,
        {
            "cut": whole[:-4],
            "empty": b"",
            "garbage": b"\xff\xfe",
            "bad name": b"cos\nsys",  # cut inside the global's name
            "underflow": b"\x80\x02R.",
        },
    )
    assert main(["scan", str(path)]) == 1
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines()[:-1])
    assert "truncated" in lines["cut"] and "datetime:date" in lines["cut"]
    assert "truncated" in lines["empty"]
    assert "no pickle opcode" in lines["garbage"]
    assert "GLOBAL global name" in lines["bad name"]
    assert "underflow" in lines["underflow"]
    assert all("PROBLEM: malformed pickle" in line for line in lines.values())


def test_an_opcode_across_the_end_of_a_frame_is_malformed() -> None:
    """pickle.loads reads this as GLOBAL datetime.date; CPython's unpickler
    reading from a file (as safe=True does) drops the "da" left in the frame
    and reads the name "te". No pickler writes such a stream."""
    frame = b"cdatetime\nda"
    stream = b"\x80\x04\x95" + len(frame).to_bytes(8, "little") + frame + b"te\n."
    assert pickle.loads(stream) is datetime.date
    found, problem = pickle_globals(stream)
    assert problem is not None and "crosses the end of its FRAME" in problem
    # A frame longer than the stream is a truncated stream, globals still listed.
    long_frame = b"\x80\x04\x95\xff" + bytes(7)
    found, problem = pickle_globals(long_frame + b"cdatetime\ndate\n")
    assert [g.name for g in found] == ["datetime:date"]
    assert problem is not None and "truncated" in problem
    found, problem = pickle_globals(long_frame + b"N.")
    assert found == [] and problem is not None and "FRAME at byte 2 runs past" in problem


def test_json_records_have_no_globals_and_dill_records_are_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "db"
    with logshelf.open(path, serializer="json") as db:
        db["j"] = {"a": [1, 2]}
    with logshelf.open(path, serializer="raw") as db:
        db["r"] = b"\x80\x04cos\nsystem\n"  # bytes, never unpickled
    code, doc = _scan_json(capsys, str(path))
    assert code == 0
    assert {row["key"]: (row["format"], row["globals"]) for row in doc["keys"]} == {
        "j": ("json", []),
        "r": ("raw", []),
    }
    with logshelf.open(path, serializer="dill") as db:
        db["d"] = lambda: 1
    _put_raw(path, {"custom": b"\x00\x01\x06yaml:1a: 1", "bad envelope": b"\x00\x07"})
    code, doc = _scan_json(capsys, str(path))
    assert code == 1
    rows = {row["key"]: row for row in doc["keys"]}
    assert rows["d"]["format"] == "dill" and not rows["d"]["ok"]
    assert "safe=True refuses" in rows["d"]["problems"][0]
    assert any(g["global"].startswith("dill.") for g in rows["d"]["globals"])  # scanned too
    assert rows["custom"]["problems"] == ["cannot scan: serializer 'yaml:1'"]
    assert rows["bad envelope"]["problems"] and rows["j"]["ok"]


def test_a_cache_is_scanned_through_its_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cache"
    with logshelf.Cache(path, compression="zlib") as cache:
        cache.set("when", datetime.datetime(2026, 1, 1))
        cache.set("array", np.arange(100_000))  # out of band, compressed
        cache.set("point", Point(1, 2))
    code, doc = _scan_json(capsys, str(path))
    assert code == 1
    rows = {row["key"]: row for row in doc["keys"]}
    assert {row["format"] for row in rows.values()} == {"cache entry"}
    assert [g["global"] for g in rows["when"]["globals"]] == ["datetime:datetime"]
    assert rows["array"]["ok"] and rows["array"]["globals"]
    assert not rows["point"]["ok"]
    assert main(["scan", str(path), "--trusted", f"{Point.__module__}:Point"]) == 0
    capsys.readouterr()


def test_a_damaged_record_is_a_problem_and_the_scan_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "db"
    with logshelf.open(path) as db:
        for i in range(3):
            db[f"k{i}"] = {"n": i, "pad": "x" * 50}
        segment, offset = db.locate("k1")
    data = bytearray(Path(segment).read_bytes())
    data[offset + RECORD_HEADER.size + len("k1") + 20] ^= 0x40  # inside the value
    Path(segment).write_bytes(bytes(data))
    code, doc = _scan_json(capsys, str(path))
    assert code == 1
    rows = {row["key"]: row for row in doc["keys"]}
    assert rows["k0"]["ok"] and rows["k2"]["ok"]
    assert rows["k1"]["problems"][0].startswith("damaged record")


# -- the command line -------------------------------------------------------


def test_trusted_makes_a_custom_class_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "db"
    with logshelf.open(path) as db:
        db["p"] = Point(1, 2)
        db["when"] = datetime.date(2026, 1, 1)
    assert main(["scan", str(path)]) == 1
    assert f"{Point.__module__}:Point NOT ALLOWED" in capsys.readouterr().out
    assert main(["scan", str(path), "--trusted", f"{Point.__module__}:Point"]) == 0
    assert "NOT ALLOWED" not in capsys.readouterr().out
    assert main(["scan", str(path), "--trusted", "other:Point", "x:y"]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["scan", str(path), "--trusted", "not-a-pair"])
    assert exited.value.code == 2


def test_summary_json_prefix_and_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    with logshelf.open(path) as db:
        for i in range(5):
            db[f"day:{i}"] = datetime.date(2026, 1, i + 1)
        db["other"] = {1, 2}
        db["when"] = datetime.datetime(2026, 1, 1)
    _put_raw(path, {"evil": pickle.dumps(Touch(tmp_path / "M"), 2)})
    monkeypatch.setattr(_cli_scan, "PROGRESS_EVERY", 2)
    assert main(["scan", str(path), "--summary"]) == 1
    captured = capsys.readouterr()
    rows = [[f.strip() for f in line.split("\t")] for line in captured.out.splitlines()[1:-1]]
    assert ["5", "datetime:date"] in rows
    assert ["1", f"{os.system.__module__}:system", "NOT ALLOWED"] in rows
    assert "scanned 8 of 8 records" in captured.err
    code, doc = _scan_json(capsys, str(path), "--summary", "--prefix", "day:")
    assert code == 0 and doc["ok"] and doc["records"] == 5 and "keys" not in doc
    assert doc["summary"] == [{"global": "datetime:date", "records": 5, "allowed": True}]
    code, doc = _scan_json(capsys, str(path))
    assert code == 1 and doc["failing"] == 1 and len(doc["keys"]) == 8


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "missing")]) == 2
    assert "no logshelf store" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["scan", str(tmp_path / "file")]) == 2


# -- scan agrees with safe=True ---------------------------------------------


def _corpus(marker: Path) -> dict[str, bytes]:
    values: dict[str, Any] = {
        "containers": {"a": [1, 2.5, (3, None)], "s": {1, 2}, "f": frozenset("ab")},
        "bytes": (b"\x00\xff", bytearray(b"xy")),
        "when": datetime.datetime(2026, 12, 4, 23, 0, tzinfo=datetime.timezone.utc),
        "span": datetime.timedelta(days=2),
        "money": decimal.Decimal("1.10"),
        "ratio": fractions.Fraction(1, 3),
        "id": uuid.UUID(int=7),
        "ordered": collections.OrderedDict(b=1, a=2),
        "counts": collections.Counter("abca"),
        "queue": collections.deque([1, 2], maxlen=5),
        "numbers": (complex(1, 2), range(3), slice(1, 2), Ellipsis),
        "paths": (Path("/x/y"), PurePosixPath("a/b")),
        "array": np.arange(12, dtype=np.float64).reshape(3, 4),
        "int array": np.arange(5, dtype=np.int32),
        "scalar": np.float32(1.5),
        "datetime64 array": np.array(["2026-01-01"], dtype="datetime64[D]"),
        "object array": np.array([1, "a"], dtype=object),
        "record array": np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]),
        "defaultdict(list)": collections.defaultdict(list),
        "zone": zoneinfo.ZoneInfo("UTC"),
        "point": Point(1, 2),
        "hostile": Touch(marker),
        "hostile inside allowed": collections.OrderedDict(a=Touch(marker)),
        "NotImplemented": NotImplemented,
    }
    out = {
        f"{name} (protocol {protocol})": pickle.dumps(value, protocol)
        for name, value in values.items()
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    }
    py2 = json.loads(PY2_FIXTURES.read_text())
    out.update({f"python 2 {name}": bytes.fromhex(text) for name, text in py2.items()})
    out["python 2 set"] = b"c__builtin__\nset\n(]tR."
    out["dotted name"] = P4 + _su("collections") + _su("OrderedDict.fromkeys") + b"\x93)R."
    return out


def test_scan_passes_exactly_what_safe_true_loads(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "db"
    corpus = _corpus(marker)
    _put_raw(path, corpus)
    with logshelf.open(path, serializer="json") as db:
        db["json"] = [1, "a"]
    with logshelf.open(path, serializer="dill") as db:
        db["dill"] = [1, 2]
    passes = {key: scan.passes(SAFE_GLOBALS) for key, scan in scan_store(path)}
    assert set(passes) == {*corpus, "json", "dill"}
    loads = {}
    # latin1: Python 2 datetimes need it (it changes nothing for Python 3 pickles).
    with logshelf.open(path, "r", safe=True, encoding="latin1") as db:
        for key in passes:
            try:
                db[key]
            except logshelf.UntrustedGlobalError:
                loads[key] = False
            else:
                loads[key] = True
    assert not marker.exists()
    assert {k for k in passes if passes[k] != loads[k]} == set()
    # The corpus has both kinds, and numpy arrays at every protocol pass.
    assert 0 < sum(passes.values()) < len(passes)
    assert all(passes[f"array (protocol {p})"] for p in range(pickle.HIGHEST_PROTOCOL + 1))
    assert not passes["zone (protocol 5)"] and not passes["dill"] and passes["json"]


def test_a_value_with_large_arrays_is_scanned_without_reading_them(tmp_path: Path) -> None:
    """Its pickle stream is scanned; the arrays' buffers (out of band,
    docs/format.md section 4.2) hold no globals and are only mapped."""
    store = tmp_path / "arrays"
    with logshelf.open(store) as db:
        db["a"] = {"x": np.ones(1 << 16), "when": datetime.date(2020, 1, 2)}
    found = dict(scan_store(store))
    assert found["a"].format == "pickle with buffers"
    names = {f"{g.module}:{g.qualname}" for g in found["a"].globals}
    assert "datetime:date" in names and not found["a"].problems
