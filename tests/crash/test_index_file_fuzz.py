"""Random damage to a store opened from its INDEX file (docs/format.md §5.1).

Damage to the INDEX file alone must never change what the store reads: the
file is ignored, or the probe notices its block and the handle loads the
index as before. Damage to the segments under an intact INDEX file may make
reads (or loading the full index) raise CorruptionError, or (damage at the
end of the active segment, read as a torn tail) show the store as it was
after an earlier batch, but never a value of no such state, nor a mix of
states.
(``_fuzz.py`` covers damage with hints and no INDEX file.)
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import logshelf
from logshelf import _format as fmt
from logshelf import _index_file

from ._helpers import restore, snapshot

NEVER = ("never-1", "k-1", "")


#: The files, then the state after every batch, the last first.
Template = tuple[dict[str, bytes], list[dict[str, Any]]]


def build(store: Path) -> Template:
    expected: dict[str, Any] = {}
    states = [{}]
    with logshelf.open(store, max_segment_size=4096, auto_compact=None) as db:
        for i in range(120):
            expected[f"k{i}"] = db[f"k{i}"] = {"n": i, "pad": "p" * (i % 7)}
            states.append(dict(expected))
        for i in range(0, 120, 4):
            expected[f"k{i}"] = db[f"k{i}"] = f"again {i}"
            states.append(dict(expected))
        for i in range(0, 120, 9):
            del db[f"k{i}"]
            del expected[f"k{i}"]
            states.append(dict(expected))
    with logshelf.open(store) as db:  # a second session: a tail after the INDEX file's end
        db.update({"late": 1, "k1": "late"})
        expected.update({"late": 1, "k1": "late"})
        states.append(dict(expected))
    files = snapshot(store)
    assert fmt.TABLE_NAME in files and sum(n.endswith(".log") for n in files) > 2
    return files, states[::-1]


@pytest.fixture(scope="module")
def small_stores_get_the_file() -> Iterator[None]:
    """These stores are small (fast cases); their writers' close writes the
    INDEX file as a large store's would (MIN_KEYS)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_index_file, "MIN_KEYS", 1)
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, small_stores_get_the_file: None) -> Template:
    return build(tmp_path_factory.mktemp("index-fuzz") / "store")


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.choice(("xor", "xor", "zero", "truncate", "duplicate", "extend"))
    at = rng.randrange(len(out))
    if how == "xor":
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif how == "zero":
        end = min(len(out), at + rng.randint(1, 64))
        out[at:end] = bytes(end - at)
    elif how == "truncate":
        del out[at:]
    elif how == "duplicate":
        end = min(len(out), at + rng.randint(1, 200))
        out[at:at] = out[at:end]
    else:
        out += rng.randbytes(rng.randint(1, 100))
    return bytes(out)


def read_all(db: logshelf.Shelf, states: list[dict[str, Any]], strict: bool) -> None:
    """Every key reads as in one of ``states`` (the first when ``strict``),
    or raises CorruptionError (never when ``strict``)."""
    candidates = list(states[:1] if strict else states)
    for key in sorted(set().union(*states)):
        try:
            got = db[key]
        except logshelf.CorruptionError:
            assert not strict, key
            continue
        except KeyError:
            got = KeyError
        candidates = [s for s in candidates if s.get(key, KeyError) == got]
        assert candidates, f"{key!r} read {got!r}"
    for key in NEVER:
        assert key not in db
    try:
        keys = sorted(db)
    except logshelf.CorruptionError:
        assert not strict
        return
    assert any(keys == sorted(state) for state in candidates)
    assert len(db) == len(keys)


def run_cases(template: Template, store: Path, cases: int, target: str) -> None:
    files, states = template
    rng = random.Random(f"index-fuzz-{target}")
    logs = sorted(n for n in files if n.endswith(".log"))
    for case in range(cases):
        damaged = dict(files)
        name = fmt.TABLE_NAME if target == "index" else rng.choice(logs)
        damaged[name] = mutate(files[name], rng)
        restore(store, damaged)
        strict = target == "index"
        try:
            db = logshelf.open(store, "r")
        except (logshelf.CorruptionError, logshelf.FormatError):  # FormatError: a segment header
            assert not strict, case
            continue
        with db:
            read_all(db, states, strict)
        if strict and case % 5 == 0:
            # A writer's close writes a sound file again.
            with logshelf.open(store) as db:
                read_all(db, states, strict)
            with logshelf.open(store, "r") as db:
                read_all(db, states, strict)
    shutil.rmtree(store)


@pytest.mark.parametrize("target", ["index", "segments"])
def test_random_damage_never_yields_a_wrong_value(
    template: Template, tmp_path: Path, target: str
) -> None:
    run_cases(template, tmp_path / "store", 60, target)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["index", "segments"])
def test_random_damage_sweep(template: Template, tmp_path: Path, target: str) -> None:
    run_cases(template, tmp_path / "store", 1500, target)
