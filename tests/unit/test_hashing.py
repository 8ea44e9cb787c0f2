"""The argument hasher of the memoizing cache (logshelf._hashing): equal
arguments give equal keys in every process, different ones differ, and what
has no stable content is refused with the path to it."""

from __future__ import annotations

import ast
import collections
import dataclasses
import datetime
import decimal
import fractions
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logshelf import _hash_arrays, _hash_types, _hashing
from logshelf._hashing import (
    DIGEST_SIZE,
    UnhashableArgumentError,
    freeze,
    hash_arguments,
    hash_value,
    register_hasher,
    remember,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def h(value: object, typed: bool = False) -> bytes:
    return hash_value(value, typed=typed)


@pytest.fixture
def registry() -> Iterator[None]:
    """register_hasher changes module state: put it back after the test."""
    saved_registry, saved_dispatch = dict(_hashing._registry), dict(_hashing._dispatch)
    yield
    _hashing._registry.clear()
    _hashing._registry.update(saved_registry)
    _hashing._dispatch.clear()
    _hashing._dispatch.update(saved_dispatch)


@pytest.fixture
def buffer_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the buffers the tree hasher is asked to hash."""
    calls: list[int] = []
    real = _hash_types.tree_digest

    def counting(view: memoryview) -> bytes:
        calls.append(len(view))
        return real(view)

    monkeypatch.setattr(_hash_types, "tree_digest", counting)
    return calls


# -- the API ---------------------------------------------------------------------


def test_digests_are_bytes_of_the_documented_size() -> None:
    assert len(hash_arguments({"x": 1})) == DIGEST_SIZE == 32
    assert len(h(None)) == DIGEST_SIZE


def test_argument_names_and_values_both_count_but_not_their_order() -> None:
    assert hash_arguments({"x": 1, "y": 2}) == hash_arguments({"y": 2, "x": 1})
    assert hash_arguments({"x": 1, "y": 2}) != hash_arguments({"x": 2, "y": 1})
    assert hash_arguments({"x": 1}) != hash_arguments({"y": 1})
    assert hash_arguments({}) != hash_arguments({"x": None})
    assert hash_arguments({"x": 1}) != h(1)


# -- equality -----------------------------------------------------------------------


def test_dict_order_does_not_matter() -> None:
    a = {"a": 1, "b": [1, 2], 3: "c"}
    b = {3: "c", "b": [1, 2], "a": 1}
    assert list(a) != list(b)
    assert h(a) == h(b)
    assert h(a) != h({"a": 1, "b": [2, 1], 3: "c"})


def test_set_order_does_not_matter_and_a_set_equals_its_frozenset() -> None:
    words = [f"word{i}" for i in range(50)]
    forward, backward = set(words), set(reversed(words))
    assert h(forward) == h(backward) == h(frozenset(words))
    assert h(forward) != h(set(words[:-1]))


def test_equal_numbers_hash_equal_unless_typed() -> None:
    assert h(1) == h(1.0) == h(True) == h(fractions.Fraction(1)) == h(decimal.Decimal("1.00"))
    assert h(1) == h(complex(1, 0)) == h(np.int64(1)) == h(np.float32(1.0)) == h(np.bool_(True))
    assert h(0) == h(-0.0) == h(False)
    assert h(0.5) == h(fractions.Fraction(1, 2)) == h(decimal.Decimal("0.5")) == h(np.float16(0.5))
    assert h(2**70) == h(float(2**70)) and h(2**70) != h(2**70 + 1)
    assert h(float("nan")) == h(-float("nan")) == h(np.float64("nan"))
    assert h(float("inf")) == h(decimal.Decimal("Infinity")) != h(float("-inf"))
    assert h(1) != h(2) and h(0.1) != h(0.2)
    # Not equal as numbers, so not equal as keys:
    assert decimal.Decimal("0.1") != 0.1 and h(decimal.Decimal("0.1")) != h(0.1)
    assert h(fractions.Fraction(1, 3)) != h(1 / 3)
    assert h(complex(1, 2)) != h(complex(2, 1))

    assert h(1, typed=True) != h(1.0, typed=True) != h(True, typed=True)
    assert h(1, typed=True) != h(np.int64(1), typed=True)
    assert hash_arguments({"x": 1}, typed=True) != hash_arguments({"x": 1.0}, typed=True)
    assert hash_arguments({"x": 1}) == hash_arguments({"x": 1.0})
    # As in lru_cache, typed is about the top-level arguments only.
    assert h((1,), typed=True) == h((1.0,), typed=True)


def test_sequences_strings_and_bytes() -> None:
    assert h([1, 2]) != h((1, 2))
    assert h([1, 2]) != h([2, 1])
    assert h("ab") != h(b"ab")
    assert h(b"ab") == h(bytearray(b"ab")) == h(memoryview(b"ab"))
    assert h("\udc80") != h("\udc81")  # lone surrogates are content too
    assert h(("a", "bc")) != h(("ab", "c"))  # lengths delimit
    assert h([[1], 2]) != h([1, [2]])
    big = bytes(range(256)) * 1024  # past the inline limit: tree-hashed
    assert h(big) == h(bytearray(big)) != h(big[:-1] + b"\1")


def test_nested_values_differ_at_any_depth() -> None:
    base = {"a": [1, {"b": (2, {3, 4}), "c": [5.5, None]}]}
    changed = {"a": [1, {"b": (2, {3, 5}), "c": [5.5, None]}]}
    assert h(base) == h({"a": [1, {"c": [5.5, None], "b": (2, {4, 3})}]})
    assert h(base) != h(changed)


def test_cycles_are_back_references() -> None:
    a: list[Any] = [1]
    a.append(a)
    b: list[Any] = [1]
    b.append(b)
    assert h(a) == h(b)
    c: list[Any] = [1, [1]]
    c[1].append(c)  # the back-reference goes two levels up
    assert h(c) != h(a)
    d: dict[str, Any] = {}
    d["self"] = d
    assert len(h(d)) == DIGEST_SIZE

    node = Node(1)
    node.next = node
    other = Node(1)
    other.next = other
    assert h(node) == h(other)
    # A value seen twice without a cycle is hashed in full both times.
    shared = [1, 2]
    assert h([shared, shared]) == h([[1, 2], [1, 2]])


def test_keys_that_encode_alike_are_ordered_by_their_values() -> None:
    one, two = Obj(a=1), Obj(a=1)  # distinct keys (identity), equal state
    assert h({one: "x", two: "y"}) == h({two: "y", one: "x"})
    assert h({one: "x", two: "y"}) != h({one: "x", two: "z"})
    nan, other_nan = float("nan"), float("nan")
    assert h({nan: 1, other_nan: 2}) == h({other_nan: 2, nan: 1})


#: Small values, so that equal pairs (1 and 1.0, {1} and frozenset({True}))
#: come up often. NaN is left out: it is unequal to itself yet hashes alike.
scalars = st.sampled_from([0, 1, 2, -1, 0.0, 1.0, 0.5, 2.5, True, False, None, "", "a", b"a"])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.frozensets(scalars, max_size=3)
        | st.sets(scalars, max_size=3)
        | st.dictionaries(scalars, inner, max_size=3)
    ),
    max_leaves=8,
)


@given(values, values)
def test_digests_are_equal_exactly_when_values_are_equal(a: object, b: object) -> None:
    assert (h(a) == h(b)) == (a == b)


#: Values equal to each other but of other types (a twin replaces each one).
EQUAL = {0: (0, 0.0, -0.0, False), 1: (1, 1.0, True, complex(1, 0)), 0.5: (0.5, np.float64(0.5))}


def twin(value: object, draw: Callable[[Any], Any]) -> object:
    """An equal value built differently: equal numbers of other types, dicts
    filled in reverse order, sets from their twins."""
    if isinstance(value, (list, tuple)):
        return type(value)(twin(item, draw) for item in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(twin(item, draw) for item in value)
    if isinstance(value, dict):
        return {twin(k, draw): twin(v, draw) for k, v in reversed(list(value.items()))}
    if type(value) in (int, float, bool) and value in EQUAL:
        return draw(st.sampled_from(EQUAL[value]))  # type: ignore[index]
    return value


@given(values, st.data())
def test_values_built_differently_but_equal_hash_equal(value: object, data: Any) -> None:
    other = twin(value, data.draw)
    assert other == value
    assert h(other) == h(value)


def test_standard_library_values() -> None:
    utc = datetime.timezone.utc
    plus_one = datetime.timezone(datetime.timedelta(hours=1))
    noon = datetime.datetime(2024, 1, 1, 12, tzinfo=utc)
    assert h(noon) == h(datetime.datetime(2024, 1, 1, 12, tzinfo=utc))
    assert h(noon) != h(noon.replace(tzinfo=None))
    assert noon == noon.astimezone(plus_one) and h(noon) != h(noon.astimezone(plus_one))
    assert h(datetime.date(2024, 1, 1)) != h(datetime.datetime(2024, 1, 1))
    assert h(datetime.time(1, 2)) != h(datetime.time(1, 3))
    assert h(datetime.timedelta(1)) == h(datetime.timedelta(hours=24))
    one = uuid.UUID(int=1)
    assert h(one) == h(uuid.UUID(int=1)) != h(uuid.UUID(int=2))
    assert h(Path("a/b")) == h(PurePosixPath("a/b")) != h(Path("a/c"))
    assert h(range(0)) == h(range(3, 3)) and h(range(1, 10, 2)) != h(range(1, 10, 3))
    assert h(slice(1, 2)) != h(slice(1, 3))
    assert h(Color.RED) != h(Color.BLUE) and h(Color.RED) != h(1)
    assert h(int) != h(float) and h(Node) == h(Node)
    assert h(collections.OrderedDict(a=1, b=2)) != h(collections.OrderedDict(b=2, a=1))
    assert h(collections.defaultdict(list)) != h(collections.defaultdict(set))
    assert h(collections.Counter("ab")) != h({"a": 1, "b": 1})  # a subclass keeps its class
    assert h(Point(1, 2)) != h((1, 2)) and h(Point(1, 2)) == h(Point(1, 2))
    assert h(ValueError("a")) != h(ValueError("b"))
    assert h(sys) == h(sys) != h(os)


# -- objects ------------------------------------------------------------------------


class Node:
    __module__ = "golden"  # the golden digest test pins its name

    def __init__(self, value: object) -> None:
        self.value = value
        self.next: object = None


class Color(__import__("enum").Enum):
    __module__ = "golden"
    RED = 1
    BLUE = 2


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Config:
    name: str
    sizes: list[int]


@dataclasses.dataclass
class OtherConfig:
    name: str
    sizes: list[int]


class Slotted:
    __slots__ = ("__secret", "a", "unset")

    def __init__(self, a: object, secret: object) -> None:
        self.a = a
        self.__secret = secret


class Obj:
    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


def test_dataclasses_by_class_and_fields() -> None:
    assert h(Config("a", [1])) == h(Config("a", [1]))
    assert h(Config("a", [1])) != h(Config("a", [2]))
    assert h(Config("a", [1])) != h(OtherConfig("a", [1]))


def test_plain_objects_by_class_and_attributes_in_any_order() -> None:
    assert h(Obj(a=1, b=2)) == h(Obj(b=2, a=1))
    assert h(Obj(a=1, b=2)) != h(Obj(a=1, b=3))
    assert h(Obj(a=1)) != h(Node(1))


def test_slots_including_private_and_unset_ones() -> None:
    assert h(Slotted(1, "s")) == h(Slotted(1, "s"))
    assert h(Slotted(1, "s")) != h(Slotted(1, "t"))  # the mangled _Slotted__secret counts
    filled = Slotted(1, "s")
    filled.unset = 0
    assert h(filled) != h(Slotted(1, "s"))


def test_functions_by_code_defaults_and_closures() -> None:
    def make(offset: int) -> Callable[[int], int]:
        return lambda x: x + offset

    first, second = (lambda x: x + 1), (lambda x: x + 2)
    assert h(first) != h(second)
    assert h(make(1)) == h(make(1)) != h(make(2))
    assert h(test_functions_by_code_defaults_and_closures) == h(
        test_functions_by_code_defaults_and_closures
    )
    assert h(len) != h(abs) and h([].append) == h([].append)
    assert h(Node(1).__init__) == h(Node(1).__init__) != h(Node(2).__init__)


def test_an_error_names_the_path_to_what_has_no_stable_content() -> None:
    with socket.socket() as connection, pytest.raises(UnhashableArgumentError) as info:
        hash_arguments({"model": Obj(connection=connection)})
    assert str(info.value) == (
        "cannot hash args['model'].connection: socket objects have no stable content "
        "(register_hasher(socket.socket, ...) to hash them)"
    )
    assert isinstance(info.value, TypeError)

    with pytest.raises(UnhashableArgumentError, match=r"^cannot hash value\['k'\]\[1\]: lock "):
        h({"k": [0, threading.Lock()]})
    with pytest.raises(UnhashableArgumentError, match=r"args\['g'\]\[0\]: generator objects"):
        hash_arguments({"g": (x for x in [1]), "a": 1} and {"g": [(x for x in [1])]})
    with open(os.devnull) as handle, pytest.raises(UnhashableArgumentError, match="TextIOWrapper"):
        h(Config("a", [handle]))  # type: ignore[list-item]


class SocketWithDict(socket.socket):
    """A Python subclass whose visible state says nothing of the descriptor."""

    def __init__(self) -> None:
        super().__init__()
        self.label = "x"


def test_a_c_base_with_hidden_state_is_never_hashed_by_its_visible_attributes() -> None:
    with SocketWithDict() as sock, pytest.raises(UnhashableArgumentError, match="SocketWithDict"):
        h(sock)


def test_register_hasher_substitutes_a_value(registry: None) -> None:
    register_hasher(socket.socket, lambda s: ("socket", s.family, s.type))
    with socket.socket() as one, socket.socket() as two, SocketWithDict() as three:
        assert h(one) == h(two)
        assert h(Obj(connection=one)) == h(Obj(connection=two))
        assert len(h(three)) == DIGEST_SIZE  # subclasses follow their registered base
    register_hasher(Node, lambda node: node.value)
    assert h(Node(1)) == h(Node(1.0)) != h(Node(2))
    assert h(Node(1)) != h(1)  # the registered class tags the substitute


def test_too_deep_a_nesting_is_an_error_not_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnhashableArgumentError, match="nested too deeply"):
        h(deep)


# -- numpy and pandas ---------------------------------------------------------------


def test_arrays_by_dtype_shape_and_content() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert h(a) == h(a.copy()) == h(np.asfortranarray(a))
    assert h(a) != h(a.reshape(4, 3)) != h(a.ravel())
    assert h(a) != h(a.astype(np.float32)) != h(a.astype(np.int64))
    changed = a.copy()
    changed[2, 3] += 1
    assert h(a) != h(changed)
    view = a[:, ::2]  # not contiguous: hashed as its C-order copy
    assert not view.flags.c_contiguous and h(view) == h(np.ascontiguousarray(view))
    assert h(a.T) == h(a.T.copy()) != h(a)
    assert h(np.array(["a", 1], dtype=object)) == h(np.array(["a", 1.0], dtype=object))
    assert h(np.array(["a", 1], dtype=object)) != h(np.array(["a", 2], dtype=object))
    records = np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])
    assert h(records) != h(np.zeros(2, dtype=[("a", "i4"), ("c", "f8")]))
    stamps = np.array(["2024-01-01"], dtype="M8[D]")
    assert h(stamps) == h(stamps.copy()) != h(stamps.astype("M8[s]"))


def test_large_arrays_cross_the_chunk_boundaries_deterministically() -> None:
    big = np.arange(2_500_000, dtype=np.float64)  # 20 MB: three 8 MiB chunks
    digest = h(big)
    assert h(big.copy()) == digest
    big[-1] = -1
    assert h(big) != digest


def test_the_tree_does_not_depend_on_the_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    view = memoryview(bytes(range(256)) * (80 * 1024))  # 20 MiB
    parallel = _hash_types.tree_digest(view)
    monkeypatch.setattr(_hash_types, "_get_pool", lambda: None)
    assert _hash_types.tree_digest(view) == parallel


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "s": ["x", "y", "z"]})


def test_frames_by_content_not_by_how_they_were_built() -> None:
    df = frame()
    built = pd.DataFrame(np.array([[1, 2, 3]]).T, columns=["a"])
    built["b"] = np.array([0.5, 1.5, 2.5])
    built["s"] = ["x", "y", "z"]
    assert h(df) == h(built) == h(df.copy()) == h(df.copy(deep=True))
    assert h(df) != h(df[["b", "a", "s"]])
    assert h(df) != h(df.set_axis([10, 11, 12], axis=0))
    assert h(df) != h(df.astype({"a": "float64"}))
    other = df.copy()
    other.loc[1, "s"] = "w"
    assert h(df) != h(other)
    assert h(df["a"]) == h(built["a"]) != h(df["b"])
    assert h(df.columns) != h(df.columns[::-1])
    extras = pd.DataFrame(
        {
            "c": pd.Categorical(["u", "v"]),
            "t": pd.date_range("2024", periods=2, tz="UTC"),
            "n": pd.array([1, None], dtype="Int64"),
        }
    )
    assert h(extras) == h(extras.copy())
    assert h(extras) != h(extras.assign(n=pd.array([1, 2], dtype="Int64")))


# -- remember and freeze -----------------------------------------------------------

SIZE = 1 << 17  # float64 elements: 1 MiB, past the inline limit


def test_a_remembered_frozen_array_is_not_hashed_again(buffer_hashes: list[int]) -> None:
    original = np.arange(SIZE, dtype=np.float64)
    frozen = remember(freeze(original))
    assert isinstance(frozen, np.ndarray) and not frozen.flags.writeable
    with pytest.raises(ValueError):
        frozen.flags.writeable = True  # numpy refuses: the memory is a bytes object
    digest = h(frozen)
    assert h(frozen) == digest == h(original) and h([frozen]) == hash_value([original])
    assert buffer_hashes == [SIZE * 8] * 3  # frozen once, the writable original twice
    with warnings.catch_warnings():
        # numpy 2.5 deprecates assigning .shape; while it works, the memo must
        # notice it: the same memory seen differently is hashed afresh.
        warnings.simplefilter("ignore", DeprecationWarning)
        frozen.shape = (2, SIZE // 2)
    assert h(frozen) == h(original.reshape(2, SIZE // 2)) != digest


def test_an_array_that_could_change_is_hashed_every_time(buffer_hashes: list[int]) -> None:
    writable = remember(np.arange(SIZE, dtype=np.float64))
    assert isinstance(writable, np.ndarray)
    before = h(writable)
    writable[0] = -1
    assert h(writable) != before
    assert len(buffer_hashes) == 2

    locked = np.arange(SIZE, dtype=np.float64)
    locked.flags.writeable = False  # it owns its memory: the flag can be set back
    remember(locked)
    before = h(locked)
    locked.flags.writeable = True
    locked[0] = -1
    assert h(locked) != before

    base = np.arange(SIZE, dtype=np.float64)
    view = base[:]
    view.flags.writeable = False  # read-only, but base writes into the same memory
    remember(view)
    before = h(view)
    base[0] = -1
    assert h(view) != before
    assert len(buffer_hashes) == 6


def test_how_a_cache_should_decode_arrays_to_make_them_rememberable(
    buffer_hashes: list[int],
) -> None:
    array = np.arange(SIZE, dtype=np.float64)
    in_band = pickle.loads(pickle.dumps(array, protocol=5))
    assert not _hash_arrays.immutable_root(remember(in_band))  # on a writable bytearray
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    loaded = pickle.loads(data, buffers=[bytes(b.raw()) for b in buffers])
    remember(loaded)
    assert h(loaded) == h(loaded) == h(array) == h(in_band) == h(in_band)
    assert len(buffer_hashes) == 4  # loaded once, array once, in_band twice


def test_forgotten_arrays_leave_the_memo() -> None:
    frozen = remember(freeze(np.arange(SIZE, dtype=np.float64)))
    h(frozen)
    key = id(frozen)
    assert key in _hash_arrays._memo
    del frozen
    assert key not in _hash_arrays._memo


def test_freeze_goes_into_containers_and_keeps_values() -> None:
    value = {"a": [np.arange(3.0)], "b": (np.ones(2), "x")}
    frozen = freeze(value)
    assert isinstance(frozen, dict) and h(frozen) == h(value)
    assert not frozen["a"][0].flags.writeable and not frozen["b"][0].flags.writeable
    assert value["a"][0].flags.writeable  # the original is untouched


# -- stability ---------------------------------------------------------------------

COMPOSITE = """
import datetime, decimal, uuid
composite = {
    "strings": {"alpha", "beta", "gamma", "delta", "epsilon"},
    "frozen": frozenset({"x", "y", ("z", 1)}),
    "nested": {"b": [1, 2.5, None, True], "a": ("t", b"bytes"), 3: {"k": "v"}},
    "numbers": [1, 0.1, 2**80, -7, complex(1, 2), decimal.Decimal("1.5")],
    "when": datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc),
    "id": uuid.UUID(int=42),
}
"""


def composite() -> dict[str, object]:
    namespace: dict[str, Any] = {}
    exec(COMPOSITE, namespace)
    return namespace["composite"]  # type: ignore[no-any-return]


def test_digests_are_the_same_in_other_processes_and_under_any_hash_seed() -> None:
    script = COMPOSITE + textwrap.dedent(
        """
        from logshelf._hashing import hash_arguments
        print(hash_arguments({"value": composite, "n": 1}).hex())
        """
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(done.stdout.strip())
    assert digests == {hash_arguments({"value": composite(), "n": 1}).hex()}


#: Pinned on purpose. If this test fails, the encoding changed: every digest a
#: user's cache holds is then invalid and every cached call will miss once.
#: Change the encoding only deliberately, with a new _PERSON in _hashing.py.
GOLDEN = "5f12f9b11004d056c969b3e16c1b24f8f918c70177f4a4713952abb0fe83323b"


@dataclasses.dataclass
class Pinned:
    name: str
    sizes: list[int]


# Named as if defined elsewhere, so that the digest does not depend on how
# pytest imports this file. Nothing here depends on the versions of Python,
# numpy or pandas (functions and pandas dtypes would).
Pinned.__module__, Pinned.__qualname__ = "golden", "Pinned"


def test_the_encoding_is_pinned() -> None:
    value = {
        "composite": composite(),
        "config": Pinned("golden", [1, 2, 3]),
        "array": np.arange(10_000, dtype="<f8").reshape(100, 100),  # tree-hashed
        "small": np.arange(6, dtype="<i4").reshape(2, 3)[:, ::2],  # inline
        "cycle": Node("loop"),
        "color": Color.RED,
    }
    value["cycle"].next = value["cycle"]  # type: ignore[attr-defined]
    assert hash_arguments(value, typed=True).hex() == GOLDEN


def test_the_module_works_without_numpy_or_pandas() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["numpy"] = None  # any import of them now fails
        sys.modules["pandas"] = None
        from logshelf._hashing import hash_value, freeze, remember
        assert remember(freeze([1, b"x" * 100_000])) == [1, b"x" * 100_000]
        print(hash_value({"a": [1, 2.5, "x"]}).hex())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == h({"a": [1, 2.5, "x"]}).hex()


def test_the_hashing_modules_import_nothing_else_of_logshelf() -> None:
    for name in ("_hashing", "_hash_types", "_hash_arrays"):
        tree = ast.parse((SRC / "logshelf" / f"{name}.py").read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "logshelf"
            for alias in node.names
        } | {
            node.module.split(".")[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("logshelf.")
        }
        assert imported <= {"_hash_types", "_hash_arrays", "errors"}, (name, imported)
