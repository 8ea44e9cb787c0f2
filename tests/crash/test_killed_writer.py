"""A writer process killed with SIGKILL at random moments.

A child (``_writer_child.py``) writes single puts, 5-key ``update`` batches,
transactions with deletes, occasional 2-8 MB values and compactions (explicit,
and the automatic ones that small segments trigger), acknowledging each
completed write on stdout. The parent kills it at a random moment (a random
delay, a random number of acknowledgements, or just after a large write
started), then checks with a fresh handle that every acknowledged write is
present with its exact value, that the one write that may have been in flight
is visible entirely or not at all, that ``verify()`` finds nothing wrong, and
that writing continues afterwards.

Children are either fresh interpreters (the realistic case, ~15 kills) or
forks of the test process, which start in a millisecond and so make the
200-kill tier of the default run affordable.
"""

from __future__ import annotations

import functools
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf import _index_file
from logshelf._lazy_index import LazyIndex

from . import _writer_child
from ._writer_child import make_value

CHILD = Path(__file__).with_name("_writer_child.py")
STARTUP = 60.0  # generous: a loaded 2-core machine
ABSENT = object()


class _Forked:
    """The slice of ``subprocess.Popen`` the tests use, for a forked child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {self.pid} did not exit")
            time.sleep(0.001)
        assert self.returncode is not None
        return self.returncode


class Child:
    """One writer process and the lines it printed.

    ``fork=True`` forks this (already warmed-up) test process instead of
    starting an interpreter; the child runs the same writer loop and leaves
    only through SIGKILL or ``os._exit``.
    """

    def __init__(self, args: dict[str, Any], stderr_path: Path, fork: bool = False) -> None:
        self.stderr_path = stderr_path
        self.proc: Any
        if fork:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                _run_forked(args, read_end, write_end, stderr_path)
            os.close(write_end)
            self.proc = _Forked(pid)
            self.fd = read_end
            self._owned_fd: int | None = read_end
        else:
            with open(stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, str(CHILD), json.dumps(args)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    bufsize=0,
                )
            assert self.proc.stdout is not None
            self.fd = self.proc.stdout.fileno()
            self._owned_fd = None
        self.buf = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self, timeout: float) -> None:
        """Read whatever arrives within ``timeout`` seconds (at least one poll)."""
        if self.eof:
            return
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        *complete, self.buf = self.buf.split(b"\n")
        self.lines.extend(line.decode() for line in complete)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return bool(predicate())
            self.pump(min(left, 0.05))
        return True

    def died_on_its_own(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"child exited with {self.proc.returncode}: {self.stderr_path.read_text()[-3000:]}"

    def kill_and_drain(self) -> None:
        """SIGKILL, reap, and read every line it managed to print."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not self.eof and time.monotonic() < deadline:
            self.pump(0.5)
        assert self.eof, "the child's stdout did not close after it died"
        if self._owned_fd is not None:
            os.close(self._owned_fd)
        else:
            assert self.proc.stdout is not None
            self.proc.stdout.close()

    def acks_and_pending(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The acknowledged operations in order, and the unacknowledged one."""
        acked: list[dict[str, Any]] = []
        pending: dict[str, Any] | None = None
        for line in self.lines:
            if line.startswith("I "):
                assert pending is None, "two intents without an acknowledgement"
                pending = json.loads(line[2:])
            elif line.startswith("A "):
                assert pending is not None and int(line[2:]) == pending["seq"], line
                acked.append(pending)
                pending = None
            else:
                assert line == "ready", line
        return acked, pending


def _run_forked(args: dict[str, Any], read_end: int, write_end: int, stderr_path: Path) -> None:
    """Body of a forked child: the writer loop with stdout on the pipe."""
    try:
        os.close(read_end)
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(err, 2)

        def say(line: str) -> None:
            data = (line + "\n").encode()
            while data:
                data = data[os.write(write_end, data) :]

        _writer_child.run(args, say)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(70)


@dataclass
class Model:
    """What the store must hold: key -> (seq, payload size) of its last write."""

    state: dict[str, tuple[int, int]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def apply(self, op: dict[str, Any]) -> None:
        for key, size in op["puts"].items():
            self.state[key] = (op["seq"], size)
        for key in op["dels"]:
            self.state.pop(key, None)

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


@functools.lru_cache(maxsize=64)
def _expected(seq: int, key: str, size: int) -> Any:
    # Checks after every kill rebuild the same multi-MB values again and again.
    return make_value(seq, key, size)


def _value(key: str, state: tuple[int, int] | None) -> Any:
    return ABSENT if state is None else _expected(state[0], key, state[1])


def _verify(store: Path, model: Model, pending: dict[str, Any] | None, flag: str = "r") -> bool:
    """Check the store against the model; return True when ``pending`` is visible.

    Every acknowledged write must be present exactly; the pending operation
    (if any) must be visible for all of its keys or for none.
    """
    new_states: dict[str, tuple[int, int] | None] = {}
    if pending is not None:
        new_states.update({k: (pending["seq"], size) for k, size in pending["puts"].items()})
        new_states.update(dict.fromkeys(pending["dels"]))
    votes: dict[str, list[str]] = {"new": [], "old": []}
    with logshelf.open(store, flag) as db:
        if isinstance(db._engine._view.index, LazyIndex):
            model.count("opened from the INDEX file")
        # Each key read alone first: probes of the INDEX file's table when
        # the handle opened from it, answered by the full index afterwards.
        alone = {key: db.get(key, ABSENT) for key in sorted(set(model.state) | set(new_states))}
        assert db.verify() == []
        keys = set(db.keys())
        assert len(db) == len(keys)
        for key in sorted(keys | set(model.state) | set(new_states)):
            got = db[key] if key in keys else ABSENT
            assert (key in db) == (got is not ABSENT), key
            assert alone.get(key, got) == got, f"{key}: read {_describe(alone[key])} alone"
            old = _value(key, model.state.get(key))
            if key in new_states:
                new = _value(key, new_states[key])
                is_old, is_new = got == old, got == new
                assert is_old or is_new, (
                    f"{key}: read {_describe(got)}; acknowledged {_describe(old)}, "
                    f"in flight {_describe(new)}"
                )
                if is_old != is_new:
                    votes["new" if is_new else "old"].append(key)
            else:
                assert got == old, f"{key}: read {_describe(got)}, acknowledged {_describe(old)}"
    assert not (votes["new"] and votes["old"]), (
        f"operation {pending and pending['seq']} ({pending and pending['kind']}) is partly "
        f"visible: applied for {votes['new']}, not for {votes['old']}"
    )
    return bool(votes["new"])


def _describe(value: Any) -> str:
    if value is ABSENT:
        return "<absent>"
    if isinstance(value, dict) and "payload" in value:
        return f"<batch {value.get('batch')} key {value.get('key')} {len(value['payload'])} B>"
    return repr(value)[:80]


def _quarantine_files(store: Path) -> int:
    qdir = store / fmt.QUARANTINE_DIR
    return len(list(qdir.iterdir())) if qdir.is_dir() else 0


def _newest_segments_size(store: Path) -> int:
    """Total size of the two newest segment files (a rollover may be under way)."""
    names = sorted(n for n in os.listdir(store) if n.endswith(".log"))[-2:]
    total = 0
    for name in names:
        try:
            total += os.stat(store / name).st_size
        except FileNotFoundError:
            pass
    return total


def _one_round(
    store: Path, model: Model, rng: random.Random, round_no: int, tmp_path: Path, fork: bool
) -> None:
    """Start a writer, kill it at a random moment, verify, update the model."""
    args = {
        "path": str(store),
        "seed": rng.randrange(1 << 30),
        "seq0": (round_no + 1) * 10_000_000,
        # Small segments: frequent rollovers and automatic compactions.
        "max_segment_size": rng.choice([128 << 20, 1 << 20, 64 << 10, 16 << 10]),
        "durability": rng.choice(["none", "none", "none", "always"]),
        "compression": rng.choice([None, None, "lz4"]),
        "big_cap": rng.choice([0, 1, 1, 2]),
        # Forked rounds are the many cheap ones: large values of 1-4 MB.
        "big_max": (4 << 20) if fork else (8 << 20),
    }
    mode = rng.choice(["delay", "delay", "acks", "big", "mid-write", "mid-write"])
    if mode in ("big", "mid-write"):
        args["big_cap"] = max(args["big_cap"], 1)
    child = Child(args, tmp_path / f"child-{round_no}.err", fork=fork)
    try:
        assert child.wait_for(lambda: "ready" in child.lines, STARTUP), (
            child.died_on_its_own() or "child did not open the store in time"
        )
        if mode == "delay":
            deadline = time.monotonic() + rng.uniform(0.0, 0.1 if fork else 0.3)
            while time.monotonic() < deadline and not child.eof:
                child.pump(deadline - time.monotonic())
        elif mode == "acks":
            target = rng.randint(0, 80 if fork else 300)
            child.wait_for(lambda: sum(x.startswith("A ") for x in child.lines) >= target, 20)
        else:
            # Kill just after a large write was announced (mode "big"), or
            # while its bytes are visibly landing in the segment ("mid-write").
            started = child.wait_for(
                lambda: (
                    bool(child.lines)
                    and child.lines[-1].startswith("I ")
                    and '"kind": "big"' in child.lines[-1]
                ),
                10,
            )
            if started and mode == "big":
                time.sleep(rng.uniform(0.0, 0.025))
            elif started:
                baseline = _newest_segments_size(store)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    if _newest_segments_size(store) - baseline > (64 << 10):
                        break
        assert child.died_on_its_own() is None, child.died_on_its_own()
    finally:
        child.kill_and_drain()
    assert child.proc.returncode == -signal.SIGKILL, child.stderr_path.read_text()[-3000:]

    acked, pending = child.acks_and_pending()
    for op in acked:
        model.apply(op)
    model.stats["acknowledged writes"] = model.stats.get("acknowledged writes", 0) + len(acked)
    visible = _verify(store, model, pending)
    if pending is not None:
        model.count(f"in-flight {pending['kind']} {'visible' if visible else 'lost'}")
        if visible:
            model.apply(pending)
    if round_no % 4 == 3:
        # The parent writes too: recovery leaves the store writable.
        op = {
            "seq": (round_no + 1) * 10_000_000 - 1,
            "kind": "update",
            "puts": {"parent-a": 10, "parent-b": 20},
            "dels": [],
        }
        with logshelf.open(store, "w") as db:
            db.update({k: make_value(op["seq"], k, s) for k, s in op["puts"].items()})
        model.apply(op)
        _verify(store, model, None)


def _run(
    tmp_path: Path, rounds: int, seed: int, rounds_per_store: int, fork: bool = False
) -> Model:
    rng = random.Random(seed)
    model = Model()
    # Children write their stderr next to the stores; the directory must exist
    # before the first fork (a sub-directory of tmp_path does not yet).
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = tmp_path / "store-0"
    for round_no in range(rounds):
        if round_no and round_no % rounds_per_store == 0:
            _finish(store, model)
            shutil.rmtree(store)
            store = tmp_path / f"store-{round_no}"
            model.state.clear()
        _one_round(store, model, rng, round_no, tmp_path, fork)
    _finish(store, model)
    return model


def _finish(store: Path, model: Model) -> None:
    """A final write after all the crashes, checked after a clean reopen."""
    op = {"seq": 1, "kind": "update", "puts": {"final-a": 5, "final-b": 6}, "dels": []}
    with logshelf.open(store, "w") as db:
        db.update({k: make_value(1, k, s) for k, s in op["puts"].items()})
    model.stats["quarantined tails"] = model.stats.get("quarantined tails", 0) + _quarantine_files(
        store
    )
    model.apply(op)
    _verify(store, model, None)
    _verify(store, model, None, flag="w")


def _in_flight(model: Model, kind: str = "") -> int:
    return sum(v for k, v in model.stats.items() if k.startswith(f"in-flight {kind}"))


@pytest.mark.timeout(30)
def test_killed_writer_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    """~15 kills of a freshly started interpreter: after each SIGKILL every
    acknowledged write reads back exactly, the in-flight batch is
    all-or-none, verify() is clean, and writing continues."""
    model = _run(tmp_path, rounds=15, seed=20240501, rounds_per_store=15)
    assert _in_flight(model) >= 5, model.stats


@pytest.mark.timeout(180)
def test_200_kills_of_forked_writers_keep_every_acknowledged_write(tmp_path: Path) -> None:
    """The CI tier of issue 4: 200 kills, same guarantees, children forked
    from this process so that each round costs a fraction of a second."""
    model = _run(tmp_path, rounds=200, seed=424242, rounds_per_store=50, fork=True)
    assert _in_flight(model) >= 80, model.stats
    # Some kills landed inside a compaction (the op was announced, not finished).
    assert _in_flight(model, "compact") >= 1, model.stats


@pytest.mark.timeout(120)
def test_kills_of_forked_writers_with_an_index_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same where every writer's close writes the INDEX file (as at
    MIN_KEYS keys; with TAIL_LIMIT 0 even a handle opened from the file
    rewrites it) and opens use it: children that open from the file are
    killed, and the parent reads from it when it still describes the store
    (each key alone first: a probe of the table). The power-loss sweep
    (test_power_loss_with_an_index_file) covers tails after the file."""
    monkeypatch.setattr(_index_file, "MIN_KEYS", 1)
    monkeypatch.setattr(_index_file, "TAIL_LIMIT", 0)
    model = _run(tmp_path, rounds=40, seed=8642, rounds_per_store=20, fork=True)
    assert _in_flight(model) >= 12, model.stats
    # About one open in three: a child's rollover or compaction makes the
    # file describe an older MANIFEST, and the next open ignores it.
    assert model.stats["opened from the INDEX file"] >= 6, model.stats


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killed_writer_many_kills_keep_every_acknowledged_write(tmp_path: Path) -> None:
    """Slow tier: 50 kills of fresh interpreters and 150 of forked ones, over
    several stores; same guarantees. (With the default tier, 415 kills per CI run.)"""
    model = _run(tmp_path, rounds=50, seed=987654321, rounds_per_store=25)
    assert _in_flight(model) >= 15, model.stats
    # Kills inside large writes really left torn tails for the next writer to cut.
    assert model.stats["quarantined tails"] >= 1, model.stats
    forked = _run(tmp_path / "forked", rounds=150, seed=1357, rounds_per_store=75, fork=True)
    assert _in_flight(forked) >= 30, forked.stats
