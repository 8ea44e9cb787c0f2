"""Compaction while other processes write and read the same store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import logshelf

# Small segments: many rollovers, and automatic compactions in the writers too.
OPTIONS: dict[str, Any] = {"max_segment_size": 16384}


def _run(workers: Any, store: Path, writers: int, writes: int, **more: Any) -> None:
    logshelf.open(store).close()
    common = {"store": str(store), "writers": writers, "keys": 30, **OPTIONS, **more}
    churners = [
        workers.spawn("churn_writer", writer=w, writes=writes, **common) for w in range(writers)
    ]
    reader = workers.spawn("monotonic_reader", max_seconds=240, **common)
    compactor = workers.spawn("compactor", max_seconds=240, pause=0.005, **common)
    everyone = [*churners, reader, compactor]
    workers.start_together(everyone)
    results = workers.results(everyone, timeout=300)
    expected: dict[str, Any] = {}
    for w, result in enumerate(results[:writers]):
        assert result["stale"] == [], f"writer {w} read back stale values"
        expected.update(result["final"])
        expected[f"done-{w}"] = True
    read = results[writers]
    assert read["backwards"] == [], "a reader saw an older value come back"
    assert read["verify"] == []
    assert read["passes"] >= 2
    assert results[writers + 1]["compactions"] >= 3, "the compactor hardly ran"
    with logshelf.open(store, "r") as db:
        assert dict(db.items()) == expected
        assert db.verify() == []
    live = sum(
        len(k) + 32 + len(repr(v)) for k, v in expected.items()
    )  # rough: pickles of these small dicts are shorter than their repr
    with logshelf.open(store) as db:
        db.compact()
        on_disk = db.stats()["segment_bytes"]
    assert on_disk <= 2 * live + 3 * OPTIONS["max_segment_size"], (on_disk, live)


@pytest.mark.timeout(30)
def test_compaction_under_concurrent_writers_and_a_reader(workers: Any, tmp_path: Path) -> None:
    """Two writers overwrite and delete, a reader watches every key, a third
    process compacts over and over: nothing acknowledged is lost, no deleted
    or overwritten value comes back, and the store ends compact."""
    _run(workers, tmp_path / "store.db", writers=2, writes=1500)


@pytest.mark.timeout(30)
def test_compaction_while_other_handles_remap_in_small_steps(workers: Any, tmp_path: Path) -> None:
    """The same, every process remapping a few keys per operation after each
    switch: the writers keep writing and the reader keeps reading while their
    index still points partly into the compaction's (deleted) inputs."""
    _run(workers, tmp_path / "store.db", writers=2, writes=1500, remap_chunk=3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compaction_under_concurrent_writers_long(workers: Any, tmp_path: Path) -> None:
    """The same with three writers and many more writes."""
    _run(workers, tmp_path / "store.db", writers=3, writes=8000)
