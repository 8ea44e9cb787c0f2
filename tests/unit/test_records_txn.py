"""Unit tests of _records (what the engine writes) and _txn (the transaction
buffer and its overlay on reads)."""

from __future__ import annotations

import threading
import zlib

import pytest

from logshelf import _codecs
from logshelf import _format as fmt
from logshelf._records import Record, delete_record, encode_key, put_record
from logshelf._txn import Transaction


def test_put_record_carries_the_key_bytes_and_value_checksum() -> None:
    record = put_record("clé", 0, b"value", 0)
    assert record == Record(
        fmt.KIND_PUT, "clé", "clé".encode(), 0, b"value", zlib.crc32(b"value"), 0
    )
    assert record.key_bytes == b"cl\xc3\xa9" and record.vcrc == zlib.crc32(b"value")


def test_a_record_packs_as_the_format_defines() -> None:
    """pack_batch reads the Record positionally: the field order is the format's."""
    record = put_record("k", 0, b"v", 0)
    data, _ = fmt.pack_batch(7, 5, [record], 0)
    assert data == fmt.pack_record(7, 5, fmt.KIND_PUT, True, 0, b"k", b"v", zlib.crc32(b"v"), 0)


def test_delete_record_has_no_value() -> None:
    assert delete_record("k") == Record(fmt.KIND_DELETE, "k", b"k", 0, b"", 0, 0)


def test_encode_key_names_a_bad_key() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        encode_key("\udcff")
    with pytest.raises(ValueError, match="too long"):
        encode_key("x" * 70_000)
    assert encode_key("x" * fmt.MAX_KEY_BYTES) == b"x" * fmt.MAX_KEY_BYTES


def test_transaction_overlay_counts_puts_and_deletes() -> None:
    index = {"a": 1, "b": 2}
    txn = Transaction()
    assert txn.buffer(put_record("c", 0, b"3", 0), index)
    assert txn.buffer(delete_record("a"), index)
    assert not txn.buffer(delete_record("missing"), index)  # nothing buffered
    assert "missing" not in txn.records
    assert txn.present("c", index) and not txn.present("a", index) and txn.present("b", index)
    assert sorted(txn.keys(index)) == ["b", "c"]
    assert txn.count(index) == 2
    assert txn.value("c") == b"3" and txn.value("a") is None


def test_a_delete_of_a_key_only_the_transaction_wrote_forgets_the_write() -> None:
    txn = Transaction()
    txn.buffer(put_record("new", 0, b"x", 0), {})
    assert txn.buffer(delete_record("new"), {})
    assert txn.records == {}  # neither a put nor a tombstone is committed


def test_a_later_write_of_a_key_replaces_the_earlier() -> None:
    txn = Transaction()
    txn.buffer(put_record("k", 0, b"1", 0), {})
    txn.buffer(put_record("k", 0, b"2", 0), {})
    assert list(txn.records) == ["k"] and txn.value("k") == b"2"


def test_buffered_compressed_values_read_back_decompressed() -> None:
    raw = b"abc" * 1000
    codec, stored = _codecs.compress(_codecs.Codec.ZLIB, raw)
    txn = Transaction()
    txn.buffer(put_record("k", codec, stored, len(raw)), {})
    assert txn.value("k") == raw


def test_only_the_opening_thread_owns_the_transaction() -> None:
    txn = Transaction()
    seen: list[bool] = []
    other = threading.Thread(target=lambda: seen.append(txn.mine()))
    other.start()
    other.join()
    assert txn.mine() and seen == [False]
