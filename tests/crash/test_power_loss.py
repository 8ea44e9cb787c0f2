"""Simulated power loss: drop or tear every unsynced write and directory change.

A workload of puts, ``update()`` batches, transactions, deletes, ``clear()``,
explicit ``sync()`` calls, close/reopen, rollovers (``max_segment_size``
4096) and compactions (explicit ones, and the automatic ones that small
segments trigger) runs on a :class:`~tests.crash._powerloss.SimulatedDisk`,
which models what is durable. Before every state-changing file operation the model is
frozen: a power loss at that instant could leave any of the images
:func:`~tests.crash._powerloss.build_image` derives from it (only synced
data, everything, torn appends, sizes grown over zeros or garbage; unsynced
directory entries dropped, kept, kept in part). Each distinct image is
materialised in a fresh directory and opened writable, and must:

* open without error;
* hold exactly the state after some prefix of the batches: never half a
  batch, never a value that was not written;
* with ``durability="always"``, hold every acknowledged batch; in every
  mode, every batch acknowledged before a returned ``sync()`` or ``close()``;
* pass ``verify()``, accept a write, and keep all of it over a normal reopen;
* (``crash_recovery``) survive a second power loss at any operation of that
  first open, still holding what it found;
* (``probe_first``, stores with an INDEX file) read each key alone as the
  full index reads it, and read the same when a reader opens the image
  before any writer.

Freezing the model at every operation of one run is equivalent to crashing
the run there, because nothing after the crash reaches the disk;
``test_raising_at_each_operation_matches_the_snapshots`` checks that by
really raising :class:`~tests.crash._powerloss.PowerLoss` at operation N, for
every N, and comparing the frozen model with the snapshot.

**The model's assumption.** The unsynced changes of one file reach the disk
in the order they were made (a crash keeps a prefix of them, the last append
possibly torn, the size possibly grown over zeros or garbage). That is what
the "consistent prefix" promise of ``docs/durability.md`` rests on: a log
replayed up to its first invalid record yields a prefix of the batches
exactly when no later record survives without an earlier one. Page cache
writeback of an append-only file is usually, but not provably, in file
order; when it is not (``test_reordered_writeback_*`` below), a surviving
later record behind a lost earlier one looks like damage in the middle of
the segment, and opening refuses with ``CorruptionError`` instead of
returning the prefix. Directory changes get no such favour: besides "all"
and "none" and an in-order prefix, random subsets and "only the newest
change" are checked. Different files and directories are independent.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf import _index_file
from logshelf._lazy_index import LazyIndex

from ._helpers import read_all
from ._powerloss import (
    DIR_MODES,
    CrashState,
    PowerLoss,
    SimulatedDisk,
    build_image,
    image_digest,
    write_image,
)

SEGMENT = 4096  # max_segment_size: small, so that the workload rolls over often
STORE = "store.db"  # the store's name under the simulated disk's root
KEYS = [f"k{i:02d}" for i in range(14)]
MARKER_KEY = "written-after-the-crash"
_ABSENT = object()

# Image variants checked at every crash point: the extremes (file data synced
# only / all of it, directory changes synced only / all of them / only the
# newest one) find ordering mistakes deterministically; the random ones tear
# appends and keep random sets of directory changes.
EXTREMES = (
    ("none", "drop"),
    ("all", "keep"),
    ("all", "drop"),
    ("none", "keep"),
    ("all", "last"),
)
TORN_FILE_MODES = ("prefix", "zeros", "garbage")


# ----------------------------------------------------------------------------
# the workload


@dataclass(frozen=True)
class Action:
    """One step of the workload.

    ``kind`` is a batch ("put", "update", "tx", "del", "delete_many",
    "clear"), "sync", "reopen" (close, then open again) or "compact".
    """

    kind: str
    puts: dict[str, Any] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()

    @property
    def is_batch(self) -> bool:
        return self.kind not in ("sync", "reopen", "compact")


def _value(rng: random.Random, batch: int, key: str) -> tuple[int, str, bytes]:
    """A value unique to (batch, key), so that a stale or foreign value is
    recognised. Mostly small; some fill a good part of a segment, a few are
    larger than a whole segment (a batch written into a fresh one)."""
    roll = rng.random()
    if roll < 0.70:
        size = rng.randint(0, 150)
    elif roll < 0.95:
        size = rng.randint(300, 1200)
    else:
        size = rng.randint(2500, 5000)
    blob = rng.randbytes(size) if rng.random() < 0.7 else bytes([batch % 256]) * size
    return (batch, key, blob)


def make_workload(seed: int, batches: int) -> tuple[list[Action], list[dict[str, Any]]]:
    """A random workload of ``batches`` batches mixed with syncs, reopens and
    compactions.

    Returns the actions and ``states``: ``states[k]`` is the store's content
    after the first ``k`` batches (``states[0]`` is empty).
    """
    rng = random.Random(seed)
    model: dict[str, Any] = {}
    states: list[dict[str, Any]] = [{}]
    actions: list[Action] = []
    while len(states) <= batches:
        number = len(states)
        present = sorted(model)
        absent = [k for k in KEYS if k not in model]
        roll = rng.random() if actions else 0.0  # start with a put: store creation
        if roll >= 0.89:  # not batches: they change no content
            kind = "compact" if roll < 0.92 else "sync" if roll < 0.96 else "reopen"
            actions.append(Action(kind))
            continue
        if roll < 0.30 or not present:
            key = rng.choice(KEYS)
            action = Action("put", {key: _value(rng, number, key)})
        elif roll < 0.50:
            keys = rng.sample(KEYS, rng.randint(2, 4))
            action = Action("update", {k: _value(rng, number, k) for k in keys})
        elif roll < 0.65:
            deletes = tuple(rng.sample(present, min(len(present), rng.randint(0, 2))))
            keys = rng.sample([k for k in KEYS if k not in deletes], rng.randint(1, 3))
            action = Action("tx", {k: _value(rng, number, k) for k in keys}, deletes)
        elif roll < 0.77:
            action = Action("del", deletes=(rng.choice(present),))
        elif roll < 0.87 or not absent:
            chosen = rng.sample(present, min(len(present), rng.randint(1, 2)))
            action = Action("delete_many", deletes=(*chosen, *absent[:1]))
        else:
            action = Action("clear", deletes=tuple(present))
        actions.append(action)
        for key in action.deletes:
            model.pop(key, None)
        model.update(action.puts)
        states.append(dict(model))
    return actions, states


def _apply(db: logshelf.Shelf, action: Action) -> None:
    """Perform one batch through the public API."""
    if action.kind == "put":
        ((key, value),) = action.puts.items()
        db[key] = value
    elif action.kind == "update":
        db.update(action.puts)
    elif action.kind == "tx":
        with db.transaction():
            for key, value in action.puts.items():
                db[key] = value
            for key in action.deletes:
                del db[key]
    elif action.kind == "del":
        del db[action.deletes[0]]
    elif action.kind == "delete_many":
        db.delete_many(action.deletes)
    else:
        assert action.kind == "clear"
        db.clear()


@dataclass
class Progress:
    """How far the workload got, in batches."""

    started: int = 0  # batches begun (the one in flight counts)
    acked: int = 0  # batches whose call returned
    synced: int = 0  # batches acknowledged before the last sync() or close() returned
    compactions: int = 0  # explicit compactions that committed a new segment set


def run_workload(
    store: Path, actions: list[Action], disk: SimulatedDisk, durability: str, progress: Progress
) -> None:
    """Run ``actions`` on a store on ``disk``, counting in ``progress``.

    A :class:`PowerLoss` stops the workload: it is caught here after the
    handle's descriptors are released (closing syncs, so it raises again).
    """

    def reopen(flag: str) -> logshelf.Shelf:
        return logshelf.open(
            store, flag, durability=durability, sync_interval=0, max_segment_size=SEGMENT, _fs=disk
        )

    db: logshelf.Shelf | None = None
    reopens = 0
    try:
        db = reopen("c")
        for action in actions:
            if action.kind == "sync":
                db.sync()
                progress.synced = progress.acked
            elif action.kind == "compact":
                if db.compact().compacted:
                    progress.compactions += 1
            elif action.kind == "reopen":
                db.close()
                progress.synced = progress.acked
                reopens += 1
                db = None
                db = reopen("w" if reopens % 2 else "c")
            else:
                progress.started += 1
                _apply(db, action)
                progress.acked += 1
        db.close()
        progress.synced = progress.acked
    except PowerLoss:
        if db is not None:
            try:
                db.close()
            except PowerLoss:
                pass  # the descriptors are closed all the same


def lowest_batch(durability: str, progress: Progress) -> int:
    """The fewest batches a store may hold after a power loss now."""
    if durability in ("always", "interval"):  # "interval" runs with sync_interval=0 here
        return progress.acked
    return progress.synced


# ----------------------------------------------------------------------------
# recording crash points


@dataclass(frozen=True)
class CrashPoint:
    """A moment at which the power may go, with what must survive it."""

    number: int  # state-changing operations completed before the crash
    operation: str  # the operation the crash prevented
    state: CrashState
    lowest: int  # the image must hold at least this many batches...
    highest: int  # ...and at most this many


def _recorder(
    disk: SimulatedDisk,
    points: list[CrashPoint],
    durability: str,
    progress: Progress,
    check_model: bool,
) -> Callable[[int, str], None]:
    """An ``on_operation`` hook that appends a :class:`CrashPoint` per operation."""

    def before(number: int, description: str) -> None:
        if check_model and number % 8 == 0:
            # Nothing may change the files behind the layer's back (checked
            # every few operations: it reads every file).
            assert disk.differences_from_real_files() == [], (number, description)
        problem = mark_overstates(disk)
        assert problem is None, f"before operation {number} ({description}): {problem}"
        points.append(
            CrashPoint(
                number - 1,
                description,
                disk.snapshot(),
                lowest_batch(durability, progress),
                progress.started,
            )
        )

    return before


def mark_overstates(disk: SimulatedDisk) -> str | None:
    """What is wrong with the synced mark now, if anything: every intact
    version of ``SYNCED`` a power loss could leave (the synced one, and each
    pending rewrite) must name only bytes of its segment that are synced and
    equal to what the store holds (a lower bound, docs/format.md section 6.2)."""
    store = disk_path(disk)
    try:
        _, versions = disk.file_versions(str(store / fmt.SYNCED_NAME))
    except FileNotFoundError:
        return None
    for version in versions:
        mark = fmt.decode_synced(version)
        if mark is None:
            continue
        segment_id, salt, end = mark
        path = str(store / fmt.segment_name(segment_id))
        try:
            current, _ = disk.file_versions(path)
        except FileNotFoundError:
            continue  # deleted by a compaction or a reset: the mark names nothing
        if current[12:16] != salt.to_bytes(4, "little"):
            continue  # a file of that id being created again (a rollover finished again)
        durable = disk.durable_contents(path)
        if len(durable) < end or durable[:end] != current[:end]:
            return f"the mark {mark} names bytes of {path} that are not synced"
    return None


def _final_point(disk: SimulatedDisk, progress: Progress) -> CrashPoint:
    """The crash point after everything: all of it must be there."""
    return CrashPoint(
        disk.operations, "(after the last one)", disk.snapshot(), progress.acked, progress.acked
    )


@dataclass(frozen=True)
class Recording:
    """The crash points of one run of a workload, and what the run did."""

    points: list[CrashPoint]
    operations: list[str]  # descriptions of the state-changing file operations
    compactions: int  # explicit compactions that committed

    @property
    def segments_deleted(self) -> int:
        """Segment files unlinked: inputs of compactions, explicit or automatic."""
        return sum(op.startswith("unlink") and op.endswith(".log") for op in self.operations)


def record(root: Path, actions: list[Action], durability: str) -> Recording:
    """Run the workload once on a fresh simulated disk at ``root``, freezing the
    model before every state-changing operation and once at the end."""
    root.mkdir()
    progress = Progress()
    points: list[CrashPoint] = []
    disk = SimulatedDisk(root)
    disk.on_operation = _recorder(disk, points, durability, progress, check_model=True)
    run_workload(disk_path(disk), actions, disk, durability, progress)
    assert progress.acked == sum(a.is_batch for a in actions), "the workload did not finish"
    points.append(_final_point(disk, progress))
    assert disk.differences_from_real_files() == []
    return Recording(points, disk.log, progress.compactions)


def disk_path(disk: SimulatedDisk) -> Path:
    return Path(disk.root) / STORE


# ----------------------------------------------------------------------------
# checking images


@dataclass
class Checker:
    """Opens crash images and checks them against the workload's states.

    The outcome of an image depends only on its bytes, so each distinct image
    is opened once; what each crash point requires of it is checked every time.

    With ``crash_recovery``, the first open of each image (recovery, a write,
    close) is itself recorded, and a power loss at each of its operations is
    checked in turn: the store must still hold what the first open found,
    plus at most that one write.
    """

    workdir: Path
    states: list[dict[str, Any]]
    durability: str
    crash_recovery: bool = False
    recovery_variants: int = 1  # random images per crash point of a recovery
    # digest -> the batch counts k whose state the image holds
    seen: dict[str, list[int]] = field(default_factory=dict)
    opened: int = 0
    checked: int = 0
    recovery_points: int = 0  # crash points of first opens that did recovery work
    recovery_images: int = 0
    recoveries: int = 0  # first opens that did recovery work
    tails_cut: int = 0  # first opens that cut a torn tail
    rollovers_finished: int = 0  # first opens that created a segment (finishing a rollover)
    # With an INDEX file (index_file_for_small_stores): every key of the
    # workload is first read alone, through the table's probes, and must
    # read as the full index then reads it.
    probe_first: bool = False
    lazy_opens: int = 0  # first opens of an image from its INDEX file
    lazy_reads: int = 0  # of them, by a reader before any writer

    def check(self, point: CrashPoint, file_mode: str, dir_mode: str, seed: int) -> None:
        image = build_image(point.state, file_mode, dir_mode, random.Random(seed))
        digest = image_digest(image)
        where = (
            f"power lost before operation {point.number + 1} ({point.operation}), "
            f"files {file_mode!r}, directories {dir_mode!r}, seed {seed}, "
            f"durability {self.durability!r}"
        )
        self.checked += 1
        matches = self.seen.get(digest)
        if matches is None:
            matches = self.seen[digest] = self._open_image(image, where)
        allowed = range(point.lowest, point.highest + 1)
        assert any(k in allowed for k in matches), (
            f"{where}: the store holds the state after batch(es) {matches}; "
            f"allowed: {point.lowest}..{point.highest}"
        )

    def _open_image(self, image: dict[str, bytes | None], where: str) -> list[int]:
        """Materialise an image, open it writable, return the batch counts it matches."""
        self.opened += 1
        root = self.workdir / f"image{self.opened}"
        write_image(image, root)
        store = root / STORE
        # Checks run on a SimulatedDisk as well: it skips the real fsyncs, and
        # a recovery that loops fails at once. (A clean open, a write and a
        # close take a few dozen operations.)
        disk = SimulatedDisk(root, max_operations=500)
        recovery: list[CrashPoint] = []
        progress = Progress()  # of the one batch written after recovery
        if self.crash_recovery:
            disk.on_operation = _recorder(
                disk, recovery, self.durability, progress, check_model=False
            )
        try:
            seen_by_reader = self._read_only(store, disk) if self.probe_first else None
            with self._open(store, "c", disk) as db:
                probed = self._probe_each_key(db) if self.probe_first else None
                content = read_all(db)
                if probed is not None:
                    assert probed == content, f"probes read {probed}, the full index {content}"
                    assert seen_by_reader in (None, content), f"a reader read {seen_by_reader}"
                matches = [k for k, state in enumerate(self.states) if state == content]
                assert matches, f"the store holds no prefix of the batches: {content}"
                assert db.verify() == []
                # Operations so far were recovery work (cutting a torn tail,
                # finishing a rollover, deleting leftovers). Without any, a
                # second crash here is one during an ordinary write: no news.
                recovered = disk.operations > 0
                self._count_recovery_work(disk.log)
                progress.started = 1
                db[MARKER_KEY] = "after"
                progress.acked = 1
            progress.synced = 1
            recovery.append(_final_point(disk, progress))
            disk.on_operation = None
            with self._open(store, "w", disk) as db:
                expected = {**content, MARKER_KEY: "after"}
                if self.probe_first:
                    assert self._probe_each_key(db, count=False) == expected, "probes differ"
                assert read_all(db) == expected, "a write after recovery was lost"
                assert db.verify() == []
        except Exception as exc:
            raise AssertionError(f"{where}: {exc!r}") from exc
        shutil.rmtree(root)
        if self.crash_recovery and recovered:
            self._check_recovery(root, recovery, content, where)
        return matches

    def _read_only(self, store: Path, disk: SimulatedDisk) -> dict[str, Any] | None:
        """What a reader that opens the image before any writer reads, key by
        key and then whole (None where a reader cannot open it)."""
        try:
            db = self._open(store, "r", disk)
        except logshelf.StoreNotFoundError:  # power lost before it was created
            return None
        with db:
            if isinstance(db._engine._view.index, LazyIndex):
                self.lazy_reads += 1
            probed = self._probe_each_key(db, count=False)
            content = read_all(db)
            assert probed == content, f"a reader's probes read {probed}, its full index {content}"
        return content

    def _probe_each_key(self, db: logshelf.Shelf, count: bool = True) -> dict[str, Any]:
        """Every key any state holds, read one at a time (``get``): from a
        handle opened from the INDEX file, each is probed in the table."""
        if count and isinstance(db._engine._view.index, LazyIndex):
            self.lazy_opens += 1
        probed = {}
        for key in sorted({MARKER_KEY}.union(*self.states)):
            value = db.get(key, _ABSENT)
            if value is not _ABSENT:
                probed[key] = value
        return probed

    def _count_recovery_work(self, operations: list[str]) -> None:
        """Note what a first open did (so tests can tell what they covered)."""
        if any(op.startswith("truncate") for op in operations):
            self.tails_cut += 1
        # (Not the first segment of a new store: that is made in a temporary
        # directory.) The successor usually exists already, so Segment.create
        # truncates it; this used to match only the hint the rollover then
        # wrote, which now waits for the writer lock's release.
        if any(op.startswith(f"open {STORE}/seg-") and ".log (" in op for op in operations):
            self.rollovers_finished += 1

    def _check_recovery(
        self, root: Path, points: list[CrashPoint], content: dict[str, Any], where: str
    ) -> None:
        """A second power loss, during the first open after the first one."""
        workdir = root.with_name(root.name + "-recovery")
        workdir.mkdir()
        inner = Checker(
            workdir,
            [content, {**content, MARKER_KEY: "after"}],
            self.durability,
            probe_first=self.probe_first,
        )
        try:
            check_points(inner, points, self.recovery_variants, seed=self.opened)
        except AssertionError as exc:
            raise AssertionError(f"{where}, then again while recovering: {exc}") from exc
        shutil.rmtree(workdir)
        self.recoveries += 1
        self.recovery_points += len(points)
        self.recovery_images += inner.opened

    def _open(self, store: Path, flag: str, disk: SimulatedDisk) -> logshelf.Shelf:
        return logshelf.open(
            store,
            flag,
            durability=self.durability,
            sync_interval=0,
            max_segment_size=SEGMENT,
            _fs=disk,
        )


def check_points(
    checker: Checker, points: list[CrashPoint], random_variants: int, seed: int
) -> None:
    """Check every crash point: the extreme images, plus ``random_variants``
    torn ones (each file torn on its own, random directory mode)."""
    rng = random.Random(seed)
    for point in points:
        if not point.state.unsynced:
            checker.check(point, "none", "drop", 0)
            continue
        for file_mode, dir_mode in EXTREMES:
            checker.check(point, file_mode, dir_mode, 0)
        for _ in range(random_variants):
            checker.check(
                point, rng.choice(TORN_FILE_MODES), rng.choice(DIR_MODES), rng.getrandbits(32)
            )


def sweep(
    tmp_path: Path,
    seed: int,
    batches: int,
    durability: str,
    random_variants: int,
    crash_recovery: bool = False,
    probe_first: bool = False,
) -> tuple[Recording, Checker]:
    """Record one workload and check all its crash points (the extreme images
    and ``random_variants`` random ones each, as many for a crash during
    recovery); return the recording and the checker (for their counters)."""
    actions, states = make_workload(seed, batches)
    recording = record(tmp_path / f"live-{durability}-{seed}", actions, durability)
    checker = Checker(
        tmp_path, states, durability, crash_recovery, random_variants, probe_first=probe_first
    )
    check_points(checker, recording.points, random_variants, seed)
    return recording, checker


# ----------------------------------------------------------------------------
# the tests


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for the thousands of short-lived files a sweep creates and
    deletes: in memory (``/dev/shm``) where the machine has it, because none of
    them needs to reach the disk and a disk busy with another job's fsyncs
    made the default run four times slower; otherwise ``tmp_path``. (A failure
    message names the crash point, modes and seed: enough to rebuild an image.)
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="logshelf-power-loss-", dir=shm) as directory:
        yield Path(directory)


@pytest.mark.parametrize(
    ("durability", "seed"), [("always", 1), ("none", 2), ("always", 3), ("none", 4)]
)
def test_power_loss_at_every_operation(scratch: Path, durability: str, seed: int) -> None:
    """Every crash point of a workload of 45 batches with rollovers,
    compactions, syncs and reopens: the reopened store is a prefix of the
    batches that includes every write made durable (per ``durability``),
    verifies clean and stays writable."""
    recording, checker = sweep(scratch, seed, 45, durability, random_variants=2)
    # The workload really covers what it claims to.
    assert len(recording.points) > 300
    assert recording.segments_deleted > 5  # compactions committed
    assert checker.opened > len(recording.points) // 2  # most points give new images


@pytest.mark.parametrize("durability", ["always", "none"])
def test_power_loss_while_recovering_from_a_power_loss(scratch: Path, durability: str) -> None:
    """A second power loss at any operation of the first open after the first
    one (cutting a torn tail, finishing a rollover or deleting what an
    interrupted compaction left, the first write, close): the store still
    holds what that open found, plus at most its write, and passes every
    check of a first crash."""
    # Seed 23: rollovers, a compaction and a reopen within 8 batches.
    recording, checker = sweep(scratch, 23, 8, durability, random_variants=1, crash_recovery=True)
    assert recording.compactions > 0
    assert checker.recoveries > checker.opened // 4  # many images needed recovery work
    assert checker.tails_cut > 5
    assert checker.rollovers_finished > 0
    assert checker.recovery_points > 5 * checker.recoveries


@pytest.fixture
def index_file_for_small_stores(monkeypatch: pytest.MonkeyPatch, request: Any) -> None:
    """The workload's stores get an INDEX file, as stores of MIN_KEYS keys
    do, at every close of a handle with its full index; with ``"every
    close"``, also at the close of a handle still opened from the file
    (TAIL_LIMIT 0), else such a handle leaves the file and the next open
    scans the tail after it."""
    monkeypatch.setattr(_index_file, "MIN_KEYS", 1)
    if request.param == "every close":
        monkeypatch.setattr(_index_file, "TAIL_LIMIT", 0)


@pytest.mark.parametrize(
    ("durability", "seed", "index_file_for_small_stores"),
    [("always", 1, "every close"), ("none", 2, "tail kept")],
    indirect=["index_file_for_small_stores"],
)
def test_power_loss_with_an_index_file(
    scratch: Path, durability: str, seed: int, index_file_for_small_stores: None
) -> None:
    """The same checks where closes write the INDEX file and opens use it
    (docs/format.md §5.1): every image opens from the file when it describes
    the image's MANIFEST, and else as before; a reader that opens it before
    any writer and the writer after it read the same; every key read alone
    (a probe of the table) reads as the full index reads it, and that is a
    prefix of the batches including every durable one."""
    recording, checker = sweep(scratch, seed, 45, durability, random_variants=2, probe_first=True)
    assert sum(op.endswith(f"-> {STORE}/{fmt.TABLE_NAME}") for op in recording.operations) > 2
    # Most images were written after a rollover the file does not describe
    # (segments of 4 KiB): 80 to 170 of about 900 open from it.
    assert checker.lazy_opens > 50
    assert checker.lazy_reads > 50


@pytest.mark.slow
@pytest.mark.timeout(150)  # about 20 s on the 2-core machine
@pytest.mark.parametrize("index_file_for_small_stores", ["every close"], indirect=True)
def test_power_loss_while_recovering_with_an_index_file(
    scratch: Path, index_file_for_small_stores: None
) -> None:
    """Second power losses during a first open from the INDEX file."""
    _, checker = sweep(
        scratch, 23, 8, "none", random_variants=1, crash_recovery=True, probe_first=True
    )
    assert checker.recoveries > 0
    assert checker.lazy_opens > 10


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["always", "none", "interval"])
@pytest.mark.parametrize("seed", [11])
def test_power_loss_sweep(scratch: Path, durability: str, seed: int) -> None:
    """The same on longer workloads (120 batches), more seeds, more torn
    variants per crash point, and ``durability="interval"`` (with
    ``sync_interval=0``: every write synced)."""
    recording, _ = sweep(scratch, seed, 120, durability, random_variants=6)
    assert len(recording.points) > 600


@pytest.mark.slow
@pytest.mark.timeout(200)  # 30 to 50 s on the 2-core machine since the synced mark
@pytest.mark.parametrize("durability", ["always"])
def test_power_loss_while_recovering_sweep(scratch: Path, durability: str) -> None:
    """Second power losses during recovery, on a longer workload."""
    _, checker = sweep(scratch, 20, 40, durability, random_variants=1, crash_recovery=True)
    assert checker.recoveries > checker.opened // 4


def _extreme_images(state: CrashState) -> list[str]:
    """Digests of the extreme images of a crash state."""
    return [
        image_digest(build_image(state, file_mode, dir_mode, random.Random(0)))
        for file_mode, dir_mode in EXTREMES
    ]


def _snapshot_at(
    disk: SimulatedDisk, wanted: int, into: list[CrashState]
) -> Callable[[int, str], None]:
    """An ``on_operation`` hook that snapshots the model before operation ``wanted``."""

    def before(number: int, description: str) -> None:
        if number == wanted:
            into.append(disk.snapshot())

    return before


@pytest.mark.parametrize("durability", ["always", "none"])
def test_raising_at_each_operation_matches_the_snapshots(scratch: Path, durability: str) -> None:
    """Really stop the workload at operation N (``PowerLoss`` raised from the
    layer, for every N): nothing the engine does while the exception unwinds
    reaches the disk, so the frozen model is the snapshot the recording took
    at N, and the images built from it pass the same checks."""
    actions, states = make_workload(7, 25)
    checker = Checker(scratch, states, durability)
    # Bounded: the workload makes a few hundred file operations.
    for n in range(1, 5000):
        root = scratch / f"run{n}"
        root.mkdir()
        disk = SimulatedDisk(root, crash_at=n)
        # The model as the layer saw it just before operation N (taken by the
        # layer itself, so the exception that follows cannot alter it).
        before_crash: list[CrashState] = []
        disk.on_operation = _snapshot_at(disk, n, before_crash)
        progress = Progress()
        run_workload(disk_path(disk), actions, disk, durability, progress)
        if not disk.crashed:
            assert progress.acked == len(states) - 1
            break
        # Different random names and salts from run to run: compare within the run.
        frozen = disk.snapshot()
        assert _extreme_images(frozen) == _extreme_images(before_crash[0]), n
        point = CrashPoint(
            n - 1, disk.log[-1], frozen, lowest_batch(durability, progress), progress.started
        )
        check_points(checker, [point], random_variants=1, seed=n)
        shutil.rmtree(root)
    else:
        raise AssertionError("the workload never got through 5000 crash points")
    assert n > 100  # every operation of the workload was a crash point once


def test_sync_is_a_barrier_in_mode_none(tmp_path: Path) -> None:
    """With durability "none", a power loss right after ``sync()`` returns keeps
    everything written before it; without the sync, the synced-only image
    keeps nothing of the unsynced writes (so the barrier is what kept them)."""
    disk = SimulatedDisk(tmp_path)
    with logshelf.open(tmp_path / STORE, max_segment_size=SEGMENT, _fs=disk) as db:
        db["a"] = 1
        db.update({"b": 2, "c": 3})
        before_sync = disk.snapshot()
        db.sync()
        after_sync = disk.snapshot()
        db["d"] = 4  # not synced: may be lost

    def durable_content(state: CrashState, name: str) -> dict[str, Any]:
        root = tmp_path / name
        write_image(build_image(state, "none", "drop", random.Random(0)), root)
        with logshelf.open(root / STORE, "w", max_segment_size=SEGMENT) as db:
            return read_all(db)

    assert durable_content(before_sync, "before") == {}
    assert durable_content(after_sync, "after") == {"a": 1, "b": 2, "c": 3}


def _first_segment(disk: SimulatedDisk, state: CrashState) -> tuple[bytes, bytes]:
    """(synced, current) contents of segment 1 in a snapshot of ``disk``."""
    durable, _, current = state.files[disk.inode_at(str(disk_path(disk) / fmt.segment_name(1)))]
    return durable, current


PAGE = 4096


def _reordered_image(tmp_path: Path, disk: SimulatedDisk, state: CrashState) -> Path:
    """The image where segment 1's unsynced bytes reached the disk except those
    in its first page: page cache writeback wrote the later page(s) first, and
    the power went before it came back for the earlier one."""
    durable, current = _first_segment(disk, state)
    assert len(durable) < PAGE < len(current)
    torn = durable + bytes(PAGE - len(durable)) + current[PAGE:]
    image = build_image(state, "all", "keep", random.Random(0))
    image[f"{STORE}/{fmt.segment_name(1)}"] = torn
    root = tmp_path / "reordered"
    write_image(image, root)
    return root / STORE


def test_reordered_writeback_of_unsynced_batches_keeps_a_prefix(tmp_path: Path) -> None:
    """durability "none": batches A and B are unsynced; the page holding the end
    of A and all of B reaches the disk, the page holding the start of A does
    not. A valid record follows an invalid one, but after the synced mark: the
    store opens with the consistent prefix (neither A nor B), the writer cuts
    the rest and says so in ``stats()``."""
    (tmp_path / "live").mkdir()
    disk = SimulatedDisk(tmp_path / "live")
    with logshelf.open(disk_path(disk), max_segment_size=1 << 20, _fs=disk) as db:
        db["base"] = 0
        db.sync()
        db["a"] = b"A" * 6000  # batch A: from page 0 into page 1
        db["b"] = b"B" * 300  # batch B: in page 1
        state = disk.snapshot()
    store = _reordered_image(tmp_path, disk, state)
    with logshelf.open(store, "r") as reader:
        assert read_all(reader) == {"base": 0}
        assert reader.stats()["unsynced_tail_bytes"] > 6000
    size = (store / fmt.segment_name(1)).stat().st_size
    assert len(_first_segment(disk, state)[1]) == size, "a reader changed nothing"
    with logshelf.open(store, "w") as reopened:
        assert read_all(reopened) == {"base": 0}
        assert reopened.stats()["unsynced_tail_bytes"] > 6000
        reopened["after"] = 1
    with logshelf.open(store, "r") as again:
        assert read_all(again) == {"base": 0, "after": 1}
        assert again.verify() == []
        assert again.stats()["unsynced_tail_bytes"] == 0


def _in_flight_batch_reordered(tmp_path: Path) -> Path:
    """durability "always": every acknowledged write is synced; the power goes
    while the batch {x, y} is written (before its fdatasync returns): its page 1
    (the end of x, all of y) reaches the disk, its page 0 (the start of x) does
    not. Returns the store of that image."""
    (tmp_path / "live").mkdir()
    disk = SimulatedDisk(tmp_path / "live")
    during: list[tuple[str, CrashState]] = []
    with logshelf.open(
        disk_path(disk), durability="always", max_segment_size=1 << 20, _fs=disk
    ) as db:
        db["base"] = 0
        disk.on_operation = lambda number, what: during.append((what, disk.snapshot()))
        db.update({"x": b"X" * 6000, "y": b"Y" * 300})  # append, then datasync
        disk.on_operation = None
    # The moment just before the batch's fdatasync: all of it written, none synced.
    (state,) = (snapshot for what, snapshot in during if what == "datasync")
    return _reordered_image(tmp_path, disk, state)


def test_reordered_writeback_of_the_batch_in_flight_keeps_acknowledged_writes(
    tmp_path: Path,
) -> None:
    """The image of ``_in_flight_batch_reordered``: nothing acknowledged is
    missing, and the half-written batch {x, y} is dropped whole (``y`` is
    intact, ``x`` is not)."""
    store = _in_flight_batch_reordered(tmp_path)
    with logshelf.open(store, "r") as reader:
        assert read_all(reader) == {"base": 0}
    with logshelf.open(store, "w") as reopened:
        assert read_all(reopened) == {"base": 0}
        assert reopened.verify() == []


def test_salvage_after_reordered_writeback_copies_no_half_batch(tmp_path: Path) -> None:
    """Such an image opens now; ``logshelf.salvage()`` of it (the way out
    before the synced mark) must still not make half of the unacknowledged
    batch {x, y} visible (it used to copy ``y`` without ``x``)."""
    store = _in_flight_batch_reordered(tmp_path)
    logshelf.salvage(store, tmp_path / "salvaged.db")
    with logshelf.open(tmp_path / "salvaged.db", "r") as db:
        content = read_all(db)
    assert sorted(content) in (["base"], ["base", "x", "y"]), sorted(content)


# ----------------------------------------------------------------------------
# writeback in no order within a file: the synced mark (issue 17)


@pytest.mark.parametrize(("durability", "seed"), [("always", 1), ("none", 2)])
def test_power_loss_with_writeback_in_no_order(
    scratch: Path, durability: str, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every crash point of a workload with rollovers, compactions, syncs and
    reopens, in images where each unsynced page of each file reached the disk
    or not, on its own (``"reorder"``), so later records survive earlier lost
    ones; also a power loss between any two steps of a rollover or a
    compaction. The store must open (never ``CorruptionError``), hold a
    prefix of the batches with everything synced, verify clean and stay
    writable: damage after the synced mark is cut as an unsynced tail. The
    recorder also checks, before every operation, that no version of the
    mark a power loss could leave claims more than is synced."""
    actions, states = make_workload(seed, 30)
    recording = record(scratch / f"live-{durability}-{seed}", actions, durability)
    assert recording.segments_deleted > 0  # compactions committed
    assert any(op.startswith("pwrite") for op in recording.operations)
    checker = Checker(scratch, states, durability)
    rng = random.Random(seed)
    for point in recording.points:
        for _ in range(3 if point.state.unsynced else 1):
            checker.check(point, "reorder", rng.choice(DIR_MODES), rng.getrandbits(32))
    assert checker.opened > len(recording.points) // 2
    cut = [r for r in caplog.records if "damage after the synced mark" in r.getMessage()]
    assert len(cut) > 10, "the images exercised the unsynced-tail cut"


def _synced_store(tmp_path: Path) -> tuple[SimulatedDisk, CrashState]:
    """durability "always": ten synced single puts and a ``sync()`` (which
    moves the mark to the end; the puts' own syncs move it at most every
    50 ms), frozen after it."""
    (tmp_path / "live").mkdir()
    disk = SimulatedDisk(tmp_path / "live")
    with logshelf.open(
        disk_path(disk), durability="always", max_segment_size=1 << 20, _fs=disk
    ) as db:
        for i in range(10):
            db[f"k{i}"] = bytes([i]) * 200
        db.sync()
        state = disk.snapshot()
    return disk, state


def _mark_variant(image: dict[str, bytes | None], how: str) -> None:
    """Make the image's synced mark intact (``"kept"``), torn, lost, or name the
    right segment with another salt (a leftover of an earlier file)."""
    name = f"{STORE}/{fmt.SYNCED_NAME}"
    data = image[name]
    assert isinstance(data, bytes) and fmt.decode_synced(data) is not None
    if how == "torn":
        image[name] = data[:16] + bytes(16)
    elif how == "lost":
        del image[name]
    elif how == "other salt":
        segment_id, salt, end = fmt.decode_synced(data)  # type: ignore[misc]
        image[name] = fmt.encode_synced(segment_id, salt ^ 1, end)


@pytest.mark.parametrize("how", ["kept", "torn", "lost", "other salt"])
def test_damage_inside_the_synced_prefix_is_refused(tmp_path: Path, how: str) -> None:
    """A record zeroed before the synced mark, valid records after it: real
    damage to synced bytes, not what a power loss leaves. Opening refuses,
    for readers and writers alike, and nothing is cut; without an intact
    mark for the segment likewise (as before the mark existed)."""
    _, state = _synced_store(tmp_path)
    image = build_image(state, "all", "keep", random.Random(0))
    segment = f"{STORE}/{fmt.segment_name(1)}"
    data = image[segment]
    assert isinstance(data, bytes)
    mark = fmt.decode_synced(image[f"{STORE}/{fmt.SYNCED_NAME}"] or b"")
    assert mark is not None and mark[2] == len(data), "the mark covers every synced put"
    image[segment] = data[:300] + bytes(40) + data[340:]  # inside the third record
    _mark_variant(image, how)
    write_image(image, tmp_path / "damaged")
    store = tmp_path / "damaged" / STORE
    for flag in ("r", "w"):
        with pytest.raises(logshelf.CorruptionError, match="followed by valid records"):
            logshelf.open(store, flag)
    assert (store / fmt.segment_name(1)).read_bytes() == image[segment]


@pytest.mark.parametrize("how", ["torn", "lost", "other salt"])
def test_reordered_writeback_without_an_intact_mark_is_refused(tmp_path: Path, how: str) -> None:
    """The reordered image of the in-flight batch, but the mark is torn, lost
    or names another file of that id: nothing tells unsynced from synced, so
    opening refuses as it did before the mark (never accepts the damage)."""
    store = _in_flight_batch_reordered(tmp_path)
    name = f"{STORE}/{fmt.SYNCED_NAME}"
    image: dict[str, bytes | None] = {name: (store / fmt.SYNCED_NAME).read_bytes()}
    _mark_variant(image, how)
    data = image.get(name)
    if data is None:
        (store / fmt.SYNCED_NAME).unlink()
    else:
        assert isinstance(data, bytes)
        (store / fmt.SYNCED_NAME).write_bytes(data)
    for flag in ("r", "w"):
        with pytest.raises(logshelf.CorruptionError, match="followed by valid records"):
            logshelf.open(store, flag)


def test_a_store_without_a_mark_file_opens_as_before(tmp_path: Path) -> None:
    """A store written before the mark existed (no SYNCED file) opens and
    works unchanged; its first writer's syncs start a mark."""
    store = tmp_path / "old.db"
    with logshelf.open(store, durability="always") as db:
        db["a"] = 1
    (store / fmt.SYNCED_NAME).unlink()
    with logshelf.open(store, "r") as db:
        assert read_all(db) == {"a": 1}
    assert not (store / fmt.SYNCED_NAME).exists(), "a reader wrote nothing"
    with logshelf.open(store, "w", durability="always") as db:
        db["b"] = 2
    mark = fmt.decode_synced((store / fmt.SYNCED_NAME).read_bytes())
    assert mark is not None and mark[2] == (store / fmt.segment_name(1)).stat().st_size
