"""Reading values pickled by Python 2 (issue 13): ``encoding``, ``errors`` and
``fix_imports`` on open(), get() and get_many(), with pickle.loads's meaning.

The pickles are real Python 2 output, kept as hex in
tests/fixtures/py2_pickles.json by tests/fixtures/make_py2_pickles.py (run
once with Python 2.7), so these tests need no Python 2.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

import logshelf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "py2_pickles.json"
PICKLES: dict[str, bytes] = {
    name: bytes.fromhex(text) for name, text in json.loads(FIXTURES.read_text()).items()
}
PROTOCOLS = [0, 1, 2]


def _store(path: Path, **kwargs: Any) -> logshelf.Shelf:
    """A store holding every fixture under its own name, written as raw
    bytes below the pickling layer, as an old store's records would be."""
    with logshelf.open(path) as db:
        for name, data in PICKLES.items():
            db._engine.put(name, 0, data, 0)
    return logshelf.open(path, **kwargs)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_the_fixtures_are_python2_pickles() -> None:
    """Protocol 2 pickles start with PROTO 2; Python 3's protocol 0 would write
    a unicode str as UNICODE, never a py2 str as STRING with quotes."""
    assert set(PICKLES) >= {f"latin1_str-p{p}" for p in PROTOCOLS} | {"ndarray-p2"}
    assert PICKLES["latin1_str-p2"].startswith(b"\x80\x02U")
    assert PICKLES["latin1_str-p0"].startswith(b"S'caf\\xe9")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_non_ascii_str_needs_an_encoding(path: Path, protocol: int) -> None:
    key = f"latin1_str-p{protocol}"
    with _store(path) as db:
        with pytest.raises(UnicodeDecodeError):
            db[key]
        assert db.get(key, encoding="latin1") == "caf\xe9 cr\xe8me"
        assert db.get(key, encoding="bytes") == b"caf\xe9 cr\xe8me"
        assert db.get(key, encoding="ascii", errors="replace") == "caf\ufffd cr\ufffdme"
    with logshelf.open(path, encoding="latin1") as db:
        assert db[key] == "caf\xe9 cr\xe8me"
        assert db.get(key) == "caf\xe9 cr\xe8me"
        assert db.get(key, encoding="bytes") == b"caf\xe9 cr\xe8me"
    with logshelf.open(path, encoding="bytes") as db:
        assert db[key] == b"caf\xe9 cr\xe8me"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unicode_and_ascii_str_read_with_the_defaults(path: Path, protocol: int) -> None:
    with _store(path) as db:
        assert db[f"unicode-p{protocol}"] == "caf\xe9 \u20ac \u65e5\u672c"
        assert db[f"ascii_str-p{protocol}"] == "plain ascii"
        # "bytes" turns only py2 str into bytes; unicode stays str.
        assert db.get(f"unicode-p{protocol}", encoding="bytes") == "caf\xe9 \u20ac \u65e5\u672c"
        assert db.get(f"ascii_str-p{protocol}", encoding="bytes") == b"plain ascii"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_datetimes_need_latin1(path: Path, protocol: int) -> None:
    when = datetime.datetime(2024, 5, 17, 12, 30, 45, 123456)
    with _store(path) as db:
        with pytest.raises((UnicodeDecodeError, TypeError, ValueError)):
            db[f"datetime-p{protocol}"]
        assert db.get(f"datetime-p{protocol}", encoding="latin1") == when
        assert db.get(f"date-p{protocol}", encoding="latin1") == datetime.date(1999, 12, 31)
        assert db.get(f"datetime-p{protocol}", encoding="bytes") == when
    with logshelf.open(path, encoding="latin1") as db:
        assert db[f"datetime-p{protocol}"] == when


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nested_containers(path: Path, protocol: int) -> None:
    expected = {
        "list": [1, 2**70, 3.5, None, True, False],
        "tuple": ("a", 7, ("deep", ["er"])),
        "dict": {"k": [1, 2], "empty": {}},
    }
    with _store(path) as db:
        assert db[f"nested-p{protocol}"] == expected
        assert db.get(f"nested-p{protocol}", encoding="latin1") == expected


def test_a_python2_numpy_array_reads_with_latin1(path: Path) -> None:
    np = pytest.importorskip("numpy")
    with _store(path) as db:
        with pytest.raises(UnicodeDecodeError):
            db["ndarray-p2"]
        array = db.get("ndarray-p2", encoding="latin1")
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.dtype("<f8")
    assert array.tolist() == [1.5, -2.0, 3.25]
    with logshelf.open(path, "r", encoding="latin1") as db:
        assert db["ndarray-p2"].tolist() == [1.5, -2.0, 3.25]


def test_get_many_honours_the_handle_and_the_call(path: Path) -> None:
    keys = ["latin1_str-p2", "datetime-p1", "absent"]
    with _store(path, encoding="latin1") as db:
        got = db.get_many(keys, default="none")
        assert got == {
            "latin1_str-p2": "caf\xe9 cr\xe8me",
            "datetime-p1": datetime.datetime(2024, 5, 17, 12, 30, 45, 123456),
            "absent": "none",
        }
        assert db.get_many(keys[:1], encoding="bytes") == {"latin1_str-p2": b"caf\xe9 cr\xe8me"}
    with logshelf.open(path) as db, pytest.raises(UnicodeDecodeError):
        db.get_many(keys)


def test_writeback_honours_the_settings(path: Path) -> None:
    with _store(path, writeback=True, encoding="latin1") as db:
        assert db["latin1_str-p1"] == "caf\xe9 cr\xe8me"
        listed = db["nested-p2"]["list"]
        listed.append("more")  # writeback: the cached object is the value
        assert db.get("nested-p2")["list"][-1] == "more"
        # A cached entry is the live value: an override does not re-read it.
        assert db.get("latin1_str-p1", encoding="bytes") == "caf\xe9 cr\xe8me"
        assert db.get("latin1_str-p0", encoding="bytes") == b"caf\xe9 cr\xe8me"
        assert db.get_many(["ascii_str-p2"]) == {"ascii_str-p2": "plain ascii"}
    with logshelf.open(path) as db:
        # Written back on close as a Python 3 pickle: the defaults read it now.
        assert db["nested-p2"]["list"][-1] == "more"
        assert db["latin1_str-p1"] == "caf\xe9 cr\xe8me"


def test_the_defaults_still_read_python3_pickles(path: Path) -> None:
    value = {"s": "caf\xe9", "b": b"\xff\x00", "d": datetime.datetime(2020, 1, 2)}
    with logshelf.open(path) as db:
        db["v"] = value
        assert db["v"] == value
    for encoding in ("ASCII", "latin1", "bytes"):
        with logshelf.open(path, encoding=encoding) as db:
            assert db["v"] == value
            assert db.get("v", encoding="utf-8") == value


def test_fix_imports_maps_python2_module_names(path: Path) -> None:
    """A Python 2 pickle naming __builtin__.set loads only with fix_imports."""
    data = b"c__builtin__\nset\np0\n((lp1\nI1\naI2\natp2\nRp3\n."
    with logshelf.open(path) as db:
        db._engine.put("set", 0, data, 0)
        assert db["set"] == {1, 2}
        with pytest.raises(ModuleNotFoundError):
            db.get("set", fix_imports=False)
    with logshelf.open(path, fix_imports=False) as db:
        with pytest.raises(ModuleNotFoundError):
            db["set"]
        assert db.get("set", fix_imports=True) == {1, 2}


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"encoding": "no-such-codec"}, ValueError, "no-such-codec"),
        ({"encoding": b"latin1"}, TypeError, "encoding"),
        ({"errors": 3}, TypeError, "errors"),
        ({"errors": "no-such-handler"}, ValueError, "no-such-handler"),
        ({"fix_imports": 1}, TypeError, "fix_imports"),
    ],
)
def test_bad_arguments_are_named_before_touching_disk(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    path = tmp_path / "never"
    with pytest.raises(error, match=named):
        logshelf.open(path, **kwargs)
    assert not path.exists()
    with logshelf.open(tmp_path / "s") as db:
        db["k"] = 1
        with pytest.raises(error, match=named):
            db.get("k", **kwargs)
        with pytest.raises(error, match=named):
            db.get_many(["k"], **kwargs)


def test_unpickling_defaults_bind_pickle_loads_itself(path: Path) -> None:
    """The hot read path pays nothing for the feature when it is not used."""
    import pickle

    with logshelf.open(path) as db:
        assert db._loads is pickle.loads
    with logshelf.open(path, encoding="latin1") as db:
        assert db._loads is not pickle.loads
