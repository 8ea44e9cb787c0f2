"""Records on Redis (docs/format.md section 9): damage is detected, never
returned; the URL's parameters; the namespace flags."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

import logshelf
from _redis_server import namespace_of, value_key
from logshelf import _redis_format as rfmt
from logshelf._redis_url import parse_url


def _flip(raw: redis.Redis, rkey: bytes, offset: int) -> None:
    data = bytearray(raw.get(rkey) or b"")
    data[offset] ^= 0x10
    raw.set(rkey, bytes(data))


@pytest.mark.parametrize("offset", [0, 5, 17, 21, 30, -1])
def test_a_flipped_bit_raises_corruption_naming_the_key(
    redis_url: str, raw: redis.Redis, offset: int
) -> None:
    with logshelf.open(redis_url) as db:
        db["victim"] = "a value of some length"
        db["other"] = 1
        _flip(raw, value_key(redis_url, "victim"), offset)
        with pytest.raises((logshelf.CorruptionError, logshelf.FormatError)) as info:
            db["victim"]
        assert "'victim'" in str(info.value)
        assert db["other"] == 1
        assert len(db.verify()) == 1


def test_a_record_copied_under_another_key_is_refused(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.open(redis_url) as db:
        db["a"] = "A"
        db["b"] = "B"
        raw.set(value_key(redis_url, "b"), raw.get(value_key(redis_url, "a")) or b"")
        with pytest.raises(logshelf.CorruptionError, match="'b'"):
            db["b"]


def test_a_foreign_writers_bytes_are_refused(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.open(redis_url) as db:
        raw.set(value_key(redis_url, "plain"), b"written by someone else, not logshelf")
        raw.set(value_key(redis_url, "short"), b"x")
        for key in ("plain", "short"):
            with pytest.raises(logshelf.CorruptionError, match=repr(key)):
                db[key]
        assert sorted(db) == ["plain", "short"]  # listed, but never loaded


def test_a_damaged_chunk_raises_corruption(redis_url: str, raw: redis.Redis) -> None:
    with logshelf.open(redis_url + "&chunk_size=1024") as db:
        db["big"] = bytes(range(256)) * 40
        pattern = f"logshelf:{{{namespace_of(redis_url)}}}:c:*".encode()
        chunks = sorted(raw.scan_iter(match=pattern))
        assert len(chunks) == 11  # 10,240 bytes and the pickle's framing
        _flip(raw, chunks[3], 100)
        with pytest.raises(logshelf.CorruptionError, match="'big'"):
            db["big"]
        raw.delete(chunks[5])
        with pytest.raises(logshelf.CorruptionError, match="chunk of the value of key 'big'"):
            db["big"]


def test_compressed_and_chunked_values_round_trip(redis_url: str) -> None:
    value = {"rows": list(range(20_000)), "blob": b"\x00" * 50_000}
    for compression in (None, "lz4", "zlib", "bz2"):
        with logshelf.open(redis_url + "&chunk_size=4096", compression=compression) as db:
            db[f"v-{compression}"] = value
            assert db[f"v-{compression}"] == value
    with logshelf.open(redis_url, "r") as db:
        assert len(db) == 4 and all(v == value for v in db.values())


def test_record_layout_is_the_documented_one() -> None:
    record = rfmt.pack_inline(b"k", 2, b"stored", 0x1234, 99)
    kind, flags, reserved, rawlen, vlen, vcrc, _ = rfmt.HEADER.unpack_from(record)
    assert (kind, flags, reserved, rawlen, vlen, vcrc) == (0xB1, 4, 0, 99, 6, 0x1234)
    assert record[24:] == b"stored" and len(record) == 30
    pointer = rfmt.Pointer(b"0" * 32, 7, 0, 0, 7000, 5)
    packed = rfmt.pack_pointer(b"k", pointer)
    assert packed[0] == 0xB2 and packed[24:] == b"0" * 32 + b"0000000007"
    assert rfmt.unpack(packed, "k", b"k", "here") == pointer
    with pytest.raises(logshelf.CorruptionError):
        rfmt.unpack(packed, "j", b"j", "here")  # the key is part of the header checksum


# -- flags: r / w / c / n --------------------------------------------------------


def test_r_and_w_need_an_existing_namespace(redis_url: str, raw: redis.Redis) -> None:
    for flag in ("r", "w"):
        with pytest.raises(logshelf.StoreNotFoundError, match=namespace_of(redis_url)):
            logshelf.open(redis_url, flag)
    assert raw.exists(f"logshelf:{{{namespace_of(redis_url)}}}:meta".encode()) == 0
    logshelf.open(redis_url, "c").close()  # creates it: its meta hash records it
    assert raw.hget(f"logshelf:{{{namespace_of(redis_url)}}}:meta".encode(), "format") == b"1"
    with logshelf.open(redis_url, "w") as db:
        db["k"] = 1
    with logshelf.open(redis_url, "r") as db:
        assert dict(db) == {"k": 1}
        with pytest.raises(logshelf.ReadOnlyError):
            db["k"] = 2
        with pytest.raises(logshelf.ReadOnlyError):
            db.transaction().__enter__()


def test_n_empties_only_its_own_namespace(redis_url: str) -> None:
    other = redis_url + "x"
    with logshelf.open(redis_url + "&chunk_size=1024") as db, logshelf.open(other) as neighbour:
        db.update({"a": 1, "big": b"z" * 10_000, "a*[?": 2})
        neighbour["kept"] = True
    with logshelf.open(redis_url, "n") as db:
        assert len(db) == 0 and db.stats()["redis_keys"] == 1  # the meta hash only
        db["new"] = 1
    with logshelf.open(other, "r") as neighbour:
        assert dict(neighbour) == {"kept": True}


def test_a_newer_format_or_a_foreign_key_is_refused(redis_url: str, raw: redis.Redis) -> None:
    meta = f"logshelf:{{{namespace_of(redis_url)}}}:meta".encode()
    raw.hset(meta, "format", "2")
    with pytest.raises(logshelf.FormatError, match="format"):
        logshelf.open(redis_url)
    raw.delete(meta)
    raw.set(meta, b"a string")
    with pytest.raises(logshelf.FormatError):
        logshelf.open(redis_url)


def test_prefix_listing_uses_the_prefix_even_with_glob_characters(redis_url: str) -> None:
    with logshelf.open(redis_url) as db:
        db.update({"user:1": 1, "user:2": 2, "users": 3, "u*": 4, "u[1]": 5, "other": 6})
        assert sorted(db.keys("user:")) == ["user:1", "user:2"]
        assert sorted(db.keys("u*")) == ["u*"]
        assert sorted(db.keys("u[")) == ["u[1]"]
        assert dict(db.items("user")) == {"user:1": 1, "user:2": 2, "users": 3}


# -- URLs ---------------------------------------------------------------------------


def test_url_parameters_are_parsed_and_the_password_never_shown() -> None:
    target = parse_url(
        "rediss://me:secret@h:7000/3?namespace=app&replicas=2&chunk_size=4096"
        "&lock_ttl=5&socket_timeout=3"
    )
    assert target.namespace == "app" and target.replicas == 2
    assert target.chunk_size == 4096 and target.lock_ttl == 5.0
    assert target.client_url == "rediss://me:secret@h:7000/3?socket_timeout=3"
    assert "secret" not in target.display and "me:***@h:7000" in target.display
    assert parse_url("redis://h").namespace == "default"
    for bad in ("namespace=a{b}", "replicas=-1", "chunk_size=10", "lock_ttl=x", "namespace="):
        with pytest.raises(ValueError):
            parse_url(f"redis://h/0?{bad}")


def test_an_unreachable_server_raises_backend_unavailable() -> None:
    with pytest.raises(logshelf.BackendUnavailableError, match="unavailable") as info:
        logshelf.open("redis://127.0.0.1:1/0?namespace=x")
    assert isinstance(info.value, logshelf.StoreError)


def test_the_core_works_without_redis_and_says_how_to_get_it(tmp_path: object) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import logshelf, os, tempfile\n"
        "with logshelf.open(os.path.join(tempfile.mkdtemp(), 's')) as db: db['k'] = 1\n"
        "try:\n"
        "    logshelf.open('redis://127.0.0.1:1/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install logshelf[redis]" in out.stdout


def test_cluster_urls_list_seed_nodes() -> None:
    target = parse_url("redis+cluster://u:pw@a:7000,b:7001,[::1]:7002/?namespace=n&lock_ttl=2")
    assert target.seeds == (("a", 7000), ("b", 7001), ("::1", 7002))
    assert target.client_url == "redis://u:pw@a:7000/" and target.namespace == "n"
    assert "pw" not in target.display
    assert parse_url("rediss+cluster://a:1/").client_url == "rediss://a:1/"
    for bad in ("redis+cluster://a/", "redis+cluster://a:1,b/", "redis+cluster://a:0/"):
        with pytest.raises(ValueError, match="host:port"):
            parse_url(bad)


def test_inspection_calls_say_what_they_can(redis_url: str) -> None:
    with logshelf.open(redis_url) as db:
        db["k"] = 1
        where, offset = db.locate("k")
        assert where.endswith(repr(value_key(redis_url, "k").decode())) and offset == 0
        with pytest.raises(KeyError):
            db.locate("absent")
        result = db.compact()
        assert not result.compacted and "no compaction" in result.reason
        assert db.stats() == {"keys": 1, "redis_keys": 2}
        assert db.verify() == []
        assert repr(db).startswith("<logshelf.Shelf 'redis://127.0.0.1:")


def test_safe_loading_works_on_redis(redis_url: str) -> None:
    import decimal

    with logshelf.open(redis_url) as db:
        db["ok"] = {"d": decimal.Decimal("1.5")}
        db["hostile"] = logshelf.CacheInfo  # a global outside the allow-list
    with logshelf.open(redis_url, "r", safe=True) as db:
        assert db["ok"] == {"d": decimal.Decimal("1.5")}
        with pytest.raises(logshelf.UntrustedGlobalError):
            db["hostile"]


def test_memoize_takes_a_redis_url(redis_url: str) -> None:
    calls = []

    @logshelf.memoize(path=redis_url)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(2) == double(2) == 4 and calls == [2]
