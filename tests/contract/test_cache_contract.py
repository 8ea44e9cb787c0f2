"""logshelf.Cache behaves the same on a directory and on a Redis namespace
(conftest.py runs each test on both)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import logshelf


def test_cache_mapping_and_ttl(store_path: Path) -> None:
    with logshelf.Cache(store_path, ttl=60) as cache:
        cache["a"] = {"x": 1}
        cache.set("b", [1], ttl=0.3, tags=("t",))
        cache.set("c", "forever", ttl=None, tags=("t", "u"))
        assert cache["a"] == {"x": 1} and "b" in cache and len(cache) == 3
        assert sorted(cache) == ["a", "b", "c"]
        time.sleep(0.5)
        assert "b" not in cache and cache.get("b", "gone") == "gone"
        assert sorted(cache) == ["a", "c"]
        del cache["a"]
        with pytest.raises(KeyError):
            del cache["a"]
        with pytest.raises(KeyError):
            cache["a"]
        assert cache.clear(tag="u") == 1 and len(cache) == 0


def test_cache_memoize_hits_and_clear(store_path: Path) -> None:
    calls: list[int] = []
    with logshelf.Cache(store_path) as cache:

        @cache.memoize(ttl=60, tags=("m",))
        def square(x: int) -> int:
            calls.append(x)
            return x * x

        assert [square(3), square(3), square(x=3), square(4)] == [9, 9, 9, 16]
        assert calls == [3, 4]
        info = square.cache_info()
        assert (info.hits, info.misses, info.currsize) == (2, 2, 2)
        assert cache.clear(func=square) == 2
        assert square(3) == 9 and calls == [3, 4, 3]


def test_cache_expire_and_reopen(store_path: Path) -> None:
    with logshelf.Cache(store_path) as cache:
        cache.set("old", 1, ttl=0.2)
        cache.set("kept", 2)
        time.sleep(0.4)
        assert cache.expire() in (0, 1)  # 0 where the server already freed it
    with logshelf.Cache(store_path, flag="r") as cache:
        assert dict(cache.items()) == {"kept": 2}
