"""logshelf.Cache: the mapping, expiry, tags, size bound and eviction."""

from __future__ import annotations

import logging
import os
import pickle
import threading

import pytest
from _cache_clock import Clock

import logshelf
from logshelf import _cache_format as cfmt
from logshelf.cache import Cache


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "cache") as c:
        yield c


def test_mapping_basics(cache):
    cache["a"] = {"x": 1}
    cache.set("b", [1, 2])
    assert cache["a"] == {"x": 1}
    assert cache.get("b") == [1, 2]
    assert cache.get("missing", "dflt") == "dflt"
    assert "a" in cache and "missing" not in cache and 3 not in cache
    assert sorted(cache) == ["a", "b"] and len(cache) == 2
    del cache["a"]
    with pytest.raises(KeyError):
        cache["a"]
    with pytest.raises(KeyError):
        del cache["a"]
    assert dict(cache.items()) == {"b": [1, 2]}
    assert isinstance(cache, logshelf.Cache)
    with pytest.raises(TypeError, match="keys must be str"):
        cache[1] = 2


def test_values_persist_and_are_visible_to_another_handle(tmp_path):
    with Cache(tmp_path / "c") as one, Cache(tmp_path / "c") as two:
        one["k"] = "v"
        assert two["k"] == "v"
    with Cache(tmp_path / "c", flag="r") as again:
        assert again["k"] == "v"


def test_expired_entries_are_invisible_to_every_method(cache, clock):
    cache.set("short", 1, ttl=10)
    cache.set("long", 2, ttl=100)
    cache["forever"] = 3
    clock.advance(11)
    assert cache.get("short") is None
    assert "short" not in cache
    with pytest.raises(KeyError):
        cache["short"]
    assert sorted(cache) == ["forever", "long"]
    assert len(cache) == 2
    assert dict(cache.items()) == {"forever": 3, "long": 2}
    with pytest.raises(KeyError):
        del cache["short"]
    # ... and del removed it for good, expired or not.
    assert "short" not in set(cache.engine.keys())


def test_default_ttl_and_override(tmp_path, clock):
    with Cache(tmp_path / "c", ttl=5) as cache:
        cache["a"] = 1
        cache.set("b", 2, ttl=None)
        cache.set("c", 3, ttl=50)
        clock.advance(6)
        assert sorted(cache) == ["b", "c"]


def test_expire_removes_only_dead_entries(cache, clock):
    cache.set("dead", 1, ttl=1)
    cache.set("alive", 2, ttl=100)
    cache["forever"] = 3
    clock.advance(2)
    assert cache.expire() == 1
    assert sorted(set(cache.engine.keys())) == ["alive", "forever"]
    assert cache.expire() == 0


def test_clear_by_tag_function_and_age(cache, clock):
    cache.set("t1", 1, tags=("run-3",))
    cache.set("t2", 2, tags=("run-3", "big"))
    cache.set("t3", 3, tags=("run-4",))
    clock.advance(100)
    cache["new"] = 4
    assert cache.clear(tag="run-3") == 2
    assert sorted(cache) == ["new", "t3"]
    assert cache.clear(older_than=50) == 1
    assert list(cache) == ["new"]

    @cache.memoize()
    def square(x):
        return x * x

    square(2)
    square(3)
    assert cache.clear(func=square) == 2
    assert list(cache) == ["new"]
    assert cache.clear() == 2  # "new" and the function's code manifest
    assert len(cache.engine) == 0


def test_bad_arguments_are_named(tmp_path, cache):
    with pytest.raises(ValueError, match="policy"):
        Cache(tmp_path / "x", policy="fifo")
    with pytest.raises(ValueError, match="max_bytes must be None"):
        Cache(tmp_path / "x", max_bytes=10_000, policy="none")
    with pytest.raises(ValueError, match="max_bytes"):
        Cache(tmp_path / "x", max_bytes=0)
    with pytest.raises(ValueError, match="ttl"):
        Cache(tmp_path / "x", ttl=-1)
    with pytest.raises(ValueError, match="ttl"):
        cache.set("k", 1, ttl=float("nan"))
    with pytest.raises(TypeError, match="tags"):
        cache.set("k", 1, tags="run-3")
    with pytest.raises(ValueError, match="older_than"):
        cache.clear(older_than=0)
    with pytest.raises(ValueError, match="to_bytes"):
        cache.evict()
    assert not os.path.exists(tmp_path / "x")


def test_unpicklable_value_writes_nothing(cache):
    with pytest.raises((TypeError, pickle.PicklingError)):
        cache["lock"] = threading.Lock()
    assert len(cache.engine) == 0


def test_entry_larger_than_half_the_bound_is_refused(tmp_path):
    with Cache(tmp_path / "c", max_bytes=100_000) as cache:
        with pytest.raises(ValueError, match="more than half of max_bytes"):
            cache["big"] = b"x" * 60_000
        assert "big" not in set(cache.engine.keys())


def test_compression_round_trips_and_shrinks(tmp_path):
    value = "abc" * 10_000
    with Cache(tmp_path / "plain") as plain, Cache(tmp_path / "lz4", compression="lz4") as small:
        plain["v"] = value
        small["v"] = value
        assert small["v"] == value
        assert len(small.engine.get("v")) < len(plain.engine.get("v")) // 10


def test_a_hit_never_writes(tmp_path):
    """Reads record their time in the shared access map, never in the log."""
    with Cache(tmp_path / "c", max_bytes=1 << 20) as cache:
        cache["k"] = "v"
        before = cache.engine.stats()
        sizes = {f: os.path.getsize(tmp_path / "c" / f) for f in os.listdir(tmp_path / "c")}
        for _ in range(100):
            assert cache["k"] == "v"
        assert cache.engine.stats() == before
        after = {f: os.path.getsize(tmp_path / "c" / f) for f in os.listdir(tmp_path / "c")}
        assert after == sizes
        assert cache._access.last("k") > 0


def test_damaged_or_foreign_entry_is_a_miss_reported_once(tmp_path, caplog):
    path = tmp_path / "c"
    with logshelf.open(path) as db:  # a plain store value: not a cache entry
        db["foreign"] = "hello"
    with Cache(path) as cache, caplog.at_level(logging.WARNING, logger="logshelf"):
        assert cache.get("foreign") is None
        assert cache.get("foreign") is None
        assert "foreign" not in cache
        reports = [r for r in caplog.records if "foreign" in r.getMessage()]
        assert len(reports) == 1
        # A write replaces it with a good entry.
        cache["foreign"] = 1
        assert cache["foreign"] == 1


def test_unloadable_payload_is_a_miss(cache, caplog):
    entry = cfmt.encode_entry(b"not a pickle", stored_at=1.0)
    cache.engine.put("bad", 0, entry, 0)
    with caplog.at_level(logging.WARNING, logger="logshelf"):
        assert cache.get("bad", "miss") == "miss"
    assert any("bad" in r.getMessage() for r in caplog.records)


def test_entry_format_round_trip():
    data = cfmt.encode_entry(
        b"payload",
        codec=1,
        rawlen=99,
        stored_at=12.5,
        expires_at=20.0,
        keep_until=30.0,
        cost=1.5,
        tags=("a", "bé"),
        func="mod.f",
    )
    entry = cfmt.decode_entry(data, "k")
    assert entry[:9] == (1, 0, 12.5, 20.0, 30.0, 1.5, 99, ("a", "bé"), "mod.f")
    assert bytes(entry.payload) == b"payload"
    head = cfmt.peek_entry(data)
    assert head == cfmt.Head(1, 0, len(data) - 7, 12.5, 20.0, 30.0, 1.5, 99)
    assert cfmt.peek_entry(b"LSC\x02" + data[4:]) is None
    with pytest.raises(logshelf.CorruptionError, match="not a cache entry"):
        cfmt.decode_entry(b"xx", "k")
    with pytest.raises(ValueError, match="tag"):
        cfmt.encode_entry(b"", stored_at=0, tags=("x" * 70_000,))


# -- the size bound ---------------------------------------------------------------


def _fill(cache: Cache, n: int, size: int = 1000, start: int = 0) -> None:
    for i in range(start, start + n):
        cache[f"k{i:05d}"] = os.urandom(size)


def test_store_stays_under_the_bound_after_every_write(tmp_path):
    bound = 200_000
    with Cache(tmp_path / "c", max_bytes=bound) as cache:
        segment = cache.engine.options.max_segment_size
        for i in range(1000):
            cache[f"k{i}"] = os.urandom(900)
            assert cache.engine.stats()["segment_bytes"] <= bound + segment
        assert cache.stats()["evicted"] > 700
        assert 100 < len(cache) < 250
        # The newest entries survived.
        assert "k999" in cache and "k998" in cache


def test_lru_keeps_what_is_read(tmp_path, clock):
    """Entries read while newer ones pour in outlive older unread ones, and
    entries read once long ago go like any other (least recently *used*)."""
    with Cache(tmp_path / "c", max_bytes=300_000, policy="lru") as cache:
        _fill(cache, 100)
        hot = [f"k{i:05d}" for i in range(0, 100, 10)]
        once = "k00005"
        clock.advance(1)
        assert cache[once] is not None
        for start in range(100, 500, 20):
            clock.advance(1)
            for key in hot:
                assert cache[key] is not None
            _fill(cache, 20, start=start)
        survivors = set(cache)
        assert set(hot) <= survivors
        assert once not in survivors
        cold_old = {f"k{i:05d}" for i in range(100)} - set(hot)
        assert not cold_old & survivors
        assert cache.stats()["evicted"] > 200


def test_lrs_evicts_oldest_even_when_read(tmp_path, clock):
    with Cache(tmp_path / "c", max_bytes=300_000, policy="lrs") as cache:
        _fill(cache, 100)
        clock.advance(10)
        for i in range(0, 100, 10):
            assert cache[f"k{i:05d}"] is not None
        _fill(cache, 400, start=100)
        assert not {f"k{i:05d}" for i in range(100)} & set(cache)


def test_lru_makes_progress_when_everything_was_read(tmp_path, clock):
    with Cache(tmp_path / "c", max_bytes=200_000) as cache:
        _fill(cache, 150)
        clock.advance(5)
        for key in list(cache):
            cache[key]
        clock.advance(5)
        reclaimed = cache.evict(to_bytes=50_000)
        assert reclaimed > 0
        segment = cache.engine.options.max_segment_size
        assert cache.engine.stats()["segment_bytes"] <= 50_000 + segment


def test_eviction_drops_expired_first(tmp_path, clock):
    with Cache(tmp_path / "c", max_bytes=10**9) as cache:
        for i in range(50):
            cache.set(f"e{i}", os.urandom(1000), ttl=1)
        cache["keep"] = 1
        cache._access.touch("keep")
        clock.advance(5)
        cache.evict(to_bytes=1)
        assert list(cache) == [] or list(cache) == ["keep"]
        assert not [k for k in set(cache.engine.keys()) if k.startswith("e")]


def test_policy_none_never_evicts_but_drops_expired(tmp_path, clock):
    with Cache(tmp_path / "c", policy="none") as cache:
        cache.set("dead", 1, ttl=1)
        _fill(cache, 20)
        clock.advance(2)
        cache.evict(to_bytes=1)
        assert len(cache) == 20
        assert "dead" not in set(cache.engine.keys())


def test_concurrent_handle_sees_eviction(tmp_path):
    with Cache(tmp_path / "c", max_bytes=100_000) as writer, Cache(tmp_path / "c") as reader:
        _fill(writer, 30)
        assert reader["k00000"] is not None
        _fill(writer, 100, start=30)
        assert reader.get("k00001") is None  # evicted, never read
        assert reader["k00129"] == writer["k00129"]


def test_read_only_cache_reads_and_refuses_writes(tmp_path):
    with Cache(tmp_path / "c") as cache:
        cache["a"] = 1
    with Cache(tmp_path / "c", flag="r") as ro:
        assert ro["a"] == 1
        with pytest.raises(logshelf.ReadOnlyError):
            ro["b"] = 2


def test_a_failed_eviction_does_not_fail_the_write(tmp_path, monkeypatch, caplog):
    with Cache(tmp_path / "c", max_bytes=20_000) as cache:

        def busy(*args, **kwargs):
            raise logshelf.LockTimeoutError("another compaction holds the lock")

        monkeypatch.setattr(cache.engine, "compact", busy)
        with caplog.at_level(logging.WARNING, logger="logshelf"):
            for i in range(40):
                cache[f"k{i}"] = os.urandom(1000)
        assert cache["k39"] is not None  # every write landed
        assert any("eviction" in r.getMessage() for r in caplog.records)
        monkeypatch.undo()
        cache["one-more"] = 1  # the next write evicts
        segment = cache.engine.options.max_segment_size
        assert cache.engine.stats()["segment_bytes"] <= 20_000 + segment
