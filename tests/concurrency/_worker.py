"""Child-process side of the concurrency tests: ``python _worker.py COMMAND JSON``.

Run by path with ``sys.executable`` (never imported by pytest: the name does not
start with ``test_``), so every child is an independent interpreter.

Protocol on the pipes, one line each:

* ``ready`` on stdout once the store is open; the worker then waits for a
  ``go`` line on stdin (a start barrier, so that workers really overlap).
  End-of-file on stdin instead of ``go`` makes the worker exit with status 3,
  so a dead parent never leaves a worker running.
* other progress lines (``locked``, ``released``, ``half``, ...) as named below.
* ``result <json>`` as the last line on success; exit status 0.

Any exception prints a traceback on stderr and exits with status 1.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import logshelf

PAD = "compressible padding " * 20  # ~400 bytes: above lz4's compress_min


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:
        # EOF (parent gone) or a protocol error: leave without touching anything.
        sys.stderr.write(f"expected {word!r} on stdin, got {line!r}\n")
        sys.exit(3)


def open_store(a: dict[str, Any], flag: str = "c") -> logshelf.Shelf:
    if a.get("remap_chunk"):
        # Small steps: handles that follow a compaction's switch stay mid-remap
        # across many operations (``_remap``).
        from logshelf import _remap

        _remap.CHUNK = a["remap_chunk"]
    return logshelf.open(
        a["store"],
        flag,
        compression=a.get("compression"),
        lock_backend=a.get("lock_backend", "auto"),
        lock_timeout=a.get("lock_timeout"),
        max_segment_size=a.get("max_segment_size", 128 << 20),
    )


def value_for(prefix: str, i: int) -> dict[str, Any]:
    """The value the distinct-keys writers store under ``f"{prefix}{i}"``."""
    return {"writer": prefix, "i": i, "pad": PAD}


def cmd_write_keys(a: dict[str, Any]) -> dict[str, Any]:
    """Write ``count`` distinct keys one at a time, then read them all back."""
    prefix, count = a["prefix"], a["count"]
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        for i in range(count):
            db[f"{prefix}{i}"] = value_for(prefix, i)
        wrong = [i for i in range(count) if db.get(f"{prefix}{i}") != value_for(prefix, i)]
        return {"wrong": wrong[:10], "len": len(db)}


def cmd_increment(a: dict[str, Any]) -> dict[str, Any]:
    """``count`` read-modify-write increments of one key, each in a transaction."""
    key, count = a["key"], a["count"]
    seen = []
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        for _ in range(count):
            with db.transaction():
                n = db.get(key, 0) + 1
                db[key] = n
            seen.append(n)
    # Every value this process wrote must be distinct and increasing.
    return {"first": seen[0], "last": seen[-1], "increasing": seen == sorted(set(seen))}


def batch_items(writer: int, i: int) -> dict[str, Any]:
    """The keys one batch of the atomic-visibility test commits together."""
    items: dict[str, Any] = {f"b{writer}.{i}:{j}": ((writer, i), j) for j in range(5)}
    items[f"last{writer}"] = i
    return items


def cmd_batch_writer(a: dict[str, Any]) -> dict[str, Any]:
    """Commit ``batches`` batches in transactions; pause after the first half
    (prints ``half``, waits for ``go``) so a reader is sure to see a mid state."""
    writer, batches = a["writer"], a["batches"]
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        for i in range(batches):
            if i == batches // 2:
                say("half")
                wait_for("go")
            with db.transaction():
                for key, value in batch_items(writer, i).items():
                    db[key] = value
    return {}


def cmd_batch_reader(a: dict[str, Any]) -> dict[str, Any]:
    """Poll one read-only handle, never reopened, while batch writers run.

    Checks on every round: each visible batch is whole, each writer's visible
    batches are a prefix 0..k of its commit order, and k never goes back.
    Prints ``saw-half`` once every writer's first half is visible, and stops
    after ``stop`` on stdin followed by a final round.
    """
    import selectors

    writers, batches = a["writers"], a["batches"]
    half = batches // 2
    db = open_store(a, "r")
    high = [-1] * writers  # highest batch seen so far, per writer
    rounds = 0
    states: set[tuple[int, ...]] = set()
    said_half = False
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    say("ready")
    stopping = False
    # Bounded: the parent sends "stop" within seconds; a reader left behind
    # by a dead parent ends on its own.
    deadline = time.monotonic() + a.get("max_seconds", 300)
    while True:
        if time.monotonic() > deadline:
            raise AssertionError("no 'stop' arrived: the parent is gone or stuck")
        if not stopping and sel.select(timeout=0):
            line = sys.stdin.readline()
            if line.strip() != "stop":
                sys.stderr.write(f"expected 'stop', got {line!r}\n")
                sys.exit(3)
            stopping = True  # one more full round after the writers finished
        rounds += 1
        keys = list(db)  # one snapshot
        parts: dict[tuple[int, int], set[int]] = {}
        lasts = set()
        for key in keys:
            if key.startswith("last"):
                lasts.add(int(key[4:]))
                continue
            head, j = key[1:].split(":")
            w, i = head.split(".")
            parts.setdefault((int(w), int(i)), set()).add(int(j))
        for (w, i), js in parts.items():
            if js != set(range(5)):
                raise AssertionError(f"round {rounds}: batch {(w, i)} partly visible: {sorted(js)}")
        for w in range(writers):
            visible = sorted(i for (ww, i) in parts if ww == w)
            if visible != list(range(len(visible))):
                raise AssertionError(f"round {rounds}: writer {w} batches not a prefix: {visible}")
            top = len(visible) - 1
            if top < high[w]:
                raise AssertionError(f"round {rounds}: writer {w} went back {high[w]} -> {top}")
            if (top >= 0) != (w in lasts):
                raise AssertionError(f"round {rounds}: writer {w} last key disagrees with batches")
            high[w] = top
            # Later reads (each one refreshes) can only show more.
            last = db.get(f"last{w}", -1)
            if last < top:
                raise AssertionError(f"round {rounds}: last{w}={last} behind visible batch {top}")
            if last >= 0:
                want = {k: v for k, v in batch_items(w, last).items() if k.startswith("b")}
                got = db.get_many(want)
                if got != want:
                    raise AssertionError(f"round {rounds}: batch {(w, last)} reads {got}")
        states.add(tuple(high))
        if not said_half and all(h >= half - 1 for h in high):
            said_half = True
            say("saw-half")
        if stopping:
            break
    final_len = len(db)
    db.close()
    return {
        "rounds": rounds,
        "states": len(states),
        "high": high,
        "len": final_len,
        "said_half": said_half,
    }


def cmd_hold_transaction(a: dict[str, Any]) -> dict[str, Any]:
    """Commit ``committed`` keys, then enter a transaction, buffer writes of
    ``pending`` keys, print ``locked`` and sleep until killed."""
    with open_store(a) as db:
        db.update(dict.fromkeys(a["committed"], "committed"))
        with db.transaction():
            for key in a["pending"]:
                db[key] = "pending"
            say("locked")
            time.sleep(a.get("sleep", 600))
    return {}


def cmd_fork_and_hold(a: dict[str, Any]) -> dict[str, Any]:
    """Enter a transaction, fork a child that just sleeps (it never touches the
    store), print ``locked <child pid>`` and sleep until killed."""
    import os

    with open_store(a) as db, db.transaction():
        db["pending"] = "pending"
        pid = os.fork()
        if pid == 0:
            time.sleep(a.get("child_sleep", 30))
            os._exit(0)
        say(f"locked {pid}")
        time.sleep(600)
    return {}


def cmd_hold_filelock(a: dict[str, Any]) -> dict[str, Any]:
    """Hold ``filelock.FileLock(path)`` until ``release`` arrives on stdin."""
    import filelock

    lock = filelock.FileLock(a["path"])
    lock.acquire(timeout=a.get("timeout", 30))
    say("locked")
    wait_for("release")
    lock.release()
    say("released")
    wait_for("exit")
    return {}


def cmd_try_filelock(a: dict[str, Any]) -> dict[str, Any]:
    """Try ``filelock.FileLock(path)`` with a timeout; report what happened."""
    import filelock

    lock = filelock.FileLock(a["path"])
    start = time.monotonic()
    try:
        lock.acquire(timeout=a["timeout"])
    except filelock.Timeout:
        return {"acquired": False, "waited": time.monotonic() - start}
    lock.release()
    return {"acquired": True, "waited": time.monotonic() - start}


def cmd_try_write(a: dict[str, Any]) -> dict[str, Any]:
    """Open the store (``ready``), then on ``go`` make one write with the
    handle's ``lock_timeout``; report success or the timeout.

    The handle is opened first because opening a writable handle also takes
    the writer lock briefly."""
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        start = time.monotonic()
        try:
            db[a["key"]] = a["value"]
        except logshelf.LockTimeoutError as exc:
            return {"written": False, "error": str(exc), "waited": time.monotonic() - start}
        return {"written": True, "waited": time.monotonic() - start}


def churn_value(writer: int, seq: int) -> dict[str, Any]:
    """What churn writer ``writer`` stores at its ``seq``-th write."""
    return {"writer": writer, "seq": seq, "pad": PAD[: seq % 300]}


def _all_done(db: logshelf.Shelf, writers: int) -> bool:
    return all(f"done-{w}" in db for w in range(writers))


def cmd_churn_writer(a: dict[str, Any]) -> dict[str, Any]:
    """Overwrite a few keys again and again and delete some, so that most data
    is dead (food for compaction); read every write back at once. Returns the
    final state of this writer's keys."""
    w = a["writer"]
    keys = [f"c{w}-{i}" for i in range(a["keys"])]
    final: dict[str, Any] = {}
    stale: list[str] = []
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        for seq in range(a["writes"]):
            key = keys[seq % len(keys)]
            if seq % 11 == 10 and key in final:
                del db[key]
                del final[key]
                if key in db:
                    stale.append(f"{key} still present after its delete at {seq}")
                continue
            value = churn_value(w, seq)
            if seq % 5 == 0:
                with db.transaction():
                    db[key] = value
            else:
                db[key] = value
            final[key] = value
            got = db.get(key)
            if got != value:
                stale.append(f"{key}: wrote seq {seq}, read back {got!r:.80}")
        db[f"done-{w}"] = True
    return {"final": final, "stale": stale[:20]}


def cmd_monotonic_reader(a: dict[str, Any]) -> dict[str, Any]:
    """Read every churn key until all writers are done; a key's ``seq`` must
    never go backwards (an older value coming back is a resurrected one)."""
    seen: dict[str, int] = {}
    backwards: list[str] = []
    passes = 0
    with open_store(a, "r") as db:
        say("ready")
        wait_for("go")
        deadline = time.monotonic() + a["max_seconds"]
        while time.monotonic() < deadline:
            done = _all_done(db, a["writers"])
            for w in range(a["writers"]):
                for i in range(a["keys"]):
                    key = f"c{w}-{i}"
                    value = db.get(key)
                    if value is None:
                        continue
                    if value["seq"] < seen.get(key, -1):
                        backwards.append(f"{key}: seq {value['seq']} after {seen[key]}")
                    seen[key] = value["seq"]
            passes += 1
            if done:
                break
        problems = db.verify()
    return {"backwards": backwards[:20], "passes": passes, "verify": problems}


def cmd_compactor(a: dict[str, Any]) -> dict[str, Any]:
    """Compact again and again until all writers are done."""
    compactions = 0
    with open_store(a) as db:
        say("ready")
        wait_for("go")
        deadline = time.monotonic() + a["max_seconds"]
        while time.monotonic() < deadline and not _all_done(db, a["writers"]):
            if db.compact().compacted:
                compactions += 1
            time.sleep(a.get("pause", 0.0))
    return {"compactions": compactions}


COMMANDS = {name[4:]: fn for name, fn in globals().items() if name.startswith("cmd_")}


def main() -> None:
    command, args = sys.argv[1], json.loads(sys.argv[2])
    result = COMMANDS[command](args)
    say("result " + json.dumps(result))


if __name__ == "__main__":
    main()
