"""Large batches are packed in parts and written in pieces (``_pieces``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf._buffer_format import pack_parts
from logshelf._fs import FileSystem
from logshelf._pieces import pieces
from logshelf._records import new_record


def test_pieces_join_small_parts_and_pass_large_ones_through() -> None:
    big = b"B" * fmt.LARGE_VALUE
    small = [b"s" * 100] * 3
    out = list(pieces([*small, big, b"t", memoryview(b"u" * 10), big]))
    assert out[0] == b"".join(small)
    assert out[1] is big and out[3] is big  # never copied
    assert out[2] == b"tu" + b"u" * 9
    assert b"".join(bytes(p) for p in out) == b"".join([*small, big, b"t", b"u" * 10, big])
    many = list(pieces([b"x" * 1000] * 3000))  # 3 MB of small parts: a few writes
    assert 2 <= len(many) <= 4 and sum(len(p) for p in many) == 3_000_000
    assert list(pieces([])) == []


def _records(sizes: list[int]) -> list[tuple[int, object, bytes, int, bytes, int, int]]:
    return [
        new_record((fmt.KIND_PUT, f"k{i}", b"k%d" % i, 0, b"v" * n, 0, 0))
        for i, n in enumerate(sizes)
    ]


def test_pack_batch_leaves_batches_of_large_values_to_pack_parts() -> None:
    """Joined while their large values stay within JOIN_LIMIT; beyond it,
    packed in parts, byte for byte what the join would have written. Small
    records are joined however many there are."""
    n = fmt.JOIN_LIMIT // fmt.LARGE_VALUE
    data, positions = fmt.pack_batch(7, 9, _records([fmt.LARGE_VALUE] * n), 64)
    assert len(positions) == n
    records = _records([fmt.LARGE_VALUE] * (n + 1))
    with pytest.raises(fmt.HasBuffers):
        fmt.pack_batch(7, 9, records, 64)
    parts, where, size = pack_parts(7, 9, records, 64)
    joined = b"".join(
        fmt.pack_record(7, 9, kind, i == n, codec, key, value, vcrc, rawlen)
        for i, (kind, _, key, codec, value, vcrc, rawlen) in enumerate(records)
    )
    assert b"".join(parts) == joined and size == len(joined)
    assert where == [
        64 + sum(32 + len(r[2]) + len(r[4]) for r in records[:i]) for i in range(n + 1)
    ]
    small = _records([100] * (fmt.JOIN_LIMIT // 100 + 10))
    data, _ = fmt.pack_batch(7, 9, small, 64)
    assert len(data) > fmt.JOIN_LIMIT


class _Appends(FileSystem):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def append(self, fd: int, data: bytes) -> None:
        self.sizes.append(memoryview(data).nbytes)
        super().append(fd, data)


def test_a_large_transaction_is_written_in_pieces(store_path: Path) -> None:
    fs = _Appends()
    values = {f"k{i}": bytes([i]) * (1 << 20) for i in range(8)}
    with logshelf.open(store_path, _fs=fs) as db:
        fs.sizes.clear()
        with db.transaction():
            db.update(values)
        assert len(fs.sizes) > 8 and max(fs.sizes) < 2 << 20
        fs.sizes.clear()
        db.update({f"s{i}": i for i in range(1000)})  # small records: one write
        assert len(fs.sizes) == 1
        assert {k: db[k] for k in values} == values
    with logshelf.open(store_path, "r") as db:
        assert {k: db[k] for k in values} == values and db.verify() == []
