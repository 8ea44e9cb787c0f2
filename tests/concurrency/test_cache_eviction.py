"""Several processes writing one size-bounded cache: every value read is the
value written for its key, and the bound holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import logshelf

SCRIPT = textwrap.dedent(
    """
    import hashlib, random, sys
    import logshelf

    path, name = sys.argv[1], sys.argv[2]
    def value(key):
        return hashlib.sha256(key.encode()).digest() * 32   # 1 KiB, derived from the key

    with logshelf.Cache(path, max_bytes=120_000) as cache:
        bound = 120_000 + cache.engine.options.max_segment_size
        for i in range(250):
            key = f"{name}-{i}"
            cache[key] = value(key)
            for j in random.sample(range(i + 1), min(i + 1, 3)):
                other = f"{random.choice('ab')}-{j}"
                got = cache.get(other)
                assert got is None or got == value(other), other
            size = cache.engine.stats()["segment_bytes"]
            # The other process may have written one entry since our check.
            assert size <= bound + 2048, size
    print("ok")
    """
)


def test_two_processes_evicting_one_cache(tmp_path):
    path = str(tmp_path / "cache")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, path, name], stdout=subprocess.PIPE, text=True
        )
        for name in "ab"
    ]
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        outs.append((proc.returncode, out.strip()))
    assert outs == [(0, "ok"), (0, "ok")]
    with logshelf.Cache(path) as cache:
        assert cache.engine.verify() == []
        assert (
            cache.engine.stats()["segment_bytes"] <= 120_000 + cache.engine.options.max_segment_size
        )
        assert 50 < len(cache) < 200
