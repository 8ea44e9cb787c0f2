#!/usr/bin/env python3
"""logshelf against its own targets (issues 2 and 3): a shortcut into the suite.

This runs ``bench_peers.py`` restricted to the raw baseline, logshelf
(default, lz4, in transactions) and stdlib shelve, on the insert / read /
overwrite / mix / delete workloads and reopen + memory. ``--multi`` adds
diskcache, the 4-process write workload and the instrumented run that
measures logshelf's write latency and writer-lock waits (p50 / p99 / max).
Every other option is passed through unchanged::

    .venv/bin/python benchmarks/bench_store.py                # issue-2 targets
    .venv/bin/python benchmarks/bench_store.py --multi        # plus issue-3 targets
    .venv/bin/python benchmarks/bench_store.py --multi --quick

The method is described in ``benchmarks/README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import bench_peers

#: Systems of the issue-2 comparison.
SINGLE = ("raw", "logshelf", "logshelf-lz4", "logshelf-tx", "shelve")


def main(argv: Sequence[str] | None = None) -> int:
    """Translate ``--multi`` into a selection of the suite and run it."""
    args = list(sys.argv[1:] if argv is None else argv)
    multi = "--multi" in args
    args = [a for a in args if a != "--multi"]
    adapters = list(SINGLE) + (["diskcache"] if multi else [])
    workloads = ["basic", "reopen"] + (["multiprocess", "lockwait"] if multi else [])
    if "--adapters" not in args:
        args += ["--adapters", ",".join(adapters)]
    if "--workloads" not in args:
        args += ["--workloads", ",".join(workloads)]
    return bench_peers.main(args)


if __name__ == "__main__":
    sys.exit(main())
