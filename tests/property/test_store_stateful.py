"""Model-based test: random operations on a store agree with a dict at every step."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import logshelf

keys = st.text(min_size=0, max_size=8) | st.sampled_from(["a", "b", "ключ", "k" * 300])
values = (
    st.none()
    | st.integers()
    | st.text(max_size=50)
    | st.binary(max_size=600)
    | st.lists(st.integers(), max_size=5)
)


class StoreMachine(RuleBasedStateMachine):
    """A writer handle and a reader handle on one store, mirrored by a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.path = f"{self.dir}/s.db"
        self.options: dict[str, Any] = {
            "max_segment_size": 4096,
            "compression": "lz4",
            "compress_min": 64,
        }
        self.db = logshelf.open(self.path, **self.options)
        self.reader = logshelf.open(self.path, "r")
        self.model: dict[str, Any] = {}

    @rule(key=keys, value=values)
    def put(self, key: str, value: Any) -> None:
        self.db[key] = value
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key: str) -> None:
        if key in self.model:
            del self.db[key]
            del self.model[key]
        else:
            assert key not in self.db

    @rule(items=st.dictionaries(keys, values, max_size=5))
    def update(self, items: dict[str, Any]) -> None:
        self.db.update(items)
        self.model.update(items)

    @rule(
        puts=st.dictionaries(keys, values, max_size=4),
        deletes=st.lists(keys, max_size=3),
        fail=st.booleans(),
    )
    def transaction(self, puts: dict[str, Any], deletes: list[str], fail: bool) -> None:
        shadow = dict(self.model)
        try:
            with self.db.transaction():
                for key, value in puts.items():
                    self.db[key] = value
                    shadow[key] = value
                    assert self.db[key] == value  # read-your-writes
                for key in deletes:
                    if key in shadow:
                        del self.db[key]
                        del shadow[key]
                    assert key not in self.db
                assert len(self.db) == len(shadow)
                assert sorted(self.db) == sorted(shadow)
                if fail:
                    raise KeyboardInterrupt  # any exception aborts the whole batch
        except KeyboardInterrupt:
            return
        self.model = shadow

    @rule(key=keys)
    def get(self, key: str) -> None:
        assert self.db.get(key, "<absent>") == self.model.get(key, "<absent>")

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = logshelf.open(self.path, **self.options)

    @rule()
    def reopen_reader(self) -> None:
        self.reader.close()
        self.reader = logshelf.open(self.path, "r")

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.db.clear()
        self.model.clear()

    @invariant()
    def reader_agrees(self) -> None:
        assert len(self.reader) == len(self.model)
        assert dict(self.reader) == self.model

    @invariant()
    def writer_agrees(self) -> None:
        assert sorted(self.db) == sorted(self.model)

    def teardown(self) -> None:
        self.db.close()
        self.reader.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_dict_model = StoreMachine.TestCase
