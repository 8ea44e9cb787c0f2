"""open(..., safe=True): an allow-list of globals, hostile pickles refused,
and stores others can write refused."""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import importlib
import operator
import os
import pickle
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:  # numpy 2 renamed its core; 1.x has only the old name
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

import logshelf


@dataclass
class Point:
    x: int
    y: int


class _Reduce:
    """Pickles as ``func(*args)``: what a hostile pickle does on load."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


class _CallableReduce(_Reduce):
    """A ``_Reduce`` the pickler accepts in a reduce's callable position: its
    result (computed at load time) is then called with more arguments."""

    def __call__(self, *args: Any) -> None:
        raise AssertionError("never called while pickling")


def _hostile(marker: Path) -> dict[str, bytes]:
    """Pickles that each try to create ``marker`` (or run code) on load."""
    m = str(marker)
    touch = ["touch", m]
    gadgets = {
        "builtins.open": _Reduce(builtins.open, m, "w"),
        "os.system": _Reduce(os.system, f"touch {m}"),
        "subprocess.call": _Reduce(subprocess.call, touch),
        "builtins.eval": _Reduce(builtins.eval, f"open({m!r}, 'w')"),
        "builtins.exec": _Reduce(builtins.exec, f"open({m!r}, 'w')"),
        "builtins.getattr chain": _Reduce(
            _CallableReduce(builtins.getattr, _Reduce(builtins.__import__, "builtins"), "open"),
            m,
            "w",
        ),
        "operator.methodcaller": _Reduce(operator.methodcaller("__call__", m, "w"), builtins.open),
        "operator.attrgetter": _Reduce(
            operator.attrgetter("system"), _Reduce(builtins.__import__, "os")
        ),
        "importlib.import_module": _Reduce(importlib.import_module, "os"),
        "defaultdict(open)": collections.defaultdict(builtins.open),
        "inside an allowed type": collections.OrderedDict(a=_Reduce(builtins.open, m, "w")),
        "numpy rebuilder with a hostile subtype": _Reduce(
            _reconstruct,
            _Reduce(builtins.open, m, "w"),
            (0,),
            b"b",
        ),
    }
    out = {}
    for name, gadget in gadgets.items():
        for protocol in (2, 5):
            out[f"{name} (protocol {protocol})"] = pickle.dumps(gadget, protocol)
    # Protocol 4 names may hold dots: an allowed type's attribute is not the type.
    out["dotted name through an allowed type"] = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x8c\x0bcollections\x8c\x14OrderedDict.fromkeys\x93"
        b"\x8c\x01a\x85R."
    )
    return out


def _put(path: Path, items: dict[str, bytes]) -> None:
    with logshelf.open(path) as db:
        for key, data in items.items():
            db._engine.put(key, 0, data, 0)


def test_hostile_pickles_are_refused_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    hostile = _hostile(marker)
    _put(tmp_path / "db", hostile)
    with logshelf.open(tmp_path / "db", "r", safe=True) as db:
        for key in hostile:
            with pytest.raises(logshelf.UntrustedGlobalError, match="trusted="):
                db[key]
            with pytest.raises(logshelf.UntrustedGlobalError):
                db.get(key, encoding="latin1")  # an override stays restricted
            assert not marker.exists(), key
        with pytest.raises(logshelf.UntrustedGlobalError):
            db.get_many(list(hostile))
        with pytest.raises(logshelf.UntrustedGlobalError):
            dict(db.items(""))
    assert not marker.exists()
    # The corpus is real: without safe=True the first gadget does run.
    with logshelf.open(tmp_path / "db", "r") as unsafe:
        unsafe["builtins.open (protocol 2)"].close()
    assert marker.exists()


def test_the_allow_list_loads_everyday_values(tmp_path: Path) -> None:
    values = {
        "containers": {"a": [1, 2.5, (3, None)], "s": {1, 2}, "f": frozenset("ab")},
        "bytes": (b"\x00\xff", bytearray(b"xy")),
        "when": datetime.datetime(2026, 12, 4, 23, 0, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 12, 4),
        "span": datetime.timedelta(days=2),
        "money": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "ordered": collections.OrderedDict(b=1, a=2),
        "counts": collections.Counter("abca"),
        "queue": collections.deque([1, 2]),
        "numbers": complex(1, 2),
        "array": np.arange(12, dtype=np.float64).reshape(3, 4),
        "scalar": np.float32(1.5),
        "path": Path("/x/y"),
    }
    with logshelf.open(tmp_path / "db") as db:
        for protocol in (2, 5):
            for key, value in values.items():
                db._engine.put(f"{key}/{protocol}", 0, pickle.dumps(value, protocol), 0)
    with logshelf.open(tmp_path / "db", "r", safe=True) as db:
        for protocol in (2, 5):
            for key, value in values.items():
                got = db[f"{key}/{protocol}"]
                if isinstance(value, np.ndarray):
                    assert np.array_equal(got, value)
                else:
                    assert got == value, key


def test_trusted_extends_one_handle_only(tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "db") as db:
        db["p"] = Point(1, 2)
    with logshelf.open(tmp_path / "db", "r", safe=True) as db:
        with pytest.raises(logshelf.UntrustedGlobalError) as caught:
            db["p"]
        assert f"trusted=[({Point.__module__!r}, 'Point')]" in str(caught.value)
    for entry in (Point, (Point.__module__, "Point"), f"{Point.__module__}:Point"):
        with logshelf.open(tmp_path / "db", "r", safe=True, trusted=[entry]) as db:
            assert db["p"] == Point(1, 2)
    with (
        logshelf.open(tmp_path / "db", "r", safe=True) as db,  # nothing leaked
        pytest.raises(logshelf.UntrustedGlobalError),
    ):
        db["p"]


def test_serializers_under_safe(tmp_path: Path) -> None:
    with logshelf.open(tmp_path / "db", serializer="json") as db:
        db["j"] = {"a": [1]}
    with logshelf.open(tmp_path / "db", serializer="dill") as db:
        db["d"] = lambda: 1
    with logshelf.open(tmp_path / "db", "r", safe=True) as db:
        assert db["j"] == {"a": [1]}  # JSON is safe by construction
        with pytest.raises(logshelf.UntrustedGlobalError, match="dill"):
            db["d"]


def test_safe_stores_are_private_and_others_writable_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "private"
    with logshelf.open(path, safe=True) as db:
        db["k"] = 1
    assert path.stat().st_mode & 0o777 == 0o700
    files = [p for p in path.iterdir() if p.is_file()]
    assert files and all(p.stat().st_mode & 0o077 == 0 for p in files)
    os.chmod(files[0], 0o664)  # group-writable: whoever is in the group can tamper
    with pytest.raises(logshelf.UntrustedStoreError, match="group or others can write"):
        logshelf.open(path, safe=True)
    with logshelf.open(path, "r", safe=True, trusted_owner=True) as db:
        assert db["k"] == 1


def test_bad_safety_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="safe=True"):
        logshelf.open(tmp_path / "db", trusted=[Point])
    with pytest.raises(TypeError, match="trusted"):
        logshelf.open(tmp_path / "db", safe=True, trusted=[42])
    with pytest.raises(TypeError, match="trusted"):
        logshelf.open(tmp_path / "db", safe=True, trusted="mod:Name")
    with pytest.raises(TypeError, match="safe"):
        logshelf.open(tmp_path / "db", safe="yes")
    assert not (tmp_path / "db").exists()


def test_a_python_2_name_imports_what_was_checked_at_every_protocol() -> None:
    """The allow-list checks a Python 2 name under its Python 3 name; the
    import must be of that same name, also at protocol 3 and up (where
    CPython itself would not map it), never of the Python 2 module."""
    from logshelf._restricted import RestrictedLoads

    stream = b"\x80\x03c__builtin__\nset\n)\x85R."  # protocol 3: __builtin__.set(())
    assert RestrictedLoads(frozenset())(stream) == set()


def test_a_default_handle_warns_about_a_store_others_can_write(tmp_path: Path) -> None:
    """Without safe=True or key=, others-writable (or another user's) stores
    warn; group-writable ones, how a team shares a store, do not."""
    import warnings

    path = tmp_path / "shared"
    with logshelf.open(path) as db:
        db["k"] = 1
    segment = next(path.glob("seg-*.log"))
    os.chmod(segment, 0o664)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logshelf.open(path, "r").close()  # group-writable: no warning
    os.chmod(segment, 0o666)
    with pytest.warns(logshelf.UntrustedStoreWarning, match=r"others can write seg-.*mode 666"):
        logshelf.open(path, "r").close()
    if os.geteuid() == 0:  # only root can give a file away
        os.chmod(segment, 0o644)
        os.chown(segment, 65534, -1)
        with pytest.warns(logshelf.UntrustedStoreWarning, match="belongs to user id 65534"):
            logshelf.open(path, "r").close()
