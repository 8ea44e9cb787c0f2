"""Tables, ratios and target checks computed from a results document.

The suite (``bench_peers.py``) prints these tables at the end of a run;
``plot.py`` reads the same document from ``--json`` and draws the charts or
prints the tables as Markdown. Only the standard library is needed here.

A results document is the dict ``bench_peers.py`` writes: ``settings``,
``environment``, ``adapters`` (name -> facts) and ``results``, a list of
dicts with ``workload``, ``adapter``, ``unit``, ``samples``, ``ops``,
``planned``, ``status``, ``detail`` and ``extra``. Units: ``"s"`` (each
sample is the seconds that ``ops[i]`` operations took), ``"ms"``,
``"B/key"`` and ``"bytes"``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from benchlib import Table

Doc = dict[str, Any]
ResultDict = dict[str, Any]

RAW = "raw"
LOGSHELF = "logshelf"
LOGSHELF_TX = "logshelf-tx"
DISKCACHE = "diskcache"

# Targets from the issues, checked against the logshelf rows.
TARGET_INSERT_RATIO = 2.0
TARGET_READ_RATIO = 1.3
TARGET_REOPEN_MS = 100.0
TARGET_REOPEN_KEYS = 100_000
TARGET_INDEX_BYTES = 150.0
TARGET_MULTI_SPEEDUP = 3.0
TARGET_LOCK_WAIT_MS = 5.0
TARGET_TRANSACTION_RATIO = 1.2
TARGET_DISK_RATIO = 1.3

#: Single-store workloads: id -> column heading.
OP_WORKLOADS: dict[str, str] = {
    "insert": "insert",
    "read": "random read",
    "overwrite": "overwrite",
    "mix": "90% read / 10% write",
    "delete": "delete half",
    "large-write": "1 MiB values: write",
    "large-read": "1 MiB values: read",
}
DISK_PHASES: dict[str, str] = {
    "disk-insert": "after insert",
    "disk-overwrite": "after overwrite",
    "disk-mix": "after 90/10 mix",
    "disk-delete": "after delete half",
    "disk-compact": "after compaction",
    "disk-large": "1 MiB values",
}


# ----------------------------------------------------------------------------
# numbers from results


def per_op(result: ResultDict) -> float:
    """Median seconds per operation of a ``"s"`` result."""
    values = [s / o for s, o in zip(result["samples"], result["ops"], strict=True) if o]
    return statistics.median(values) if values else math.nan


def value(result: ResultDict) -> float:
    """The result's headline number: seconds per op for ``"s"``, else the median."""
    if result["unit"] == "s":
        return per_op(result)
    samples = result["samples"]
    return statistics.median(samples) if samples else math.nan


def spread(result: ResultDict) -> float:
    """(max - min) / median of the per-op (or raw) samples; 0 for one sample."""
    if result["unit"] == "s":
        xs = [s / o for s, o in zip(result["samples"], result["ops"], strict=True) if o]
    else:
        xs = list(result["samples"])
    if len(xs) < 2:
        return 0.0
    mid = statistics.median(xs)
    return (max(xs) - min(xs)) / mid if mid else 0.0


def find(doc: Doc, workload: str, adapter: str) -> ResultDict | None:
    """The result of ``adapter`` in ``workload``, if any."""
    results: list[ResultDict] = doc["results"]
    for r in results:
        if r["workload"] == workload and r["adapter"] == adapter:
            return r
    return None


def ok(result: ResultDict | None) -> bool:
    """A result whose numbers count (measured, data verified, nothing lost)."""
    return result is not None and result["status"] == "ok"


def baseline_workload(workload: str) -> str:
    """Which raw-baseline workload a workload is compared with."""
    return "insert" if workload == "multiprocess" else workload


def ratio(doc: Doc, result: ResultDict) -> float:
    """Time per op (or ms, or B/key) over the raw baseline's; for disk
    results, allocated bytes over the live data's bytes."""
    if result["unit"] == "bytes":
        live = result["extra"].get("live_bytes") or 0
        return value(result) / live if live else math.nan
    base = find(doc, baseline_workload(result["workload"]), RAW)
    if not ok(base):
        return math.nan
    assert base is not None
    denominator = value(base)
    return value(result) / denominator if denominator else math.nan


def reopen_sizes(doc: Doc) -> list[int]:
    """Key counts the reopen workload ran at."""
    sizes = {
        int(r["workload"].split("-")[1])
        for r in doc["results"]
        if r["workload"].startswith("reopen-")
    }
    return sorted(sizes)


def adapter_names(doc: Doc, workloads: Sequence[str] | None = None) -> list[str]:
    """Adapters in suite order that have a result in any of ``workloads``
    (or that were selected, when ``workloads`` is None)."""
    names = list(doc["adapters"])
    if workloads is None:
        return names
    present = {r["adapter"] for r in doc["results"] if r["workload"] in workloads}
    return [n for n in names if n in present]


def label(doc: Doc, name: str) -> str:
    """Short display name of an adapter."""
    return str(doc["adapters"].get(name, {}).get("label", name))


# ----------------------------------------------------------------------------
# formatting


def fmt_ratio(x: float) -> str:
    """``1.85x``, ``23.4x``, ``1,234x``."""
    if math.isnan(x):
        return "—"
    if x < 10:
        return f"{x:.2f}x"
    if x < 100:
        return f"{x:.1f}x"
    return f"{x:,.0f}x"


def fmt_rate(ops_per_s: float) -> str:
    """Operations per second, rounded to three significant digits above 1,000."""
    if math.isnan(ops_per_s):
        return "—"
    if ops_per_s >= 1000:
        digits = max(0, len(str(int(ops_per_s))) - 3)
        return f"{round(ops_per_s, -digits):,.0f}"
    return f"{ops_per_s:,.1f}"


def fmt_bytes(n: float) -> str:
    """Bytes as KiB / MiB / GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def status_cell(doc: Doc, workload: str, name: str) -> str | None:
    """Why a cell has no number ('n/i', 'FAIL', 'LOST 12', 'skip', '—'), or
    None when it has one."""
    facts = doc["adapters"].get(name, {})
    if facts.get("missing"):
        return "n/i"
    r = find(doc, workload, name)
    if r is None:
        return "—"
    if r["status"] == "failed":
        return "FAIL"
    if r["status"] == "lost":
        return f"LOST {r['extra'].get('lost', '?')}"
    if r["status"] != "ok":
        return "skip"
    return None


def marker(result: ResultDict) -> str:
    """'*' when a time budget cut the timed operations short."""
    return "*" if result["extra"].get("truncated") else ""


# ----------------------------------------------------------------------------
# tables


def ratio_table(doc: Doc) -> Table:
    """Adapters x workloads: time per op relative to the raw baseline."""
    columns = _matrix_columns(doc)
    rows = []
    for name in adapter_names(doc, [c for c, _ in columns]):
        row = [label(doc, name)]
        for workload, _ in columns:
            cell = status_cell(doc, workload, name)
            if cell is None:
                r = find(doc, workload, name)
                assert r is not None
                cell = fmt_ratio(ratio(doc, r)) + marker(r)
            row.append(cell)
        rows.append(row)
    return Table(
        "time per operation relative to the raw baseline (lower is better; 1.00x = raw)",
        ["system"] + [h for _, h in columns],
        rows,
        _legend(doc),
    )


def rate_table(doc: Doc) -> Table:
    """Adapters x workloads: operations per second (reopen: milliseconds)."""
    columns = _matrix_columns(doc)
    rows = []
    for name in adapter_names(doc, [c for c, _ in columns]):
        row = [label(doc, name)]
        for workload, _ in columns:
            cell = status_cell(doc, workload, name)
            if cell is None:
                r = find(doc, workload, name)
                assert r is not None
                if r["unit"] == "ms":
                    cell = f"{value(r):,.1f} ms"
                else:
                    cell = fmt_rate(1 / value(r)) + marker(r)
            row.append(cell)
        rows.append(row)
    return Table(
        "operations per second, median of repeats (reopen + first read: milliseconds)",
        ["system"] + [h for _, h in columns],
        rows,
        _legend(doc),
    )


def _matrix_columns(doc: Doc) -> list[tuple[str, str]]:
    columns = [(w, h) for w, h in OP_WORKLOADS.items() if any_result(doc, w)]
    for size in reopen_sizes(doc):
        columns.append((f"reopen-{size}", f"reopen {_short(size)} keys"))
    if any_result(doc, "multiprocess"):
        procs = doc["settings"]["procs"]
        columns.append(("multiprocess", f"{procs} processes writing"))
    return columns


def any_result(doc: Doc, workload: str) -> bool:
    """Whether any adapter has a result in ``workload``."""
    return any(r["workload"] == workload for r in doc["results"])


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def _legend(doc: Doc) -> list[str]:
    s = doc["settings"]
    return [
        f"N = {s['n']:,} small records, median of {s['repeats']} repeats. "
        "n/i: not installed; —: not part of this workload; FAIL: the persistence check failed "
        "(no number counts); LOST k: k acknowledged writes missing afterwards; "
        f"*: a {s['budget']:g} s time budget stopped the timed loop early (rate from the "
        "operations done; the rest was written untimed in batches).",
    ]


def multiprocess_table(doc: Doc) -> Table | None:
    """Concurrent writers: aggregate rate, writes acknowledged and lost."""
    names = adapter_names(doc, ["multiprocess"])
    if not names:
        return None
    procs = doc["settings"]["procs"]
    dc = find(doc, "multiprocess", DISKCACHE)
    rows = []
    for name in names:
        r = find(doc, "multiprocess", name)
        assert r is not None
        e = r["extra"]
        rate = 1 / value(r) if r["samples"] else math.nan
        vs_dc = "—"
        if ok(dc) and dc is not None and r["samples"]:
            vs_dc = f"{rate * value(dc):.2f}x"
        rows.append(
            [
                label(doc, name),
                fmt_rate(rate) + marker(r),
                f"{e.get('acknowledged', 0):,}",
                f"{e.get('lost', 0):,}",
                f"{e.get('wrong', 0):,}",
                vs_dc,
                r["status"] if r["status"] != "ok" else "ok",
            ]
        )
    skipped = [
        f"{label(doc, n)}"
        for n, f in doc["adapters"].items()
        if not f.get("multiprocess") and "multiprocess" in f.get("workloads", [])
    ]
    notes = [
        f"{procs} new processes start together (barrier) and write distinct keys; "
        "a fresh process then reads back every acknowledged write.",
    ]
    if skipped:
        notes.append("Not run (no multi-writer claim in their docs): " + ", ".join(skipped) + ".")
    return Table(
        f"{procs} processes writing one store at once",
        ["system", "records/s", "acknowledged", "lost", "wrong value", "x diskcache", "status"],
        rows,
        notes,
    )


def disk_table(doc: Doc) -> Table | None:
    """Allocated bytes on disk after each phase, relative to the live data."""
    phases = [(w, h) for w, h in DISK_PHASES.items() if any_result(doc, w)]
    if not phases:
        return None
    rows = []
    for name in adapter_names(doc, [w for w, _ in phases]):
        row = [label(doc, name)]
        for workload, _ in phases:
            cell = status_cell(doc, workload, name)
            if cell is None:
                r = find(doc, workload, name)
                assert r is not None
                cell = f"{fmt_bytes(value(r))} ({fmt_ratio(ratio(doc, r))}){marker(r)}"
            row.append(cell)
        rows.append(row)
    live = []
    for workload, heading in phases:
        r = next((r for r in doc["results"] if r["workload"] == workload), None)
        if r is not None:
            live.append(f"{heading} {fmt_bytes(r['extra'].get('live_bytes', 0))}")
    return Table(
        "size on disk (allocated blocks) and its ratio to the live data",
        ["system"] + [h for _, h in phases],
        rows,
        [
            "Live data = UTF-8 keys + values pickled with protocol 5: " + "; ".join(live) + ".",
            "*: the time budget cut the delete phase short, so fewer keys were deleted "
            "(the ratio uses that store's own live data).",
        ],
    )


def compaction_table(doc: Doc) -> Table | None:
    """Systems with a compaction API: time, throughput and space reclaimed."""
    names = adapter_names(doc, ["compact"])
    if not names:
        return None
    rows = []
    for name in names:
        r = find(doc, "compact", name)
        before, after = find(doc, "disk-delete", name), find(doc, "disk-compact", name)
        assert r is not None
        if not (ok(r) and ok(before) and ok(after)):
            rows.append([label(doc, name), "FAIL", "", "", "", ""])
            continue
        assert before is not None and after is not None
        seconds = value(r)
        live = r["extra"]["live_bytes"]
        rows.append(
            [
                label(doc, name),
                f"{fmt_bytes(value(before))} ({fmt_ratio(ratio(doc, before))})",
                f"{fmt_bytes(value(after))} ({fmt_ratio(ratio(doc, after))})",
                f"{seconds * 1e3:,.1f} ms",
                f"{live / seconds / 2**20:,.1f} MiB/s",
                f"{(value(before) - value(after)) / seconds / 2**20:,.1f} MiB/s",
            ]
        )
    return Table(
        "compaction after overwrite, 90/10 mix and delete half (systems with a compaction API)",
        [
            "system",
            "disk before (x live)",
            "disk after (x live)",
            "time",
            "live data / s",
            "reclaimed / s",
        ],
        rows,
        ["Sizes are allocated blocks; live data as in the size-on-disk table."],
    )


def memory_table(doc: Doc) -> Table | None:
    """Python heap and resident memory per key after reopening."""
    sizes = reopen_sizes(doc)
    if not sizes:
        return None
    columns: list[tuple[str, str]] = []
    for size in sizes:
        columns.append((f"memory-{size}", f"heap B/key, {_short(size)}"))
        columns.append((f"rss-{size}", f"RSS B/key, {_short(size)}"))
    rows = []
    for name in adapter_names(doc, [c for c, _ in columns]):
        row = [label(doc, name)]
        for workload, _ in columns:
            cell = status_cell(doc, workload, name)
            if cell is None:
                r = find(doc, workload, name)
                assert r is not None
                cell = f"{value(r):,.1f}"
            row.append(cell)
        rows.append(row)
    return Table(
        "memory after reopen + first read, per key",
        ["system"] + [h for _, h in columns],
        rows,
        [
            "heap: bytes tracemalloc sees retained by opening the store (Python objects only: "
            "native caches and memory maps are invisible to it). RSS: growth of the resident "
            "set across open + first read (includes native memory and touched mapped pages).",
        ],
    )


def durability_table(doc: Doc) -> Table | None:
    """logshelf's per-write cost under each durability mode."""
    names = adapter_names(doc, ["durability"])
    if not names:
        return None
    rows = []
    for name in names:
        cell = status_cell(doc, "durability", name)
        r = find(doc, "durability", name)
        if cell is not None or r is None:
            rows.append([label(doc, name), cell or "—", "", ""])
            continue
        rows.append(
            [
                label(doc, name),
                f"{value(r) * 1e6:,.1f} µs",
                fmt_rate(1 / value(r)) + marker(r),
                fmt_ratio(ratio(doc, r)),
            ]
        )
    count = next((r["planned"] for r in doc["results"] if r["workload"] == "durability"), 0)
    return Table(
        "durability modes: one db[key] = value per write",
        ["system", "per write", "writes/s", "ratio to raw"],
        rows,
        [f"{count:,} single writes per repeat, each mode on a fresh store."],
    )


def lockwait_table(doc: Doc) -> Table | None:
    """Write latency and writer-lock waits with several logshelf writers."""
    rows = []
    for workload, title in (("write-latency", "write latency"), ("lock-wait", "writer-lock wait")):
        r = find(doc, workload, LOGSHELF)
        if r is None:
            continue
        if r["status"] != "ok":
            rows.append([title, r["status"] + ": " + r["detail"], "", "", "", ""])
            continue
        e = r["extra"]
        rows.append(
            [
                title,
                f"{e['p50_ms']:.3f} ms",
                f"{e['p99_ms']:.3f} ms",
                f"{e['p99.9_ms']:.3f} ms",
                f"{e['max_ms']:.1f} ms",
                f"{e['over_target']:,} of {e['count']:,}",
            ]
        )
    if not rows:
        return None
    procs = doc["settings"]["procs"]
    return Table(
        f"logshelf with {procs} writer processes: latency (samples pooled over repeats)",
        ["what", "p50", "p99", "p99.9", "max", f"> {TARGET_LOCK_WAIT_MS:g} ms"],
        rows,
    )


def targets(doc: Doc) -> list[tuple[str, str, str, bool | None]]:
    """``(target, limit, measured, met)`` for every target the run can check
    (``met`` is None when it could not be measured)."""
    out: list[tuple[str, str, str, bool | None]] = []

    def ratio_target(workload: str, name: str, what: str, limit: float) -> None:
        r = find(doc, workload, name)
        if ok(r):
            assert r is not None
            x = ratio(doc, r)
            out.append((what, f"<= {limit:.1f}x raw", fmt_ratio(x), x <= limit))

    ratio_target("insert", LOGSHELF, "insert, one key per write", TARGET_INSERT_RATIO)
    ratio_target("read", LOGSHELF, "random read", TARGET_READ_RATIO)
    ratio_target(
        "insert", LOGSHELF_TX, "insert in transactions of 100 writes", TARGET_TRANSACTION_RATIO
    )
    r = find(doc, f"reopen-{TARGET_REOPEN_KEYS}", LOGSHELF)
    if ok(r):
        assert r is not None
        ms = value(r)
        out.append(
            (
                f"reopen + first read, {TARGET_REOPEN_KEYS:,} keys",
                f"<= {TARGET_REOPEN_MS:g} ms",
                f"{ms:.1f} ms",
                ms <= TARGET_REOPEN_MS,
            )
        )
    for size in reopen_sizes(doc):
        r = find(doc, f"memory-{size}", LOGSHELF)
        if ok(r):
            assert r is not None
            b = value(r)
            out.append(
                (
                    f"index memory, {size:,} keys",
                    f"<= {TARGET_INDEX_BYTES:g} B/key",
                    f"{b:.1f} B/key",
                    b <= TARGET_INDEX_BYTES,
                )
            )
    mine, theirs = find(doc, "multiprocess", LOGSHELF), find(doc, "multiprocess", DISKCACHE)
    if ok(mine) and ok(theirs):
        assert mine is not None and theirs is not None
        speedup = value(theirs) / value(mine)
        out.append(
            (
                f"{doc['settings']['procs']} processes writing",
                f">= {TARGET_MULTI_SPEEDUP:g}x diskcache",
                f"{speedup:.2f}x",
                speedup >= TARGET_MULTI_SPEEDUP,
            )
        )
    r = find(doc, "lock-wait", LOGSHELF)
    if ok(r):
        assert r is not None
        worst = r["extra"]["max_ms"]
        out.append(
            (
                "writer-lock wait, max",
                f"<= {TARGET_LOCK_WAIT_MS:g} ms",
                f"{worst:.1f} ms",
                worst <= TARGET_LOCK_WAIT_MS,
            )
        )
    r = find(doc, "disk-compact", LOGSHELF)
    if ok(r):
        assert r is not None
        x = ratio(doc, r)
        out.append(
            (
                "disk after overwrite, mix, delete half and compact()",
                f"<= {TARGET_DISK_RATIO:g}x live data",
                f"{x:.2f}x",
                x <= TARGET_DISK_RATIO,
            )
        )
    else:
        r = find(doc, "disk-delete", LOGSHELF)
        if ok(r):
            assert r is not None
            out.append(
                (
                    "disk after overwrite, mix, delete half and compaction",
                    f"<= {TARGET_DISK_RATIO:g}x live data",
                    f"{ratio(doc, r):.2f}x, no compact() in this logshelf",
                    None,
                )
            )
    return out


def targets_table(doc: Doc) -> Table:
    """The targets, measured and checked."""
    met = {True: "yes", False: "NO", None: "not measurable"}
    rows = [[what, limit, measured, met[m]] for what, limit, measured, m in targets(doc)]
    return Table(
        "logshelf against its targets",
        ["target", "limit", "measured", "met?"],
        rows,
    )


def noisy(doc: Doc, threshold: float = 0.25) -> list[str]:
    """Results whose repeats spread by more than ``threshold`` of their median."""
    lines = []
    for r in doc["results"]:
        if r["status"] == "ok" and r["unit"] in ("s", "ms") and spread(r) > threshold:
            lines.append(f"{r['workload']}/{r['adapter']} ({spread(r):.0%})")
    return lines


def all_tables(doc: Doc) -> list[Table]:
    """Every table, in the order the suite prints them."""
    tables = [ratio_table(doc), rate_table(doc)]
    for extra in (
        multiprocess_table(doc),
        durability_table(doc),
        lockwait_table(doc),
        disk_table(doc),
        compaction_table(doc),
        memory_table(doc),
    ):
        if extra is not None:
            tables.append(extra)
    tables.append(targets_table(doc))
    return tables
