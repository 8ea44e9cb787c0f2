"""@cache.memoize: keys, code tracking, expiry, stale values, failures, inspection."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from _cache_clock import Clock

import logshelf
from logshelf.cache import Cache


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "cache") as c:
        yield c


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def test_spellings_of_one_call_are_one_entry(cache):
    calls = []

    @cache.memoize()
    def f(x, y=2, *, z=3):
        calls.append((x, y, z))
        return x + y + z

    assert f(1) == f(1, 2) == f(1, y=2) == f(x=1, y=2, z=3) == f(y=2, x=1) == 6
    assert calls == [(1, 2, 3)]
    assert f(1, 3) == 7
    assert len(calls) == 2
    info = f.cache_info()
    assert (info.hits, info.misses, info.currsize) == (4, 2, 2)
    assert info.maxsize is None and info.bytes > 0 and info.waits == 0
    assert f.__wrapped__.__name__ == "f" and f.__name__ == "f"


def test_bad_calls_raise_the_functions_own_type_error(cache):
    @cache.memoize()
    def f(x, y=2):
        return x

    with pytest.raises(TypeError):
        f()
    with pytest.raises(TypeError):
        f(1, 2, 3)
    with pytest.raises(TypeError):
        f(1, q=1)
    with pytest.raises(TypeError):
        f(1, x=1)


def test_varargs_and_positional_only(cache):
    calls = []

    @cache.memoize()
    def f(a, /, *rest, **kw):
        calls.append(1)
        return (a, rest, kw)

    assert f(1, 2, k=3) == (1, (2,), {"k": 3})
    assert f(1, 2, k=3) == (1, (2,), {"k": 3})
    assert f(1, 2, k=4)[2] == {"k": 4}
    assert len(calls) == 2


def test_ignore_leaves_arguments_out(cache):
    calls = []

    @cache.memoize(ignore=("verbose",))
    def f(x, verbose=False):
        calls.append(x)
        return x

    f(1, verbose=True)
    f(1, verbose=False)
    assert calls == [1]
    with pytest.raises(ValueError, match="ignore names no parameter"):
        cache.memoize(ignore=("nope",))(lambda x: x)


def test_a_raising_function_caches_nothing(cache):
    calls = []

    @cache.memoize()
    def f(x):
        calls.append(x)
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            f(1)
    assert calls == [1, 1]
    assert f.cache_info().currsize == 0


def test_an_unpicklable_result_raises_and_stores_nothing(cache):
    @cache.memoize()
    def f():
        return threading.Lock()

    with pytest.raises(TypeError, match=r"cannot cache the result of .*f\(\).*lock"):
        f()
    assert [k for k in set(cache.engine.keys()) if not k.startswith("\x00")] == []


def test_ttl_expires_and_recomputes(cache, clock):
    calls = []

    @cache.memoize(ttl=10)
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == 1 and f(1) == 1
    clock.advance(11)
    assert "expired" in f.explain(1)
    assert f(1) == 2
    assert calls == [1, 1]


def test_stale_value_is_served_while_one_caller_refreshes(cache, clock):
    calls = []

    @cache.memoize(ttl=10, stale_ttl=100)
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == 1
    clock.advance(20)
    assert "stale" in f.explain(1)
    # Someone else is refreshing (holds the flight lock): the stale value.
    ticket = cache.flights.acquire(f.cache_key(1))
    try:
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(f(1)))
        t.start()
        t.join(5)
        assert result == [1] and len(calls) == 1
    finally:
        cache.flights.release(ticket)
    # Nobody is: this caller refreshes it.
    assert f(1) == 2
    assert f(1) == 2
    clock.advance(200)  # past the stale window too: a plain miss
    assert f(1) == 3
    with pytest.raises(ValueError, match="stale_ttl needs a ttl"):
        cache.memoize(stale_ttl=5)


def test_async_functions(cache):
    calls = []

    @cache.memoize()
    async def f(x):
        calls.append(x)
        await asyncio.sleep(0)
        return x * 2

    async def main():
        return [await f(2), await f(2), await f(x=2)]

    assert asyncio.run(main()) == [4, 4, 4]
    assert calls == [2]
    assert asyncio.iscoroutinefunction(f)


class Model:
    def __init__(self, scale):
        self.scale = scale
        self.calls = 0

    def predict(self, x):
        self.calls += 1
        return x * self.scale


def test_methods_key_on_the_state_of_self(cache):
    Model.predict_cached = cache.memoize(ignore=())(Model.predict)
    a, b = Model(2), Model(3)
    assert a.predict_cached(5) == 10
    assert b.predict_cached(5) == 15
    # A new object with the same state hits (the state is what matters)...
    assert Model(2).predict_cached(5) == 10
    assert a.calls == 1 and b.calls == 1


def test_unhashable_argument_names_the_argument(cache):
    @cache.memoize()
    def f(model):
        return 1

    with pytest.raises(TypeError, match="model"):
        f(threading.Lock())


def test_cache_clear_and_other_functions_untouched(cache):
    @cache.memoize()
    def f(x):
        return x

    @cache.memoize()
    def g(x):
        return x

    f(1), f(2), g(1)
    assert f.cache_clear() == 2
    assert f.cache_info().currsize == 0 and g.cache_info().currsize == 1


def test_explain_new_arguments_and_code_version(cache):
    @cache.memoize(version=1)
    def f(x):
        return x

    assert "nothing of" in f.explain(1)
    f(1)
    assert f.explain(1).startswith("hit")
    assert "new arguments" in f.explain(2)

    def f(x):
        return x

    f2 = cache.memoize(version=2)(f)
    message = f2.explain(1)
    assert "code changed" in message and "(version)" in message


def _write_module(directory, name, body):
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_code_change_in_a_helper_misses_and_revert_hits(cache, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"cached_mod_{uuid.uuid4().hex[:8]}"
    source = """
        import logshelf
        CALLS = []

        def helper(x):
            return x + {delta}

        def compute(x):
            CALLS.append(x)
            return helper(x)
    """

    def load(delta, comment=""):
        _write_module(tmp_path, name, comment + textwrap.dedent(source.format(delta=delta)))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        mod = importlib.import_module(name)
        return mod, cache.memoize()(mod.compute)

    mod, f = load(1)
    assert f(1) == 2 and mod.CALLS == [1]
    mod, f = load(1, comment="# a comment moves every line\n\n\n")
    assert f(1) == 2 and mod.CALLS == []  # same code: a hit
    mod, f = load(5)
    assert "helper" in f.explain(1)
    assert f(1) == 6 and mod.CALLS == [1]
    mod, f = load(1)
    assert f(1) == 2 and mod.CALLS == []  # reverted: the old entry hits


def test_keys_are_stable_across_processes(cache, tmp_path):
    script = textwrap.dedent(
        f"""
        import logshelf
        cache = logshelf.Cache({str(tmp_path / "cache")!r})
        @cache.memoize()
        def stable(a, b=None):
            return a
        print(stable.cache_key({{"x": {{1, 2, 3}}, "y": ("a", 2.5)}}, b=frozenset("abc")))
        """
    )
    keys = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        keys.add(out.stdout.strip())
    assert len(keys) == 1


def test_module_level_memoize_uses_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    @logshelf.memoize
    def f(x):
        calls.append(x)
        return x

    @logshelf.memoize(ttl=60)
    def g(x):
        return x

    assert f(1) == 1 and f(1) == 1 and g(2) == 2
    assert calls == [1]
    assert (tmp_path / ".logshelf-cache" / "MANIFEST").exists()
    assert f.cache.max_bytes is None  # never a silent size bound


def test_corrupt_entry_is_a_miss_and_is_overwritten(cache, caplog):
    calls = []

    @cache.memoize()
    def f(x):
        calls.append(x)
        return x

    f(1)
    key = f.cache_key(1)
    cache.engine.put(key, 0, b"garbage", 0)
    with caplog.at_level(logging.WARNING, logger="logshelf"):
        assert f(1) == 1
        assert f(1) == 1
    assert calls == [1, 1]
    assert sum(key in r.getMessage() for r in caplog.records) == 1


def test_threads_compute_a_cold_key_once(cache):
    calls = []
    gate = threading.Barrier(8)

    @cache.memoize()
    def slow(x):
        calls.append(x)
        threading.Event().wait(0.2)
        return x

    results = []

    def run():
        gate.wait()
        results.append(slow(7))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [7] * 8
    assert calls == [7]
    assert slow.cache_info().waits == 7


def test_recursive_function_does_not_deadlock(cache):
    @cache.memoize()
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(30) == 832040


def test_arrays_come_back_read_only_without_a_copy_and_are_not_rehashed(cache, monkeypatch):
    import numpy as np

    from logshelf import _hash_types

    hashed = []
    real = _hash_types.tree_digest

    def counting(view):
        hashed.append(view.nbytes)
        return real(view)

    monkeypatch.setattr(_hash_types, "tree_digest", counting)

    @cache.memoize()
    def make(n):
        return {"a": np.arange(n, dtype=np.float64), "small": [1, 2]}

    @cache.memoize()
    def total(arr):
        return float(arr.sum())

    n = 1 << 16  # 512 KiB: hashed as a tree of chunks
    first = make(n)
    assert first["a"].flags.writeable  # the function's own object, as computed
    again = make(n)
    arr = again["a"]
    assert np.array_equal(arr, np.arange(n, dtype=np.float64))
    assert not arr.flags.writeable  # a view of the stored bytes
    with pytest.raises(ValueError):
        arr.flags.writeable = True
    assert total(arr) == float(np.arange(n).sum())
    assert total(arr) == float(np.arange(n).sum())
    assert total.cache_info().hits == 1
    assert hashed.count(arr.nbytes) == 1  # the second call reused the digest
    # A writable array with the same content: the same key, hashed afresh.
    writable = arr.copy()
    assert total(writable) == float(np.arange(n).sum())
    assert hashed.count(arr.nbytes) == 2
    assert total.cache_info().hits == 2


def test_cache_mapping_round_trips_arrays_and_frames(cache):
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"x": np.arange(1000), "y": np.linspace(0, 1, 1000)})
    cache["frame"] = frame
    cache["arr"] = np.ones((100, 100), dtype=np.int32)
    cache["buf"] = bytearray(b"abc" * 1000)
    pd.testing.assert_frame_equal(cache["frame"], frame)
    assert cache["arr"].shape == (100, 100) and int(cache["arr"].sum()) == 10_000
    buf = cache["buf"]
    assert isinstance(buf, bytearray) and buf == bytearray(b"abc" * 1000)
    buf[0] = 0  # a bytearray stays mutable: the loader copies it


def test_typed_separates_equal_values_of_other_types(cache):
    calls = []

    @cache.memoize()
    def loose(x):
        calls.append(x)
        return x

    @cache.memoize(typed=True)
    def strict(x):
        calls.append(x)
        return x

    loose(1), loose(1.0), loose(True)
    assert len(calls) == 1
    strict(1), strict(1.0), strict(True)
    assert len(calls) == 4


def test_a_waiter_computes_when_the_holder_raises(cache):
    calls = []
    gate = threading.Barrier(2)

    @cache.memoize()
    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            threading.Event().wait(0.2)
            raise RuntimeError("first caller fails")
        return "second"

    results = []

    def run():
        gate.wait()
        try:
            results.append(flaky(1))
        except RuntimeError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["first caller fails", "second"]
    assert len(calls) == 2
    assert flaky(1) == "second"


def test_a_forked_child_computes_while_the_parent_holds_the_key(cache):
    """Flight state is per process: a child forked while a parent thread holds a
    key's lock does not wait for it (it waits on the kernel lock, which the
    parent really holds), and computes once the parent lets go."""

    @cache.memoize()
    def square(x):
        return x * x

    ticket = cache.flights.acquire(square.cache_key(3))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute and report, whatever happens
        code = 1
        try:
            os.write(write_end, str(square(3)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        time.sleep(0.3)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # blocked on the parent's record lock
        cache.flights.release(ticket)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(read_end, 100) == b"9"
    finally:
        os.close(read_end)
    assert square(3) == 9 and square.cache_info().misses == 0
