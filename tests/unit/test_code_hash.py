"""Code fingerprints for memoization (logshelf._code_hash): edits that cannot
change behaviour keep the digest, edits that can change it, in the function
and in what it calls, and ``diff`` names the dependency that changed.

Each test writes module source into tmp_path, imports it under a unique name,
fingerprints, then writes a changed version under the same name (in another
folder, so the file path differs too) and compares."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from pathlib import Path

from logshelf import _code_hash
from logshelf._code_hash import Fingerprint, diff, fingerprint

SRC = Path(__file__).resolve().parents[2] / "src"


def _name() -> str:
    return f"chm_{uuid.uuid4().hex[:12]}"


def _load(tmp_path: Path, name: str, source: str, version: str = "a") -> types.ModuleType:
    """Import ``source`` as module ``name`` (replacing an earlier version)."""
    folder = tmp_path / version
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _two(tmp_path: Path, old: str, new: str, func: str = "f") -> tuple[Fingerprint, Fingerprint]:
    """Fingerprints of ``func`` in two versions of one module."""
    name = _name()
    first = fingerprint(getattr(_load(tmp_path, name, old, "a"), func))
    second = fingerprint(getattr(_load(tmp_path, name, new, "b"), func))
    return first, second


BASE = """
import math

SCALE = 3

def helper(x):
    return x * SCALE

def f(x, y=2, *, z=1):
    return helper(x) + y - z + math.floor(0.5)
"""


def test_comments_docstrings_blank_lines_and_moving_keep_the_digest(tmp_path: Path) -> None:
    moved = '''
    """A module docstring now."""
    import math

    # a comment


    SCALE = 3



    def f(x, y=2, *, z=1):
        """A docstring the function did not have."""
        # a comment inside
        return helper(x) + y - z + math.floor(0.5)  # trailing comment


    def helper(x):
        """Moved below f."""

        return x * SCALE
    '''
    old, new = _two(tmp_path, BASE, moved)
    assert old.digest == new.digest
    assert old.parts == new.parts


def test_changes_of_code_change_the_digest(tmp_path: Path) -> None:
    body = """
    def f(x, y=2, *, z=1):
        g = lambda a: a + 1
        def inner(b):
            return b * 2
        squares = [i * i for i in range(x)]
        return g(x) + inner(y) + len(squares) - z + (x in {"a", "b"})
    """
    edits = {
        "operator": ("g(x) + inner(y)", "g(x) - inner(y)"),
        "constant": ("b * 2", "b * 3"),
        "default": ("y=2", "y=5"),
        "keyword default": ("z=1", "z=0"),
        "called name": ("len(squares)", "sum(squares)"),
        "lambda body": ("a + 1", "a + 2"),
        "comprehension body": ("i * i", "i + i"),
        "set constant": ('{"a", "b"}', '{"a", "c"}'),
        "parameter name": (
            "def inner(b):\n            return b * 2",
            "def inner(c):\n            return c * 2",
        ),
    }
    for what, (before, after) in edits.items():
        assert before in body, what
        old, new = _two(tmp_path, body, body.replace(before, after))
        assert old.digest != new.digest, what
        assert [line.rsplit(".", 1)[1] for line in diff(old.parts, new.parts)] == ["f"], what


def test_a_changed_helper_in_the_same_module_is_named(tmp_path: Path) -> None:
    old, new = _two(tmp_path, BASE, BASE.replace("x * SCALE", "x * SCALE + 1"))
    assert old.digest != new.digest
    lines = diff(old.parts, new.parts)
    assert len(lines) == 1 and lines[0].startswith("changed: chm_")
    assert lines[0].endswith(".helper")


def test_a_changed_helper_in_another_user_module_is_named(tmp_path: Path) -> None:
    helpers = _name()
    main = _name()
    helper_v1 = "def scale(x):\n    return x * 2\n\ndef unused():\n    return 0\n"
    uses = f"""
    import {helpers}
    from {helpers} import scale as imported_scale

    def f(x):
        return {helpers}.scale(x) + imported_scale(x)

    def g(x):
        import {helpers} as local
        return local.scale(x)
    """
    _load(tmp_path, helpers, helper_v1, "a")
    module = _load(tmp_path, main, uses, "a")
    old_f, old_g = fingerprint(module.f), fingerprint(module.g)
    assert f"{helpers}.unused" not in old_f.parts  # only what is read is followed

    _load(tmp_path, helpers, helper_v1.replace("x * 2", "x * 4"), "b")
    module = _load(tmp_path, main, uses, "b")
    new_f, new_g = fingerprint(module.f), fingerprint(module.g)
    assert diff(old_f.parts, new_f.parts) == [f"changed: {helpers}.scale"]
    assert diff(old_g.parts, new_g.parts) == [f"changed: {helpers}.scale"]


def test_a_changed_module_constant_is_named(tmp_path: Path) -> None:
    old, new = _two(tmp_path, BASE, BASE.replace("SCALE = 3", "SCALE = 4"))
    assert old.digest != new.digest
    [line] = diff(old.parts, new.parts)
    assert line.startswith("changed: ") and line.endswith(".SCALE")


def test_containers_constants_and_dispatch_tables_are_hashed_by_value(tmp_path: Path) -> None:
    source = """
    TABLE = {"k": [1, 2.5, None], "s": frozenset({"x", "y"})}

    def double(x):
        return 2 * x

    DISPATCH = {"double": double}

    def f(key, x):
        return DISPATCH[key](x) + len(TABLE)
    """
    old, new = _two(tmp_path, source, source.replace("2.5", "2.75"))
    assert [line.rsplit(".", 1)[1] for line in diff(old.parts, new.parts)] == ["TABLE"]
    old, new = _two(tmp_path, source, source.replace("2 * x", "3 * x"))
    assert [line.rsplit(".", 1)[1] for line in diff(old.parts, new.parts)] == ["double"]


def test_recursion_and_mutual_recursion_terminate(tmp_path: Path) -> None:
    source = """
    def even(n):
        return True if n == 0 else odd(n - 1)

    def odd(n):
        return False if n == 0 else even(n - 1)

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)
    """
    module = _load(tmp_path, _name(), source)
    parts = fingerprint(module.even).parts
    assert {p.rsplit(".", 1)[1] for p in parts if p.startswith("chm_")} == {"even", "odd"}
    assert len(fingerprint(module.fact).parts) == 2  # python, fact
    old, new = _two(tmp_path, source, source.replace("odd(n - 1)", "odd(n - 2)"), "odd")
    assert [line.rsplit(".", 1)[1] for line in diff(old.parts, new.parts)] == ["even"]


def test_mutually_importing_modules_terminate(tmp_path: Path) -> None:
    a, b = _name(), _name()
    # Imports in the function bodies, so that each loads without the other.
    _load(tmp_path, a, f"def f(n):\n    import {b}\n    return {b}.g(n - 1) if n else 0\n")
    _load(tmp_path, b, f"def g(n):\n    import {a}\n    return {a}.f(n - 1) if n else 1\n")
    parts = fingerprint(sys.modules[a].f).parts
    assert f"{a}.f" in parts and f"{b}.g" in parts


def test_a_third_party_dependency_counts_by_version(tmp_path: Path) -> None:
    source = """
    import numpy as np
    from numpy import mean

    def f(x):
        return np.sum(x) + mean(x)
    """
    parts = fingerprint(_load(tmp_path, _name(), source).f).parts
    assert parts["numpy"] == f"numpy=={importlib.metadata.version('numpy')}"
    assert not any(name.startswith("numpy.") for name in parts)  # not walked into


def test_standard_library_and_builtins_count_by_name_only(tmp_path: Path) -> None:
    source = """
    import json
    from os.path import join

    def f(x):
        return len(json.dumps(x)) + len(join("a", "b"))
    """
    parts = fingerprint(_load(tmp_path, _name(), source).f).parts
    assert parts["json"] == "stdlib"
    assert [v for k, v in parts.items() if k.endswith(".join")] == ["stdlib"]
    assert not any("len" in name for name in parts)
    assert (
        parts["python"] == f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
    )


def test_the_digest_is_the_same_in_other_processes_and_hash_seeds(tmp_path: Path) -> None:
    name = _name()
    source = """
    WORDS = {"alpha", "beta", "gamma", "delta"}
    TABLE = {"x": frozenset({"p", "q", "r"}), "y": (1.5, b"z")}

    def f(word):
        return word in {"one", "two", "three", "four"} and word in WORDS and bool(TABLE)
    """
    _load(tmp_path, name, source)
    script = tmp_path / "print_digest.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'a')!r})\n"
        "from logshelf._code_hash import fingerprint\n"
        f"import {name}\n"
        f"print(fingerprint({name}.f).digest.hex())\n"
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)}
        run = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
        )
        digests.add(run.stdout.strip())
    assert digests == {fingerprint(sys.modules[name].f).digest.hex()}


def test_methods_static_class_async_lambda_and_partial(tmp_path: Path) -> None:
    source = """
    import functools

    class Model:
        RATE = 2

        def predict(self, x):
            return self.scale(x) + 1

        def scale(self, x):
            return x * self.RATE

        @staticmethod
        def static(x):
            return x + 1

        @classmethod
        def build(cls):
            return cls()

    async def fetch(x):
        return x + 1

    square = lambda x: x * x

    def power(x, n):
        return x ** n

    cube = functools.partial(power, n=3)
    """
    name = _name()
    module = _load(tmp_path, name, source)
    predict = fingerprint(module.Model().predict)
    assert predict == fingerprint(module.Model.predict)
    assert f"{name}.Model" in predict.parts  # the owner class: self.scale is in it
    assert fingerprint(module.Model.static).parts[f"{name}.Model.static"]
    assert fingerprint(module.Model.build).parts[f"{name}.Model.build"]
    assert fingerprint(vars(module.Model)["static"]) == fingerprint(module.Model.static)
    assert asyncio.run(module.fetch(1)) == 2
    assert f"{name}.fetch" in fingerprint(module.fetch).parts
    assert f"{name}.<lambda>" in fingerprint(module.square).parts
    assert f"{name}.power" in fingerprint(module.cube).parts

    changes = {
        "Model.predict": ("x * self.RATE", "x * self.RATE + 0"),  # a method called on self
        "fetch": ("return x + 1\n\n    square", "return x + 2\n\n    square"),
        "square": ("x * x", "x * x * x"),
        "cube": ("n=3", "n=4"),
    }
    for func, (before, after) in changes.items():
        assert before in source, func
        other = _name()
        old_module = _load(tmp_path, other, source, "p")
        old = fingerprint(functools.reduce(getattr, func.split("."), old_module))
        new_module = _load(tmp_path, other, source.replace(before, after), "q")
        new = fingerprint(functools.reduce(getattr, func.split("."), new_module))
        assert old.digest != new.digest, func
    assert fingerprint(module.Model).parts[f"{name}.Model"]  # a class itself


def test_a_changed_method_of_a_used_class_is_named(tmp_path: Path) -> None:
    source = """
    class Scaler:
        FACTOR = 2

        def apply(self, x):
            return x * self.FACTOR

    def f(x):
        return Scaler().apply(x)
    """
    for before, after in (("x * self.FACTOR", "x + self.FACTOR"), ("FACTOR = 2", "FACTOR = 3")):
        old, new = _two(tmp_path, source, source.replace(before, after))
        [line] = diff(old.parts, new.parts)
        assert line.endswith(".Scaler"), line


def test_closure_values_and_wrapped_functions_count(tmp_path: Path) -> None:
    source = """
    import functools

    def make(n):
        def add(x):
            return x + n
        return add

    add2 = make(2)

    def target(x):
        return x - 1

    def logged(func):
        @functools.wraps(func)
        def wrapper(*args):
            return func(*args)
        return wrapper

    wrapped = logged(target)
    """
    old, new = _two(tmp_path, source, source.replace("make(2)", "make(3)"), "add2")
    assert old.digest != new.digest
    old, new = _two(tmp_path, source, source.replace("x - 1", "x - 2"), "wrapped")
    assert [line.rsplit(".", 1)[1] for line in diff(old.parts, new.parts)] == ["target"]


def _run_main(tmp_path: Path, source: str) -> str:
    """The digest of f in a script run as __main__ (a different file each time)."""
    script = tmp_path / f"{_name()}.py"
    script.write_text(
        textwrap.dedent(source)
        + "\nfrom logshelf._code_hash import fingerprint\nprint(fingerprint(f).digest.hex())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
    )
    return run.stdout.strip()


def test_functions_of_a_script_run_as_main(tmp_path: Path) -> None:
    base = _run_main(tmp_path, BASE)
    assert (
        _run_main(tmp_path, "# comment\n\n" + BASE.replace("SCALE = 3", "SCALE = 3  # !")) == base
    )
    assert _run_main(tmp_path, BASE.replace("x * SCALE", "x // SCALE")) != base


def test_functions_of_a_notebook_like_namespace(tmp_path: Path) -> None:
    def cell_run(source: str) -> Fingerprint:
        namespace: dict[str, object] = {"__name__": "__main__"}
        exec(compile(textwrap.dedent(source), "<ipython-input-3-abcdef>", "exec"), namespace)
        func = namespace["f"]
        assert isinstance(func, types.FunctionType)
        return fingerprint(func)

    old = cell_run(BASE)
    assert cell_run("\n\n# moved\n" + BASE) == old
    new = cell_run(BASE.replace("x * SCALE", "x * SCALE * 2"))
    assert diff(old.parts, new.parts) == ["changed: __main__.helper"]


def test_a_fingerprint_is_computed_once_and_ignores_specialization(tmp_path: Path) -> None:
    name = _name()
    source = (
        "def f(x):\n    total = 0\n    for i in range(x):\n        total += i\n    return total\n"
    )
    module = _load(tmp_path, name, source, "a")
    first = fingerprint(module.f)
    assert fingerprint(module.f) is first  # served from the cache
    for _ in range(2000):  # 3.11+ specializes (quickens) hot code in place
        module.f(10)
    _code_hash.clear_cache()
    assert fingerprint(module.f) == first
    fresh = _load(tmp_path, name, source, "b")  # never called
    assert fingerprint(fresh.f) == first

    start = time.perf_counter()
    for _ in range(10_000):
        fingerprint(module.f)
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 20e-6  # a dict lookup (about 0.1 us), with a wide margin

    module.f.__code__ = (lambda x: x).__code__  # a new __code__ is noticed
    assert fingerprint(module.f) != first


def test_values_that_cannot_be_hashed_are_opaque_not_errors(tmp_path: Path) -> None:
    source = """
    import threading

    LOCK = threading.Lock()

    class Config:
        def __init__(self):
            self.level = 1

    CONFIG = Config()

    def f(x):
        with LOCK:
            return x + CONFIG.level
    """
    name = _name()
    module = _load(tmp_path, name, source)
    parts = fingerprint(module.f, value_hasher=_refuse).parts
    assert parts[f"{name}.LOCK"] == _digest_of(b"opaque:_thread.lock")
    assert f"{name}.Config" in parts  # an instance's class is followed: its methods run

    seen: list[object] = []

    def hasher(value: object) -> bytes:
        seen.append(value)
        return b"config-v1"

    assert fingerprint(module.f, value_hasher=hasher).parts[f"{name}.CONFIG"]
    assert module.CONFIG in seen


def _refuse(value: object) -> bytes:
    raise TypeError("no")


def _digest_of(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data, digest_size=8).hexdigest()


def test_the_walk_is_bounded(tmp_path: Path) -> None:
    chain = "\n".join(f"def f{i}(x):\n    return f{i + 1}(x)\n" for i in range(20))
    module = _load(tmp_path, _name(), chain + "\ndef f20(x):\n    return x\n")
    saved = _code_hash.MAX_DEPTH
    _code_hash.MAX_DEPTH = 5
    try:
        parts = fingerprint(module.f0).parts
    finally:
        _code_hash.MAX_DEPTH = saved
    assert parts["<truncated>"] == "beyond depth 5"
    assert len(parts) == 1 + 6 + 1  # python, f0..f5, the marker
    _code_hash.clear_cache()
    assert "<truncated>" not in fingerprint(module.f0).parts


def test_diff_lists_changed_added_and_removed() -> None:
    old = {"python": "cpython-3.12", "m.f": "0" * 16, "m.g": "1" * 16, "numpy": "numpy==1.26.0"}
    new = {"python": "cpython-3.13", "m.f": "2" * 16, "m.h": "3" * 16, "numpy": "numpy==2.1.0"}
    assert diff(old, new) == [
        "changed: m.f",
        "changed: numpy (numpy==1.26.0 -> numpy==2.1.0)",
        "changed: python (cpython-3.12 -> cpython-3.13)",
        "added: m.h",
        "removed: m.g",
    ]
    assert diff(old, old) == []


def test_fingerprints_are_safe_to_compute_from_threads(tmp_path: Path) -> None:
    module = _load(tmp_path, _name(), BASE)
    results: list[bytes] = []

    def work() -> None:
        results.append(fingerprint(functools.partial(module.f, 1)).digest)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4


def test_a_wrapper_stands_for_the_function_it_wraps() -> None:
    """A functools.wraps wrapper's own state (a memoizer's counters) is no part of
    the fingerprint: it would change the digest at every call."""
    state = {"calls": 0}

    def inner(x):
        return x + 1

    @functools.wraps(inner)
    def wrapper(*args):
        state["calls"] += 1
        return inner(*args)

    def caller(x):
        return wrapper(x)

    _code_hash.clear_cache()
    first = fingerprint(caller)
    wrapper(1)
    _code_hash.clear_cache()
    assert fingerprint(caller).digest == first.digest
