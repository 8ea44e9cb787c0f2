#!/usr/bin/env python3
"""Bar charts (PNG) of a ``bench_peers.py --json`` results file.

    .venv/bin/python benchmarks/plot.py results.json docs/img/
    .venv/bin/python benchmarks/plot.py results.json docs/img/ --markdown tables.md

One chart per workload: each system's time per operation relative to the
raw baseline (lower is better, log scale, 1x marked), logshelf's bars in
their own colour, and a text label where a system has no number (not
installed, failed its persistence check, lost writes). Also the size on
disk relative to the live data, and memory per key. ``--markdown`` writes
the suite's summary tables as Markdown for the docs. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import report

#: Bar colours: logshelf's variants, the raw baseline, everyone else.
LOGSHELF_COLOUR = "#d62728"
RAW_COLOUR = "#7f7f7f"
PEER_COLOUR = "#1f77b4"


def bars_for(
    doc: report.Doc, workload: str, absolute: bool = False
) -> list[tuple[str, float | None, str]]:
    """``(system label, bar length or None, text)`` for every selected system
    that takes part in ``workload``: the ratio to the raw baseline (or to the
    live data, for sizes on disk), or with ``absolute`` the value itself."""
    out: list[tuple[str, float | None, str]] = []
    for name in report.adapter_names(doc):
        r = report.find(doc, workload, name)
        facts = doc["adapters"][name]
        if r is None:
            if facts.get("missing") and _takes_part(facts, workload):
                out.append((report.label(doc, name), None, "not installed"))
            continue
        cell = report.status_cell(doc, workload, name)
        if cell is not None:
            note = {"FAIL": "persistence check failed", "skip": r["detail"] or "skipped"}.get(
                cell, cell
            )
            out.append((report.label(doc, name), None, note))
            continue
        x = report.value(r) if absolute else report.ratio(doc, r)
        if math.isnan(x):
            out.append((report.label(doc, name), None, "no baseline"))
        elif absolute:
            out.append((report.label(doc, name), x, f"{x:,.0f} {r['unit']}"))
        else:
            out.append((report.label(doc, name), x, report.fmt_ratio(x) + report.marker(r)))
    return out


def _takes_part(facts: dict[str, Any], workload: str) -> bool:
    groups = set(facts.get("workloads", []))
    if workload.startswith(("reopen-", "memory-", "rss-")):
        return "reopen" in groups
    if workload == "multiprocess":
        return "multiprocess" in groups and bool(facts.get("multiprocess"))
    if workload.startswith("large") or workload == "disk-large":
        return "large" in groups
    if workload == "durability":
        return "durability" in groups
    return "basic" in groups


def charts(doc: report.Doc) -> list[tuple[str, str, str, str]]:
    """``(file stem, workload id, title, x-axis label)`` of every chart to
    draw. Memory charts (``rss-*``) show bytes per key, the others ratios."""
    per_op = "time per operation / raw baseline's (log scale, lower is better)"
    out = [
        (f"bench-{w}", w, heading, per_op)
        for w, heading in report.OP_WORKLOADS.items()
        if report.any_result(doc, w)
    ]
    for size in report.reopen_sizes(doc):
        out.append(
            (
                f"bench-reopen-{size}",
                f"reopen-{size}",
                f"reopen + first read, {size:,} keys",
                "time / raw baseline's (log scale, lower is better)",
            )
        )
        out.append(
            (
                f"bench-memory-{size}",
                f"rss-{size}",
                f"resident memory after reopen + first read, {size:,} keys",
                "growth of the resident set, bytes per key (log scale, lower is better)",
            )
        )
    if report.any_result(doc, "multiprocess"):
        procs = doc["settings"]["procs"]
        out.append(
            (
                "bench-multiprocess",
                "multiprocess",
                f"{procs} processes writing at once",
                "time per record / raw single-process insert's (log scale, lower is better)",
            )
        )
    if report.any_result(doc, "durability"):
        out.append(("bench-durability", "durability", "logshelf durability modes", per_op))
    if report.any_result(doc, "disk-delete"):
        out.append(
            (
                "bench-disk",
                "disk-delete",
                "size on disk after insert, overwrite, mix, delete half",
                "allocated bytes / live data (log scale, lower is better)",
            )
        )
    return out


def draw(doc: report.Doc, workload: str, title: str, xlabel: str, path: str) -> None:
    """Draw one horizontal bar chart of ratios and save it as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = bars_for(doc, workload, absolute=workload.startswith("rss-"))
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    known = [v for v in values if v is not None and v > 0] or [1.0]
    low = min([*known, 1.0]) / 2
    high = max([*known, 1.0]) * 3
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(bars) + 1.4), dpi=100)
    ys = range(len(bars))
    colours = [
        LOGSHELF_COLOUR
        if lbl.startswith("logshelf")
        else RAW_COLOUR
        if lbl.startswith("raw")
        else PEER_COLOUR
        for lbl in labels
    ]
    widths = [v if v is not None and v > 0 else 0 for v in values]
    ax.barh(list(ys), widths, left=0, color=colours, height=0.7)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    if not workload.startswith("rss-"):
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    for y, (_, v, text) in zip(ys, bars, strict=True):
        ax.text((v if v and v > low else low) * 1.08, y, text, va="center", fontsize=8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=9)
    s, env = doc["settings"], doc["environment"]
    ax.set_title(
        f"{title}\nN={s['n']:,}, median of {s['repeats']}; Python {env['python']}, "
        f"{env['cpus']} CPUs; logshelf git {env['git']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Draw every chart of a results file into a directory."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("results", help="JSON written by bench_peers.py --json")
    parser.add_argument("outdir", help="directory for the PNG files (created if needed)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        doc = json.load(f)
    os.makedirs(args.outdir, exist_ok=True)
    for stem, workload, title, xlabel in charts(doc):
        path = os.path.join(args.outdir, stem + ".png")
        draw(doc, workload, title, xlabel, path)
        print(path)
    if args.markdown:
        with open(args.markdown, "w") as f:
            for table in report.all_tables(doc):
                f.write(table.markdown() + "\n")
        print(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
