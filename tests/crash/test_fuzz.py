"""Fuzzing: random damage to segments, hints and the MANIFEST.

Each case damages a copy of a small template store (bit flips, overwritten
bytes, zeroed and garbage ranges, header fields set to huge values,
truncation, appended garbage, removed and duplicated ranges, deleted files;
in sealed and active segments, hints and the MANIFEST), then opens it
read-only and, on a fresh copy, for writing, and does ``len()``, ``keys()``,
iteration, ``in``, a read of every key ever written and ``verify()``. A
writer that opened then writes a key, and a reopened reader must see the same
store plus that key.

What the store may do is derived from the template and the damaged bytes
alone (``_fuzz.analyse``): open and show the template's contents, or a prefix
of the active segment's batches where the damage can pass for a torn tail;
raise ``CorruptionError`` on reading a key only if that key's record was
damaged; or refuse to open with ``CorruptionError``/``FormatError``. Damage
to hints (optional by design) must change nothing at all. Anything else fails
the case: a wrong or resurrected value, a lost key, another exception type, a
MemoryError, a case over 60 s, or a case that raises the process's peak
virtual memory by more than 64 MiB (the workers run under an address-space
limit and read their peak from /proc, so an over-allocation fails even where
the machine could have served it).

Cases run in two worker processes. Every failure names its case: replay it
with ``PYTHONPATH=tests python -m crash._fuzz replay TEMPLATE CASE``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import logshelf
from logshelf import _format as fmt

from . import _fuzz
from ._helpers import parse_records

#: Seeds per template in the default run (five templates: 7500 cases, about
#: 25 s on two cores) and in the slow sweep (25000 cases, about 2 min; set
#: LOGSHELF_FUZZ_SEEDS for a longer sweep).
DEFAULT_SEEDS = 1500
SLOW_SEEDS = int(os.environ.get("LOGSHELF_FUZZ_SEEDS", "5000"))


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template stores, built once for the module (deterministic bytes)."""
    directory = tmp_path_factory.mktemp("fuzz-templates")
    _fuzz.build_templates(directory)
    return directory


def _run(templates: Path, cases: list[str], tmp_path: Path, **options: object) -> _fuzz.RunResult:
    with _fuzz.scratch_directory(tmp_path / "scratch") as scratch:
        return _fuzz.run_cases(templates, cases, scratch, **options)  # type: ignore[arg-type]


def test_fuzz_templates_cover_what_the_fuzz_needs(templates: Path) -> None:
    """The templates hold what the damage is meant to meet: sealed segments,
    a hint for every segment, every codec, multi-record batches, deletes,
    non-ASCII keys, a hint that covers only part of its segment, a torn tail,
    segments large enough for reads through the memory map, and hints of
    other stores to swap in. (Loading them also replays each one and checks
    it equals what was written.)"""
    loaded = _fuzz.load_templates(templates)
    mixed, single, crash = loaded["mixed"], loaded["single"], loaded["crash"]
    assert len(mixed.sealed) >= 2 and len(crash.sealed) >= 2 and not single.sealed
    for t in loaded.values():
        segments = {name for name, _ in t.segments}
        assert {name.replace(".log", ".hint") for name in segments} == set(t.hints), t.name
        assert any(not key.isascii() for key in t.expected), t.name
        assert any(len(b.records) > 1 for b in t.batches), t.name  # a batch or transaction
        kinds = {r.kind for recs in t.records.values() for r in recs}
        assert fmt.KIND_DELETE in kinds, t.name
    codecs = {
        fmt.codec_of(mixed.files[r.seg][r.offset + 31])
        for recs in mixed.records.values()
        for r in recs
        if r.kind == fmt.KIND_PUT
    }
    assert codecs == {0, 1, 2, 3}
    # The crash template: its active hint covers less than the segment, which
    # ends in half a batch.
    hint = fmt.decode_hint(crash.files[crash.active.replace(".log", ".hint")])
    assert hint is not None and hint.covered < crash.batches[-1].end
    assert crash.records[crash.active][-1].end > crash.batches[-1].end
    # Reads are memory-mapped once a segment holds 256 KiB (_segment._REMAP_STEP).
    large = loaded["large"]
    assert all(limit > 256 << 10 for _, limit in large.segments[1:]), large.segments
    assert all(t.foreign for t in loaded.values())
    # Values with out-of-band buffers, sealed and active, their buffers
    # stored raw and lz4-compressed (format.md section 4.2).
    arrays = loaded["arrays"]
    buffered = {
        (r.seg, r.offset)
        for recs in arrays.records.values()
        for r in recs
        if arrays.files[r.seg][r.offset + 31] & fmt.FLAG_BUFFERS
    }
    holders = {seg for seg, _ in buffered}
    assert arrays.active in holders and holders & set(arrays.sealed), holders
    assert len(buffered) == 3


@pytest.mark.timeout(120)  # about 25 s on two cores
def test_fuzz_random_damage_never_yields_a_wrong_value(templates: Path, tmp_path: Path) -> None:
    """7500 seeded cases of random damage (1500 per template): every outcome
    is one the damage explains."""
    cases = [f"{name}:{seed}" for seed in range(DEFAULT_SEEDS) for name in _fuzz.BUILDERS]
    result = _run(templates, cases, tmp_path)
    assert result.done == len(cases), result.message()
    assert not result.failures, result.message()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_random_damage_sweep(templates: Path, tmp_path: Path) -> None:
    """The same with 5 x ``SLOW_SEEDS`` other seeds (25000 cases by default)."""
    seeds = range(DEFAULT_SEEDS, DEFAULT_SEEDS + SLOW_SEEDS)
    cases = [f"{name}:{seed}" for seed in seeds for name in _fuzz.BUILDERS]
    result = _run(templates, cases, tmp_path)
    assert result.done == len(cases), result.message()
    assert not result.failures, result.message()


@pytest.mark.parametrize(
    "group",
    ["record-vlen", "record-klen", "record-rawlen", "hint-header", "hint-payload", "manifest"],
)
def test_fuzz_forged_length_field(templates: Path, tmp_path: Path, group: str) -> None:
    """Length fields set to huge values with their checksums recomputed (a
    writer bug or a forger, not bit rot): record ``vlen``, ``klen`` and
    ``rawlen`` of live records in sealed and active segments, with and without
    hints; hint payload length and covered length; the key counts inside a
    hint's payload; the MANIFEST's segment count and sealed lengths. Never a
    wrong value, a stray exception or an allocation beyond what the files hold.

    Found by this test and fixed: an lz4 record's ``rawlen`` went straight to
    ``lz4.block.decompress``, which allocates that much up front (now bounded
    by lz4's largest expansion), and hint payloads were pickles, whose length
    opcodes make the C unpickler allocate before reading (hints now use a
    plain layout whose counts are checked against the payload size)."""
    loaded = _fuzz.load_templates(templates)
    cases = [
        f"{name}:{case}"
        for name, t in loaded.items()
        for case in _fuzz.forged_cases(t)
        if case.startswith(group + "/")
    ]
    assert cases
    result = _run(templates, cases, tmp_path)
    assert result.done == len(cases), result.message()
    assert not result.failures, result.message()


@pytest.mark.parametrize("where", ["active", "sealed"])
def test_fuzz_found_moved_records_under_an_intact_hint(tmp_path: Path, where: str) -> None:
    """Bytes duplicated inside a segment move its records, but its hint is
    still accepted (the covered length is still within the file; a sealed
    segment is only read up to its sealed length) and its offsets now point
    at other records. A read verifies the checksums of whatever record is
    there, not its key, so ``db["b"]`` returns the value of ``a``.

    Found by the fuzz (e.g. ``crash:69``: a duplicated range in a sealed
    segment made ``c1`` read the value of ``c0``). With flag "w" it is worse:
    the writer takes ``b``'s real record, now after the hinted range, for a
    torn tail and cuts it. Expected: the damage is reported (CorruptionError
    at open or on reading ``b``), never another key's value."""
    store = tmp_path / "store"
    options = {"max_segment_size": 4096, "auto_compact": None}
    with logshelf.open(store, **options) as db:
        db["a"] = "A"
        db["b"] = "B"
        if where == "sealed":
            db["filler"] = "f" * 4000  # rolls over: a and b end up in a sealed segment
    seg = store / fmt.segment_name(1)
    assert (store / fmt.hint_name(1)).exists()
    data = seg.read_bytes()
    a, b = parse_records(data)[:2]
    assert a.end - a.offset == b.end - b.offset  # so a's copy sits exactly where b was
    damaged = data[: a.end] + data[a.offset : a.end] + data[a.end :]  # a, a again, b, ...
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    for flag, path in (("r", store), ("w", copy)):
        (path / seg.name).write_bytes(damaged)
        try:
            db = logshelf.open(path, flag)
        except logshelf.CorruptionError:
            continue
        with db:
            try:
                value = db["b"]
            except logshelf.CorruptionError:
                continue
            assert value == "B", f"flag {flag!r}: db['b'] returned {value!r}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        ("wrong-value", "read 'not the value that was stored'"),
        ("resurrect", "must be absent"),
        ("allocate", "peak virtual memory grew"),
        ("stray-exception", "error: unpack requires a buffer"),
        ("memory-error", "MemoryError behind"),
        ("hang", "hang: the case did not finish"),
    ],
)
def test_fuzz_harness_catches_what_it_promises(
    templates: Path, tmp_path: Path, inject: str, expected: str
) -> None:
    """The harness can fail: reads broken on purpose inside the workers (a
    wrong value, a value for a never-written key, a 128 MiB allocation, a
    struct.error, a MemoryError behind a CorruptionError, a read that never
    returns) are each reported, naming the case."""
    cases = ["mixed:intact", "single:intact"]
    result = _run(templates, cases, tmp_path, inject=inject, case_timeout=3)
    assert result.done == len(cases)
    assert sorted(f.case for f in result.failures) == sorted(cases), result.message()
    for failure in result.failures:
        assert any(expected in p for p in failure.problems), failure.report()


def test_fuzz_scenarios_pass_on_a_sound_store(templates: Path, tmp_path: Path) -> None:
    """The fixed damage the sabotage checks below use (no hints; a value bit
    flipped in the active segment; an unaligned range cut out of its
    middle) passes on every template when nothing is broken: the failures
    below come from the sabotage alone."""
    cases = [f"{name}:scenario/{s}" for s in _fuzz.SCENARIOS for name in _fuzz.BUILDERS]
    result = _run(templates, cases, tmp_path)
    assert result.done == len(cases), result.message()
    assert not result.failures, result.message()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("inject", "scenario", "expected"),
    [
        # A scan that passes over a damaged value, then leaves out the next batch.
        ("scan-skips-batch-after-rot", "value-rot", "a state the damage cannot explain"),
        # Damage in the middle of the active segment taken for a torn tail
        # (Segment.find_valid_record blind): committed batches after a cut
        # vanish. An oracle that allowed every prefix after moved records
        # let this pass.
        ("damage-taken-for-torn-tail", "cut-middle", "opening must raise CorruptionError"),
        # The index built from a scan misses the scan's last batch.
        ("index-drops-last-batch", "no-hints", "a state the damage cannot explain"),
        # verify() reports nothing while a read raises.
        ("verify-sees-nothing", "value-rot", "verify() is clean although"),
    ],
)
def test_fuzz_harness_catches_broken_damage_handling(
    templates: Path, tmp_path: Path, inject: str, scenario: str, expected: str
) -> None:
    """The harness can fail on the paths that handle damage, not only on
    reads: the scan, the torn-tail decision, the index built from a scan and
    verify(), each broken on purpose inside the workers (through the stable
    _segment and _index modules and the public Shelf), are reported on
    every template, naming the case."""
    cases = [f"{name}:scenario/{scenario}" for name in _fuzz.BUILDERS]
    result = _run(templates, cases, tmp_path, inject=inject)
    assert result.done == len(cases)
    assert sorted(f.case for f in result.failures) == sorted(cases), result.message()
    for failure in result.failures:
        assert any(expected in p for p in failure.problems), failure.report()
