#!/usr/bin/env python3
"""What signing (``open(..., key=)``, docs/security.md) costs.

Run: ``python benchmarks/bench_signing.py`` (about a minute); ``--quick``
for a smoke run.

* **Small records**: single-key inserts and random reads of 100-byte
  values, in a store opened without and with a key. The two alternate over
  ``--rounds`` short rounds and the fastest round of each is kept, so that
  a burst of other work on the machine hits both alike. Microseconds per
  operation and the ratio.
* **Large values**: the time to check the signature of a stored value of
  ``--large-mib`` MiB (bytes, and a numpy array stored out of band), as
  GiB/s: :meth:`Signer.verify` on the stored bytes, without the read.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import logshelf
from logshelf._signing import Signer, key_check

KEY = b"benchmark key of 32 bytes ......"


def _round(directory: Path, key: bytes | None, count: int, seed: int) -> tuple[float, float]:
    """Seconds per insert and per read of one round."""
    path = directory / f"store-{seed}-{bool(key)}"
    value = os.urandom(100)
    keys = [f"k{i}" for i in range(count)]
    order = keys[:]
    random.Random(seed).shuffle(order)
    with logshelf.open(path, "n", key=key) as db:
        start = time.perf_counter()
        for k in keys:
            db[k] = value
        insert = time.perf_counter() - start
        start = time.perf_counter()
        for k in order:
            db[k]
        read = time.perf_counter() - start
    shutil.rmtree(path)
    return insert / count, read / count


def small_records(directory: Path, count: int, rounds: int) -> None:
    best = {None: [float("inf")] * 2, KEY: [float("inf")] * 2}
    for seed in range(rounds):
        for key in (None, KEY):
            insert, read = _round(directory, key, count, seed)
            best[key] = [min(best[key][0], insert), min(best[key][1], read)]
    print(f"\nsmall records (100 bytes), best of {rounds} rounds of {count}: us per op")
    for i, name in enumerate(("insert", "read")):
        plain, signed = best[None][i] * 1e6, best[KEY][i] * 1e6
        ratio = signed / plain
        print(f"  {name:7} unsigned {plain:6.2f}   signed {signed:6.2f}   ratio {ratio:5.2f}x")


def large_values(mib: int, repeats: int) -> None:
    identity = os.urandom(16)
    signer = Signer([KEY], identity, key_check(KEY, identity), "bench")
    key = b"large"
    value = os.urandom(mib << 20)
    codec, signed = signer.sign(key, 0, value, 0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        body = signer.verify(key, codec, signed, 0, ("bench", 0))
        best = min(best, time.perf_counter() - start)
    assert len(body) == len(value)
    print(
        f"\nsignature check of a {mib} MiB value: {mib / 1024 / best:.2f} GiB/s (best of {repeats})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="a smoke run at tiny sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds, args.large_mib = 500, 2, 4
    directory = Path(tempfile.mkdtemp(prefix="bench-signing-"))
    try:
        small_records(directory, args.count, args.rounds)
        large_values(args.large_mib, 3)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
