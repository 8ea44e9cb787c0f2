"""Many independent processes writing and reading one store at once.

Each child is a fresh interpreter (``_worker.py`` via ``sys.executable``); a
start barrier releases them together so that their writes really interleave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import logshelf

PAD = "compressible padding " * 20  # must match _worker.PAD


def _value(prefix: str, i: int) -> dict[str, Any]:
    return {"writer": prefix, "i": i, "pad": PAD}


def _run_distinct_writers(
    workers: Any, store: Path, count: int, backends: list[str], **options: Any
) -> None:
    """Run one writer per backend, ``count`` distinct keys each, and check the result."""
    logshelf.open(store, **{k: v for k, v in options.items() if k == "compression"}).close()
    procs = [
        workers.spawn(
            "write_keys",
            store=str(store),
            prefix=f"w{n}:",
            count=count,
            lock_backend=backend,
            **options,
        )
        for n, backend in enumerate(backends)
    ]
    workers.start_together(procs)
    results = workers.results(procs, timeout=150)
    for n, result in enumerate(results):
        assert result["wrong"] == [], f"writer {n} could not read back its own keys"
        assert result["len"] >= count
    expected = {
        f"w{n}:{i}": _value(f"w{n}:", i) for n in range(len(backends)) for i in range(count)
    }
    with logshelf.open(store, "r") as db:
        assert len(db) == len(expected)
        assert sorted(db) == sorted(expected)
        for key, value in expected.items():
            assert db[key] == value, key


WRITER_VARIANTS = {
    "flock": ({}, ["flock"] * 4),
    "lz4": ({"compression": "lz4"}, ["auto"] * 4),
    "mixed-backends": ({}, ["filelock", "flock", "flock", "flock"]),
    "small-segments": ({"max_segment_size": 16384}, ["auto"] * 4),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", list(WRITER_VARIANTS))
def test_processes_distinct_keys_all_present(workers: Any, tmp_path: Path, variant: str) -> None:
    """Four processes writing 500 distinct keys each lose nothing and len() is exact."""
    options, backends = WRITER_VARIANTS[variant]
    _run_distinct_writers(workers, tmp_path / "store", 500, backends, **options)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", list(WRITER_VARIANTS))
def test_processes_distinct_keys_all_present_stress(
    workers: Any, tmp_path: Path, variant: str
) -> None:
    """Four processes writing 5000 distinct keys each lose nothing and len() is exact."""
    options, backends = WRITER_VARIANTS[variant]
    _run_distinct_writers(workers, tmp_path / "store", 5000, backends, **options)


def _run_counters(workers: Any, store: Path, k: int, backends: list[str]) -> None:
    logshelf.open(store).close()
    procs = [
        workers.spawn("increment", store=str(store), key="n", count=k, lock_backend=backend)
        for backend in backends
    ]
    workers.start_together(procs)
    results = workers.results(procs, timeout=250)
    for result in results:
        assert result["increasing"], result
    with logshelf.open(store, "r") as db:
        assert db["n"] == len(backends) * k
        assert len(db) == 1
    # Increments interleaved: some process did not take the counter from 0 to k
    # alone (otherwise the barrier did not make them overlap and the test
    # proves nothing).
    assert any(r["last"] - r["first"] + 1 > k for r in results), results


COUNTER_VARIANTS = {
    "flock": ["flock"] * 8,
    "mixed-backends": ["filelock", "flock"] * 4,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", list(COUNTER_VARIANTS))
def test_transaction_counter_exact_across_processes(
    workers: Any, tmp_path: Path, variant: str
) -> None:
    """Eight processes doing 150 transactional increments each end at exactly 1200."""
    _run_counters(workers, tmp_path / "store", 150, COUNTER_VARIANTS[variant])


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", list(COUNTER_VARIANTS))
def test_transaction_counter_exact_across_processes_stress(
    workers: Any, tmp_path: Path, variant: str
) -> None:
    """Eight processes doing 3000 transactional increments each end at exactly 24000."""
    _run_counters(workers, tmp_path / "store", 3000, COUNTER_VARIANTS[variant])


def _run_batches(workers: Any, store: Path, batches: int, **options: Any) -> None:
    logshelf.open(store).close()
    reader = workers.spawn("batch_reader", store=str(store), writers=2, batches=batches)
    reader.expect("ready")  # its handle is open on the empty store
    writers = [
        workers.spawn("batch_writer", store=str(store), writer=w, batches=batches, **options)
        for w in range(2)
    ]
    workers.start_together(writers)
    for w in writers:
        w.expect("half", timeout=120)
    # Only release the second halves once the reader has seen the first halves
    # through its never-reopened handle.
    reader.expect("saw-half", timeout=20)
    for w in writers:
        w.send("go")
    workers.results(writers, timeout=150)
    reader.send("stop")
    result = reader.result(timeout=60)
    assert result["said_half"]
    # The reader's final round saw every batch, without reopening.
    assert result["high"] == [batches - 1, batches - 1], result
    assert result["len"] == 2 * (batches * 5 + 1)
    # Empty at first, then the halves, then everything: at least three states.
    assert result["states"] >= 3, result


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "options", [{}, {"max_segment_size": 4096}], ids=["one-segment", "rollovers"]
)
def test_reader_sees_whole_batches_in_commit_order(
    workers: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    """A never-reopened reader sees whole transactions only, in commit order, and sees progress."""
    _run_batches(workers, tmp_path / "store", 200, **options)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "options", [{}, {"max_segment_size": 4096}], ids=["one-segment", "rollovers"]
)
def test_reader_sees_whole_batches_in_commit_order_stress(
    workers: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    """The batch-visibility check holds over 2000 transactions per writer."""
    _run_batches(workers, tmp_path / "store", 2000, **options)
