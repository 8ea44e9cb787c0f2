"""Child process of test_killed_writer.py: ``python _writer_child.py JSON``.

Run by path with ``sys.executable`` (pytest never collects it), it opens the
store and writes forever until the parent kills it with SIGKILL. Protocol on
stdout, one flushed line each:

* ``ready`` once the store is open;
* ``I <json op>`` just before a write starts (its intent);
* ``A <seq>`` once that write has returned (its acknowledgement).

So the parent always knows every acknowledged write, and the one write that
may have been in flight when the kill landed. Every stored value carries the
``seq`` of the operation that wrote it (the batch id: all keys of one batch
share it), and its payload is derived from ``seq`` and the key, so the parent
can rebuild the exact expected value with :func:`make_value`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

SMALL_KEYS = [f"k{i:03d}" for i in range(150)]
BIG_KEYS = [f"big{i}" for i in range(4)]


def make_payload(seq: int, key: str, size: int) -> bytes:
    """Incompressible bytes determined by (seq, key, size)."""
    return random.Random(f"{seq}/{key}").randbytes(size)


def make_value(seq: int, key: str, size: int) -> dict[str, Any]:
    """The exact value operation ``seq`` stores under ``key``."""
    return {"batch": seq, "key": key, "payload": make_payload(seq, key, size)}


def choose_op(
    rng: random.Random, seq: int, live: set[str], big_left: int, big_max: int = 8 << 20
) -> dict[str, Any]:
    """The next operation: ``puts`` maps key -> payload size, ``dels`` lists keys."""
    r = rng.random()
    if r < 0.03:
        # A compaction: changes no key, so the model must read the same after
        # a kill at any moment inside it.
        return {"seq": seq, "kind": "compact", "puts": {}, "dels": []}
    if r < 0.07 and big_left > 0:
        return {
            "seq": seq,
            "kind": "big",
            "puts": {rng.choice(BIG_KEYS): rng.randint(big_max // 4, big_max)},
            "dels": [],
        }
    if r < 0.30:
        keys = rng.sample(SMALL_KEYS, 5)
        return {
            "seq": seq,
            "kind": "update",
            "puts": {k: rng.randint(0, 400) for k in keys},
            "dels": [],
        }
    if r < 0.42:
        keys = rng.sample(SMALL_KEYS, rng.randint(3, 6))
        dels = sorted((live & set(SMALL_KEYS)) - set(keys))
        return {
            "seq": seq,
            "kind": "txn",
            "puts": {k: rng.randint(0, 2000) for k in keys},
            "dels": rng.sample(dels, 1) if dels and rng.random() < 0.6 else [],
        }
    if r < 0.47:
        dels = sorted(live & set(SMALL_KEYS))
        if dels:
            return {"seq": seq, "kind": "del", "puts": {}, "dels": [rng.choice(dels)]}
    size = rng.choice([rng.randint(0, 200), rng.randint(1000, 30000)])
    return {"seq": seq, "kind": "put", "puts": {rng.choice(SMALL_KEYS): size}, "dels": []}


def apply_op(db: Any, op: dict[str, Any], values: dict[str, Any]) -> None:
    if op["kind"] in ("put", "big"):
        ((key, value),) = values.items()
        db[key] = value
    elif op["kind"] == "update":
        db.update(values)
    elif op["kind"] == "txn":
        with db.transaction():
            for key, value in values.items():
                db[key] = value
            for key in op["dels"]:
                del db[key]
    elif op["kind"] == "del":
        del db[op["dels"][0]]
    elif op["kind"] == "compact":
        db.compact()
    else:
        raise AssertionError(op)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    run(json.loads(sys.argv[1]), say)


def run(args: dict[str, Any], say: Callable[[str], None]) -> None:
    """Write forever, announcing each write before it starts and acknowledging
    it once it has returned (also the entry point of forked children)."""
    import logshelf

    rng = random.Random(args["seed"])
    db = logshelf.open(
        args["path"],
        "c",
        max_segment_size=args["max_segment_size"],
        durability=args["durability"],
        compression=args["compression"],
    )
    live = set(db.keys())
    big_left = args["big_cap"]
    say("ready")
    seq = args["seq0"]
    # Bounded, so that a child whose parent died (and so never kills it)
    # stops on its own: every parent kills its child within seconds.
    deadline = time.monotonic() + args.get("max_seconds", 300)
    while time.monotonic() < deadline:
        op = choose_op(rng, seq, live, big_left, args.get("big_max", 8 << 20))
        # Values are built before the intent line, so that the time between
        # intent and acknowledgement is the write itself.
        values = {k: make_value(seq, k, size) for k, size in op["puts"].items()}
        say("I " + json.dumps(op))
        apply_op(db, op, values)
        say(f"A {seq}")
        live.update(op["puts"])
        live.difference_update(op["dels"])
        if op["kind"] == "big":
            big_left -= 1
        seq += 1


if __name__ == "__main__":
    main()
